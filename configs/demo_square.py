"""The single-task square demo: a tiny Qwen2.5-VL-shaped model learns when a red square is on screen, then GRPO.

    python -m tempr1_jax.train --config configs/demo_square.py [--workdir DIR]

The project's first demo, kept as a small, fast world for tests tuned on it (tests/test_dynamic_sampling.py);
``configs/demo.py`` is the five-task demo. Everything is made on first use, offline: short generated videos
(6-9 s; a marker steps through a 4 x 4 grid one cell per second, a burned-in clock, and is a red square during
one interval of whole seconds, white otherwise), their frames at 2 fps, tg samples (docs/formats.md) and the tiny
tokenizer, cached under ~/.cache/tempr1_jax (``synthetic.dir`` to choose). A randomly initialized tiny model gets
a supervised warm-up on the true answers, then GRPO on the localization reward.
``data_pipeline.synthetic.best_constant_iou`` of the held-out file is the bar a pixel-blind answer reaches.
What it measured when it was the demo: GRPO from a format-only warm-up settles on the best pixel-blind answer
within the CPU budget (held-out IoU 0.44 -> 0.49, the constant's 0.52); after the true-answer warm-up GRPO's
held-out gain was within noise (0.63 -> 0.64). docs/demo.md tells why the five-task demo is built differently.
"""

import ml_collections

from tempr1_jax import configlib


def get_config() -> ml_collections.ConfigDict:
    c = configlib.sibling_config(__file__).get_config()
    c.seed = 0

    # The synthetic task (data_pipeline.synthetic.make_square_dataset), generated once into the cache.
    c.synthetic = ml_collections.ConfigDict()
    c.synthetic.enabled = True
    c.synthetic.dir = ""  # "": ~/.cache/tempr1_jax/square-<hash of the settings below>
    c.synthetic.num_train = 1024  # 256 videos get memorized by supervised training; 1024 generalize
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
    c.train.total_steps = 150
    c.grpo.num_generations = 8  # G as in the recipe
    c.optimizer.learning_rate = 3e-4  # the recipe's 1e-6 is for a pretrained 7B model (1e-3: noisier held-out)
    c.optimizer.decay = "constant"
    c.rollout.max_new_tokens = 16  # "<answer>3 to 7</answer>" + EOS is 11 tokens
    c.rollout.temperature = 1.0

    c.warmup.steps = 300  # the held-out IoU jumps above the pixel-blind bar after ~220 steps (loss 0.35 -> 0.26)
    c.warmup.batch_size = 16
    c.warmup.learning_rate = 3e-3
    c.warmup.targets = "truth"  # "random": the format only (GRPO alone then finds the pixel-blind answer)

    c.eval.every = 25
    c.eval.batch_size = 16
    c.eval.max_new_tokens = 16

    c.checkpoint.every = 25
    c.checkpoint.keep = 2
    c.logging.every = 5
    c.logging.samples_every = 25
    return c
