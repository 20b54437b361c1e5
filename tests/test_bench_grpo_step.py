"""Smoke test of benchmarks/grpo_step.py: our side of the GRPO step benchmark runs end to end on a very small
setting, and the TRL side is skipped cleanly when TRL is absent (as in CI), so the script cannot rot.

It runs the script as ``__main__`` in a subprocess (its own XLA flags: optimization level 0, since only the
path is checked here and the train step's XLA compile dominates the run), with ``trl`` made unimportable.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "grpo_step.py"

RUN = """
import runpy, sys
sys.modules["trl"] = None  # `import trl` raises ImportError, whether TRL is installed or not
sys.argv = [{script!r}] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_script(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", RUN.format(script=str(SCRIPT)), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_our_side_runs_and_missing_trl_is_skipped():
    res = run_script("--prompts", "2", "--group", "2", "--max-new", "3", "--image", "56", "--rounds", "2",
                     "--warmup", "0", "--beta", "0.04")
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "TRL is not installed" in out
    assert "2 prompts x G=2 = 4 completions of 3 tokens" in out
    # every completion runs to --max-new tokens (no EOS), so both sides always generate the same count
    assert re.search(r"completion length 3\.0; tokens/step \d+; reward mean [-0-9.]+", out), out
    wall, cpu = {}, {}
    for phase in ("rollout", "reward", "update", "total"):
        m = re.search(rf"^{phase}\s+(\d+)ms\s+(\d+)ms$", out, re.M)
        assert m, f"no {phase} line in:\n{out}"
        wall[phase], cpu[phase] = int(m.group(1)), int(m.group(2))
    for t in (wall, cpu):  # medians of the phases add up to about the median step (ms rounding, round spread)
        assert t["update"] > 0 and abs(t["rollout"] + t["reward"] + t["update"] - t["total"]) <= 0.2 * t["total"] + 3
    assert "TRL/ours" not in out  # no ratio without a baseline


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--image", "50"], "--image 50 must be a multiple of 28"),
        (["--group", "1"], "--group must be >= 2"),
        (["--rounds", "0"], "--rounds must be >= 1"),
    ],
)
def test_bad_arguments_exit_with_a_reason(argv, message):
    res = subprocess.run([sys.executable, str(SCRIPT), *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and message in res.stderr
