"""benchmarks/accelerator.py: its inputs need no TensorFlow and no data files; slow: the whole tiny run on CPU (ours,
transformers on the exported weights, the planner) prints every figure and imports no TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator.py"
TINY = ["--preset", "tiny", "--prompts", "1", "--group", "2", "--new-tokens", "4", "--frames", "8",
        "--prompt-len", "64", "--steps", "1"]  # fmt: skip
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_backend_optimization_level=0"}

CHECK_INPUTS = """
import sys
sys.path.insert(0, {bench!r})
import accelerator
from tempr1_jax import configlib, plan
args = accelerator.parse_args({argv!r})
cfg = configlib.parse_flags(["x", *accelerator.config_args(args)]).config
b = plan.build(cfg)
prompts, shapes, pixels = accelerator.stand_in_prompts(cfg, b["mcfg"], b["mesh"], args.prompts)
assert prompts["input_ids"].shape == (1, 64) and shapes["video_grid_thw"] == [4, 2, 2], shapes
assert pixels.shape == (16, 1176) and prompts["vision"]["pixel_values"].shape[0] == 1
assert "tensorflow" not in sys.modules, "tensorflow was imported"
print("ok")
"""


def test_the_benchmark_inputs_need_no_tensorflow():
    code = CHECK_INPUTS.format(bench=str(SCRIPT.parent), argv=TINY)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--no-torch" in r.stdout


@pytest.mark.slow
def test_the_tiny_benchmark_runs_on_cpu(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--output", str(out)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    ours, hf, p = res["ours"], res["transformers"], res["plan"]
    assert ours["rollout_s"] > 0 and ours["update_s"] > 0 and ours["flops"]["train_step"] > 0
    assert hf["logp_max_abs_diff"] < 1e-3  # the same weights and the same inputs on both sides (float32)
    assert p["shapes"]["rows"] == 2 and p["peak_bytes"] > 0
    for line in ("ours: rollout", "transformers (cpu): generate", "ratio transformers / ours", "planner (XLA:CPU"):
        assert line in r.stdout
    assert not ours["tensorflow_imported"] and not hf["tensorflow_imported"]
