"""TempR1 on Qwen2.5-VL-3B-Instruct (the smaller variant): the recipe of configs/base.py on the five-task mixture.

    python -m tempr1_jax.train --config configs/tempr1_3b.py:/data/tempr1 \\
        --config.model.path=/ckpt/Qwen2.5-VL-3B-Instruct --workdir /runs/tempr1_3b

The text after ":" is the data root (default "data"): samples under <root>/samples/, frames under <root>/frames
(README: "A real run"). Every value comes from base.tempr1_config, commented there with its source.
"""

import importlib.util
import os


def _base():
    path = os.path.join(os.path.dirname(__file__), "base.py")
    spec = importlib.util.spec_from_file_location("tempr1_base_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def get_config(data_root: str | None = None):
    # [ours] Qwen2.5-VL-3B-Instruct (tied output head): ~60 GB of fp32 weights, AdamW and reference, one 80 GB GPU
    return _base().tempr1_config("3b", data_root or "data")
