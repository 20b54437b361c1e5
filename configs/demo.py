"""The offline CPU demo: GRPO teaches a tiny Qwen2.5-VL-shaped model when a red square is on screen.

    python -m tempr1_jax.train --config configs/demo.py [--workdir DIR]

Everything is made on first use, offline: 288 short generated videos (6-9 s; a red square is visible during
one interval of whole seconds, and a burned-in clock in the left half counts the seconds), their frames at
2 fps (data_pipeline.extract_frames), tg samples in the SPEC format and the tiny tokenizer, cached under
~/.cache/tempr1_jax (``synthetic.dir`` to choose). A randomly initialized tiny model learns the answer format
in a short supervised warm-up, then GRPO with the recipe's objective (G completions per prompt, k3 KL to the
warmed-up reference) raises its localization reward. Greedy evaluation on 32 held-out videos runs before the
first GRPO step, every ``eval.every`` steps and at the end (README: "The demo").
"""

import importlib.util
import os

import ml_collections


def _base():
    path = os.path.join(os.path.dirname(__file__), "base.py")
    spec = importlib.util.spec_from_file_location("tempr1_base_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def get_config() -> ml_collections.ConfigDict:
    c = _base().get_config()
    c.seed = 0

    # The synthetic task (data_pipeline.synthetic.make_square_dataset), generated once into the cache.
    c.synthetic = ml_collections.ConfigDict()
    c.synthetic.enabled = True
    c.synthetic.dir = ""  # "": ~/.cache/tempr1_jax/square-<hash of the settings below>
    c.synthetic.num_train = 256
    c.synthetic.num_val = 32
    c.synthetic.min_seconds = 6
    c.synthetic.max_seconds = 9
    c.synthetic.size = 56  # frame side (px); the stream scales frames to 28x28 = one visual token per second
    c.synthetic.seed = 0

    # A tiny Qwen2.5-VL: same architecture, small sizes; vocabulary and special ids from the tiny tokenizer.
    c.model.preset = "tiny"
    c.model.text = ml_collections.ConfigDict(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                  num_attention_heads=4, num_key_value_heads=2))
    c.model.vision = ml_collections.ConfigDict(dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2))
    c.model.dtype = "float32"  # CPU: bf16 matmuls are emulated there, float32 is faster
    c.model.logprob_chunk = 32
    c.model.vision_multiples = (16, 4, 4)  # 6-9 visual tokens per video: little padding

    # The stream: 28x28 frames (one merged visual token per 2-frame, 1-second patch), short prompts.
    c.data.min_pixels = 28 * 28
    c.data.max_pixels = 28 * 28
    c.data.total_pixels = 28 * 28 * 64
    c.data.vision_buckets = (64,)
    c.data.prompt_buckets = (176,)
    c.data.max_segments = 4
    c.data.prefetch_batches = 2

    c.train.prompts_per_step = 8
    c.train.total_steps = 100
    c.grpo.num_generations = 8  # G as in the recipe
    c.optimizer.learning_rate = 1e-3  # the recipe's 1e-6 is for a pretrained 7B model
    c.optimizer.decay = "constant"
    c.rollout.max_new_tokens = 16  # "<answer>3 to 7</answer>" + EOS is 11 tokens
    c.rollout.temperature = 1.0

    c.warmup.steps = 30
    c.warmup.batch_size = 16
    c.warmup.learning_rate = 3e-3

    c.eval.every = 20
    c.eval.batch_size = 16
    c.eval.max_new_tokens = 16

    c.checkpoint.every = 20
    c.checkpoint.keep = 2
    c.logging.every = 5
    c.logging.samples_every = 20
    return c
