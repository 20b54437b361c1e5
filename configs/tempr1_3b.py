"""TempR1 on Qwen2.5-VL-3B-Instruct (the smaller variant): the recipe of configs/base.py on the five-task mixture.

    python -m tempr1_jax.train --config configs/tempr1_3b.py:/data/tempr1 \\
        --config.model.path=/ckpt/Qwen2.5-VL-3B-Instruct --workdir /runs/tempr1_3b

The text after ":" is the data root (default "data"): samples under <root>/samples/, frames under <root>/frames
(docs/real_run.md); "<root>,extra" also evaluates TVGBench and the general benchmarks (base.EXTRA_EVAL_SETS).
Every value comes from base.tempr1_config, commented there with its source.
"""

from tempr1_jax import configlib


def get_config(data_root: str | None = None):
    # [ours] Qwen2.5-VL-3B-Instruct (tied output head): ~75 GB of fp32 weights, gradients, AdamW and reference
    return configlib.sibling_config(__file__).tempr1_config("3b", data_root or "data")
