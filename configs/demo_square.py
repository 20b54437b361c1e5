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
    c = configlib.sibling_config(__file__, "demo.py").get_config()  # the five-task demo's model and stream
    c.synthetic = ml_collections.ConfigDict(dict(  # data_pipeline.synthetic.make_square_dataset
        enabled=True, world="square", dir="", num_train=1024,  # 256 videos get memorized; 1024 generalize
        num_val=32, min_seconds=6, max_seconds=9, size=56, seed=0))
    c.model.text.num_hidden_layers = 2
    c.model.logprob_chunk = 32
    c.data.prompt_buckets = (176,)
    c.train.total_steps = 150
    c.optimizer.learning_rate = 3e-4  # 1e-3: noisier held-out
    c.rollout.max_new_tokens = 16  # "<answer>3 to 7</answer>" + EOS is 11 tokens
    c.warmup.steps = 300  # the held-out IoU jumps above the pixel-blind bar after ~220 steps (loss 0.35 -> 0.26)
    c.warmup.decay = "constant"
    c.warmup.targets = "truth"  # "random": the format only (GRPO alone then finds the pixel-blind answer)
    c.warmup.widen_prob = 0.6
    c.warmup.task_weights = ml_collections.ConfigDict()
    c.eval.every = 25
    c.eval.batch_size = 16
    c.eval.max_new_tokens = 16
    c.checkpoint.every = 25
    return c
