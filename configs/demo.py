"""The offline CPU demo: multi-task GRPO on all five TempR1 tasks with a tiny Qwen2.5-VL-shaped model.

    python -m tempr1_jax.train --config configs/demo.py [--workdir DIR]
    python -m tempr1_jax.train --config configs/demo.py:tg   # one task only (or a comma-separated list)

Everything is made on first use, offline (docs/demo.md): short generated videos of the five-task world
(``data_pipeline.synthetic.make_multitask_dataset``: a marker steps through a 4 x 4 grid one cell per second, a
burned-in clock, its colour says what is on screen), their frames at 2 fps, the samples of every task and the
tiny tokenizer, cached under ~/.cache/tempr1_jax (``synthetic.dir`` to choose). A randomly initialized tiny
model gets a supervised warm-up on loose answers (``warmup.targets="loose"``: boundaries 1 s too wide and tal /
vhd instances missing, as imperfect annotations are), then GRPO with the recipe's objective (G completions per
prompt, k3 KL to the warmed-up reference) on each sample's own task reward, the tasks mixed in every batch.
Greedy evaluation on the held-out videos of every task runs before the first GRPO step, every ``eval.every``
steps and at the end; ``tempr1_jax.baselines.pixel_blind_bars`` gives each task's pixel-blind bar.
"""

import ml_collections

from data_pipeline import synthetic
from tempr1_jax import configlib


def get_config(tasks: str = "") -> ml_collections.ConfigDict:
    """tasks: "" for all five, or a comma-separated subset (e.g. "tg"): GRPO on those tasks only (the warm-up
    and the evaluation still use every task of the world)."""
    c = configlib.sibling_config(__file__).get_config()  # configs/base.py
    c.seed = 0

    # The five-task world (data_pipeline.synthetic.make_multitask_dataset), generated once into the cache.
    c.synthetic = ml_collections.ConfigDict()
    c.synthetic.enabled = True
    c.synthetic.world = "multitask"
    c.synthetic.dir = ""  # "": ~/.cache/tempr1_jax/multitask-<hash of the settings below>
    c.synthetic.tasks = synthetic.MULTITASK_TASKS
    c.synthetic.num_train = 400  # videos per task
    c.synthetic.num_val = 64  # held-out videos per task
    c.synthetic.min_seconds = 6
    c.synthetic.max_seconds = 9
    c.synthetic.size = 56  # frame side (px); the stream scales frames to 28x28 = one visual token per second
    c.synthetic.distractors = 0.0
    c.synthetic.margin = 1
    c.synthetic.seed = 0

    # A tiny Qwen2.5-VL: same architecture, small sizes; vocabulary and special ids from the tiny tokenizer.
    c.model.preset = "tiny"
    c.model.text = ml_collections.ConfigDict(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                                  num_attention_heads=4, num_key_value_heads=2))
    c.model.vision = ml_collections.ConfigDict(dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2))
    c.model.dtype = "float32"  # CPU: bf16 matmuls are emulated there, float32 is faster
    c.model.logprob_chunk = 40
    c.model.vision_multiples = (16, 4, 4)  # 6-9 visual tokens per video: little padding

    # The stream: 28x28 frames (one merged visual token per 2-frame, 1-second patch), short prompts.
    c.data.min_pixels = 28 * 28
    c.data.max_pixels = 28 * 28
    c.data.total_pixels = 28 * 28 * 64
    c.data.vision_buckets = (64,)
    c.data.prompt_buckets = (184,)
    c.data.max_segments = 4
    c.data.prefetch_batches = 2
    if tasks:
        chosen = [t.strip() for t in tasks.split(",") if t.strip()]
        unknown = sorted(set(chosen) - set(synthetic.MULTITASK_TASKS))
        if unknown:
            raise ValueError(f"configs/demo.py:{tasks}: unknown task(s) {unknown}; tasks: {synthetic.MULTITASK_TASKS}")
        c.data.task_weights = ml_collections.ConfigDict({t: 1.0 for t in chosen})

    c.train.prompts_per_step = 8
    c.train.total_steps = 250
    c.grpo.num_generations = 8  # G as in the recipe
    c.optimizer.learning_rate = 5e-4  # the recipe's 1e-6 is for a pretrained 7B model
    c.optimizer.decay = "constant"
    c.rollout.max_new_tokens = 30  # four tal instances + EOS is 29 tokens
    c.rollout.temperature = 1.0

    c.warmup.steps = 650
    c.warmup.batch_size = 16
    c.warmup.learning_rate = 3e-3
    c.warmup.decay = "cosine"
    c.warmup.targets = "loose"
    c.warmup.widen_prob = 0.9
    c.warmup.drop_prob = 0.3
    c.warmup.task_weights = ml_collections.ConfigDict({t: 2.0 if t == "tg" else 1.0 for t in synthetic.MULTITASK_TASKS})

    c.eval.every = 125
    c.eval.batch_size = 32
    c.eval.max_new_tokens = 30

    c.checkpoint.every = 125
    c.checkpoint.keep = 2
    c.logging.every = 5
    c.logging.samples_every = 25
    return c
