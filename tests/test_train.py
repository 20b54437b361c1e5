"""The trainer through its real entry point, ``python -m tempr1_jax.train --config configs/demo.py``, on the demo's
synthetic task made small: runs, exact resume in a new process, flat compile count, a skipped NaN step,
SIGTERM, config errors, and ``python -m tempr1_jax.evaluate --config ... --checkpoint ...`` on the results.

Every run is a subprocess sharing one persistent XLA compilation cache, so only the first run compiles.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.py")


def small(data_dir: Path, **extra: object) -> list[str]:
    """The demo config shrunk for tests: 32 videos, 2 prompts x 4 completions, 4 steps, 2 warm-up steps."""
    args = {
        "synthetic.dir": data_dir,
        "synthetic.num_train": 32,
        "synthetic.num_val": 4,
        "train.prompts_per_step": 2,
        "grpo.num_generations": 4,
        "train.total_steps": 4,
        "warmup.steps": 2,
        "warmup.batch_size": 2,
        "eval.every": 2,
        "eval.batch_size": 4,
        "checkpoint.every": 2,
        "logging.every": 1,
        "logging.samples_every": 2,
    }
    args.update(extra)
    return [f"--config.{k}={v}" for k, v in args.items()]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("xla_cache")
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("home_cache")),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("square") / "data"


def run(args: list[str], env: dict[str, str], timeout: int = 300, module: str = "tempr1_jax.train"):
    return subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def metrics_rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def train_rows(workdir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in metrics_rows(workdir) if "loss" in r}


def read_state(workdir: Path, step: int) -> dict:
    import jax
    import orbax.checkpoint as ocp

    ckptr, path = ocp.PyTreeCheckpointer(), str(workdir / "checkpoints" / str(step) / "state")
    # as numpy arrays: no device layout needed, so a checkpoint written by two processes reads in one
    tree = ckptr.metadata(path).item_metadata.tree
    return ckptr.restore(path, restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))


def flat(tree, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for k, v in items:
        if isinstance(v, dict | list | tuple):
            out |= flat(v, f"{prefix}{k}/")
        elif v is not None:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


@pytest.fixture(scope="module")
def straight(tmp_path_factory, env, data_dir) -> Path:
    """4 steps in one process (with the warm-up, evaluation at steps 0, 2 and 4, checkpoints at 2 and 4)."""
    wd = tmp_path_factory.mktemp("straight")
    r = run(["--config", DEMO, "--workdir", str(wd), *small(data_dir)], env)
    assert r.returncode == 0, r.stderr[-6000:]
    return wd


def test_demo_config_runs_through_the_entry_point(straight):
    rows = train_rows(straight)
    assert sorted(rows) == [1, 2, 3, 4]
    for r in rows.values():
        assert np.isfinite(r["loss"]) and r["skipped"] == 0
        assert 0 <= r["reward/localization"] <= 1 and r["reward/tg/count"] == 8  # 2 prompts x G = 4
        for k in ("kl", "clip/region", "entropy", "zero_std_groups", "tokens_per_sec", "completion_length/mean",
                  "time/rollout", "time/update", "lr", "grad_norm"):
            assert k in r, k
    evals = [r for r in metrics_rows(straight) if "eval/tg/mIoU" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert all(0 <= r["eval/tg/mIoU"] <= 100 and r["eval/tg/count/total"] == 4 for r in evals)
    for step in (0, 2, 4):
        preds = (straight / "eval" / f"step_{step}" / "predictions.jsonl").read_text().splitlines()
        assert len(preds) == 4 and {"id", "task", "completion", "segments"} <= set(json.loads(preds[0]))
    assert sorted(int(p.name) for p in (straight / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    assert (straight / "warmup_model" / "config.json").is_file()
    assert any((straight / "tensorboard").iterdir())
    assert "done at step 4/4" in (straight / "train.log").read_text()


def test_compile_count_is_flat_after_the_first_step(straight):
    """Steps 2.. compile nothing, evaluations and checkpoints between them included."""
    rows = train_rows(straight)
    assert [rows[s]["compiles"] for s in (2, 3, 4)] == [0, 0, 0]
    assert "0 compilations after the first step" in (straight / "train.log").read_text()


def test_resume_in_a_new_process_is_exact(tmp_path, env, data_dir, straight):
    """2 steps, a new process resumes from the checkpoint, 2 more steps: bit for bit the 4 straight steps."""
    wd = tmp_path / "resumed"
    args = ["--config", DEMO, "--workdir", str(wd), *small(data_dir, **{"train.steps_per_run": 2})]
    first = run(args, env)
    assert first.returncode == 0, first.stderr[-6000:]
    assert "stopped at step 2/4" in first.stderr
    second = run(args, env)
    assert second.returncode == 0, second.stderr[-6000:]
    assert "resumed from step 2" in second.stderr and "done at step 4/4" in second.stderr
    a, b = flat(read_state(straight, 4)), flat(read_state(wd, 4))
    assert sorted(a) == sorted(b) and any(k.startswith("opt_state") for k in a) and "rng" in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ra, rb = train_rows(straight), train_rows(wd)
    for s in (3, 4):
        for k in ("loss", "reward/total", "kl", "grad_norm", "completion_length/mean"):
            assert ra[s][k] == rb[s][k], (s, k)


NAN_AT_SECOND_BATCH = """
import sys
import numpy as np
from data_pipeline import stream

calls = {"n": 0}
original = stream.Stream.__next__

def poisoned(self):
    batch = original(self)
    if self.config.repeat:  # the GRPO stream (not the evaluation's single pass; no warm-up in this run)
        calls["n"] += 1
        if calls["n"] == 2:
            batch = batch._replace(pixel_values=batch.pixel_values.copy())
            batch.pixel_values[0, 0, 0] = np.nan
    return batch

stream.Stream.__next__ = poisoned
from tempr1_jax import train
sys.exit(train.main(["train", *sys.argv[1:]]))
"""


def test_a_nan_in_a_batch_is_skipped_logged_and_never_checkpointed(tmp_path, env, data_dir):
    wd = tmp_path / "nan"
    args = ["--config", DEMO, "--workdir", str(wd), *small(data_dir, **{"eval.every": 0, "warmup.steps": 0})]
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(NAN_AT_SECOND_BATCH), *args], env=env,
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-6000:]
    rows = train_rows(wd)
    assert rows[2]["skipped"] == 1 and rows[2]["skipped_total"] == 1
    assert rows[1]["skipped"] == rows[3]["skipped"] == rows[4]["skipped"] == 0 and rows[4]["skipped_total"] == 1
    assert "step 2/4" in r.stderr and "SKIPPED 1 non-finite update(s)" in r.stderr
    # The periodic checkpoint of step 2 moved to step 3, the first step after it that applied its update.
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [3, 4]
    for v in flat(read_state(wd, 3)["params"]).values():
        assert np.all(np.isfinite(v))


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path, env, data_dir):
    wd = tmp_path / "preempted"
    args = ["--config", DEMO, "--workdir", str(wd),
            *small(data_dir, **{"train.total_steps": 1000, "eval.every": 0, "checkpoint.every": 500})]
    p = subprocess.Popen([sys.executable, "-m", "tempr1_jax.train", *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            if (wd / "metrics.jsonl").is_file() and train_rows(wd):
                break
            time.sleep(0.5)
        assert p.poll() is None, p.communicate()[1][-6000:]
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, stderr[-6000:]
    assert "preemption requested" in stderr
    last = max(train_rows(wd))
    assert 1 <= last < 1000
    assert sorted(int(q.name) for q in (wd / "checkpoints").iterdir() if q.name.isdigit()) == [last]
    assert int(read_state(wd, last)["step"]) == last


def test_an_unknown_config_key_is_an_error_naming_it(tmp_path, env):
    r = run(["--config", DEMO, "--workdir", str(tmp_path), "--config.grpo.bta=0.1"], env, timeout=120)
    assert r.returncode == 2
    assert "grpo.bta" in r.stderr and "Traceback" not in r.stderr
    r = run(["--config", DEMO, "--workdir", str(tmp_path), "--config.synthetic.num_videos=3"], env, timeout=120)
    assert r.returncode == 2 and "synthetic.num_videos" in r.stderr


def test_cudnn_attention_is_refused_with_its_reason(tmp_path, env, data_dir):
    """The model's cuDNN path assumes right padding; GRPO rows are left-padded: a clear error, not wrong math."""
    r = run(["--config", DEMO, "--workdir", str(tmp_path), *small(data_dir), "--config.model.attention_impl=cudnn"],
            env, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "attention_impl='cudnn'" in r.stderr and "left-padded" in r.stderr and "Traceback" not in r.stderr


EVALUATE_BOTH = """
import sys
from tempr1_jax import evaluate
demo, workdir, out, *overrides = sys.argv[1:]
rc_train = evaluate.main(["--config", demo, "--checkpoint", workdir, *overrides])
rc_hf = evaluate.main(["--config", demo, "--checkpoint", workdir + "/warmup_model", "--output", out, *overrides])
rc_bad = evaluate.main(["--config", demo, "--checkpoint", out, *overrides])
print("RC", rc_train, rc_hf, rc_bad)
"""


def test_evaluate_generation_mode_from_a_train_checkpoint_and_an_hf_directory(tmp_path, env, data_dir, straight):
    out = tmp_path / "hf_eval"
    overrides = small(data_dir)
    ckpt_dir = straight / "eval" / "step_4"
    during_training = (ckpt_dir / "predictions.jsonl").read_text()
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(EVALUATE_BOTH), DEMO, str(straight), str(out),
                        *overrides], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "RC 0 0 2" in r.stdout, r.stdout[-3000:] + r.stderr[-6000:]
    assert "neither a Hugging Face model directory" in r.stderr
    # From the train.py checkpoint: the latest step (4), written next to the periodic evaluations.
    for d in (ckpt_dir, out):
        preds = [json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()]
        assert len(preds) == 4
        for p in preds:
            assert p["task"] == "tg" and isinstance(p["completion"], str)
            assert p["segments"] is None or all(0 <= s <= e for s, e in p["segments"])
        m = json.loads((d / "metrics.json").read_text())
        assert set(m["tg"]) >= {"R1@0.3", "R1@0.5", "R1@0.7", "mIoU"} and m["counts"]["tg"]["total"] == 4
    assert r.stdout.count("R1@0.3") == 2 and "mean reward" in r.stdout
    # The same params and greedy decoding as the trainer's own evaluation at step 4: the same predictions.
    assert (ckpt_dir / "predictions.jsonl").read_text() == during_training


TWO_PROCESSES = """
import sys
from tempr1_jax import train
pid, port = int(sys.argv[1]), int(sys.argv[2])
args = sys.argv[3:] + [f"--config.distributed.coordinator_address=localhost:{port}",
                       "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}"]
sys.exit(train.main(["train", *args]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_jax_distributed_train_like_one(tmp_path, env, data_dir):
    """Two processes on localhost (one CPU device each, each reading its own half of every batch) train
    exactly like one process holding both devices."""
    common = small(data_dir, **{"train.total_steps": 2, "eval.every": 0, "warmup.steps": 0})
    one = run(["--config", DEMO, "--workdir", str(tmp_path / "one"), *common],
              {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert one.returncode == 0, one.stderr[-6000:]
    port = free_port()
    wd = tmp_path / "two"
    penv = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(TWO_PROCESSES), str(i), str(port),
                               "--config", DEMO, "--workdir", str(wd), *common], env=penv,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
             for i in range(2)]
    try:
        for p in procs:
            _, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr[-6000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    ra, rb = train_rows(tmp_path / "one"), train_rows(wd)
    assert sorted(ra) == sorted(rb) == [1, 2]
    for s in (1, 2):
        for k in ("reward/total", "completion_length/mean"):
            assert ra[s][k] == rb[s][k], (s, k)
        np.testing.assert_allclose(rb[s]["loss"], ra[s]["loss"], rtol=1e-5, atol=1e-7)
    a, b = flat(read_state(tmp_path / "one", 2)["params"]), flat(read_state(wd, 2)["params"])
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_the_full_demo_learns(tmp_path, env):
    """``python -m tempr1_jax.train --config configs/demo.py`` as the README runs it (about 4-5 minutes). After
    the warm-up the policy has the format and reads the video (held-out greedy localization above the best
    constant answer, which ignores the pixels); GRPO raises the rollouts' localization reward and keeps the
    held-out one above that bar."""
    from data_pipeline import synthetic

    wd = tmp_path / "demo"
    r = run(["--config", DEMO, "--workdir", str(wd)], env, timeout=1800)
    assert r.returncode == 0, r.stderr[-6000:]
    (val,) = Path(env["XDG_CACHE_HOME"]).glob("tempr1_jax/square-*/val.jsonl")
    _, constant = synthetic.best_constant_iou([json.loads(x) for x in val.read_text().splitlines()])
    rows = metrics_rows(wd)
    evals = [x for x in rows if "eval/reward/localization" in x]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == max(x["step"] for x in rows)
    before, after = evals[0]["eval/reward/localization"], evals[-1]["eval/reward/localization"]
    assert evals[0]["eval/reward/format"] > 0.9 and evals[-1]["eval/reward/format"] > 0.9, evals
    assert before > constant + 0.05 and after > constant + 0.05, (before, after, constant)
    train = [x["reward/localization"] for x in rows if "reward/localization" in x]
    k = max(1, len(train) // 4)
    assert np.mean(train[-k:]) > np.mean(train[:k]) + 0.03, (np.mean(train[:k]), np.mean(train[-k:]))


def test_a_bad_warmup_targets_value_is_a_config_error_naming_it(tmp_path, env):
    r = run(["--config", DEMO, "--workdir", str(tmp_path), "--config.warmup.targets=truht"], env, timeout=120)
    assert r.returncode == 2 and "warmup.targets" in r.stderr and "Traceback" not in r.stderr
