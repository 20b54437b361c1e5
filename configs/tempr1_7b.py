"""TempR1 on Qwen2.5-VL-7B-Instruct (the paper's model): the recipe of configs/base.py on the five-task mixture.

    python -m tempr1_jax.train --config configs/tempr1_7b.py:/data/tempr1 \\
        --config.model.path=/ckpt/Qwen2.5-VL-7B-Instruct --workdir /runs/tempr1_7b

The text after ":" is the data root (default "data"): samples under <root>/samples/, frames under <root>/frames
(docs/real_run.md); "<root>,extra" also evaluates TVGBench and the general benchmarks (base.EXTRA_EVAL_SETS).
Every value comes from base.tempr1_config, commented there with its source.
"""

from tempr1_jax import configlib


def get_config(data_root: str | None = None):
    # [paper] Qwen2.5-VL-7B(-Instruct); fp32 master weights + AdamW are ~130 GB: shard them (mesh.fsdp = -1)
    return configlib.sibling_config(__file__).tempr1_config("7b", data_root or "data")
