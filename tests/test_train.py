"""The trainer through its real entry point, ``python -m tempr1_jax.train --config configs/demo.py``, on the demo's
five-task synthetic world made small: runs, the saved config and the log file, exact resume in a new process and what a
resume refuses, flat compile count, a skipped NaN step, SIGTERM / Ctrl-C in the loop and during start-up, config
and input errors before the first step, ``python -m tempr1_jax.evaluate --checkpoint ...`` from the saved config
and ``python -m tempr1_jax.export`` on the results.

Every run is a subprocess sharing one persistent XLA compilation cache, so only the first run compiles.
"""

from __future__ import annotations

import json
import os
import shutil
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
SQUARE = str(REPO / "configs" / "demo_square.py")  # the single-task square world, for tests tuned on it
TASKS = ("tg", "dtg", "vhd", "gvqa", "tal")


def small(data_dir: Path, **extra: object) -> list[str]:
    """The demo config shrunk for tests: 16 videos per task, 2 prompts x 4 completions, 4 steps, 2 warm-up steps."""
    args = {
        "synthetic.dir": data_dir,
        "synthetic.num_train": 16,
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
    return tmp_path_factory.mktemp("multitask") / "data"


@pytest.fixture(scope="module")
def square_dir(tmp_path_factory) -> Path:
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


# A tuple override given twice: ml_collections would run with (184, 512); the last value wins.
REPEATED = ["--config.data.prompt_buckets=(512,)", "--config.data.prompt_buckets=(184,)"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, env, data_dir) -> Path:
    """4 steps in one process (with the warm-up, evaluation at steps 0, 2 and 4, checkpoints at 2 and 4)."""
    wd = tmp_path_factory.mktemp("straight")
    r = run(["--config", DEMO, "--workdir", str(wd), *small(data_dir), *REPEATED], env)
    assert r.returncode == 0, r.stderr[-6000:]
    (wd / "stderr.txt").write_text(r.stderr)
    return wd


def test_demo_config_runs_through_the_entry_point(straight):
    rows = train_rows(straight)
    assert sorted(rows) == [1, 2, 3, 4]
    for r in rows.values():
        assert np.isfinite(r["loss"]) and r["skipped"] == 0
        assert 0 <= r["reward/localization"] <= 2  # tal's reward reaches 2 (count term + F1)
        assert sum(r.get(f"reward/{t}/count", 0) for t in TASKS) == 8  # 2 prompts x G = 4, each by its own task
        for k in ("kl", "clip/region", "entropy", "zero_std_groups", "tokens_per_sec", "completion_length/mean",
                  "time/rollout", "time/update", "lr", "grad_norm"):
            assert k in r, k
    evals = [r for r in metrics_rows(straight) if "eval/reward/total" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    for r in evals:  # every task's rewards and official metrics in every evaluation row
        assert 0 <= r["eval/tg/mIoU"] <= 100 and r["eval/tg/count/total"] == 4
        for t in TASKS:
            assert {f"eval/{t}/reward/{c}" for c in ("format", "localization", "answer", "total")} <= set(r), t
    for step in (0, 2, 4):
        path = straight / "eval" / f"step_{step}" / "predictions.jsonl"
        preds = [json.loads(x) for x in path.read_text().splitlines()]
        assert len(preds) == 20 and {"id", "task", "completion", "segments"} <= set(preds[0])
        assert sorted(p["task"] for p in preds) == sorted(TASKS * 4)
    assert sorted(int(p.name) for p in (straight / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    assert (straight / "warmup_model" / "config.json").is_file()
    assert any((straight / "tensorboard").iterdir())
    assert "done at step 4/4" in (straight / "train.log").read_text()


def test_the_run_saves_its_resolved_config_and_the_last_repeated_override_wins(straight):
    saved = json.loads((straight / "config.json").read_text())
    assert saved["data"]["prompt_buckets"] == [184]  # not [184, 512]
    assert saved["data"]["samples"][0].endswith("/train.jsonl") and saved["train"]["total_steps"] == 4  # resolved
    stderr = (straight / "stderr.txt").read_text()
    assert "note: --config.data.prompt_buckets given 2 times: the last one wins" in stderr
    code = (f"from tempr1_jax import configlib; print(configlib.parse_flags(['x', '--config', "
            f"{str(straight / 'config.py')!r}]).config.data.prompt_buckets)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.stdout.strip() == "(184,)", r.stderr[-2000:]


def test_train_log_holds_progress_eval_tables_mixture_and_warnings(straight):
    log = (straight / "train.log").read_text()
    assert "step 2/4  50.0%" in log and "step 4/4 100.0%" in log  # the per-step progress lines
    each = "tg 4, dtg 4, vhd 4, gvqa 4, tal 4"
    assert f"eval at step 2 (20 samples: {each};" in log and "\ntal: 4 samples, 0 missing" in log and "mIoU" in log
    assert ("training mixture (natural proportions; share of the 2 prompts of a step): 80 samples: "
            "tg 16 (20.0%, 0.40 prompts), dtg 16 (20.0%, 0.40 prompts)") in log
    assert "train.jsonl: 80 of 80 samples (dtg, gvqa, tal, tg, vhd), 100.0% of a step" in log
    assert f"evaluation set: 20 samples of config.eval.samples ({each})" in log
    assert "INFO tempr1_jax.preflight: config: " in log
    assert log.index("preflight: config: ") < log.index("step 1/4")  # saved before the first step


def test_compile_count_is_flat_after_the_first_step(straight):
    """Steps 2.. compile nothing, evaluations and checkpoints between them included."""
    rows = train_rows(straight)
    assert [rows[s]["compiles"] for s in (2, 3, 4)] == [0, 0, 0]
    assert [rows[s]["recompiles"] for s in (2, 3, 4)] == [0, 0, 0]
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
    # The evaluation sampler first compiles in the new process after its first step: a first compilation of
    # that program, not a recompilation.
    assert "(0 recompilations of a program compiled before; " in second.stderr, second.stderr[-3000:]
    assert "jit(eval_generate)" in second.stderr
    a, b = flat(read_state(straight, 4)), flat(read_state(wd, 4))
    assert sorted(a) == sorted(b) and any(k.startswith("opt_state") for k in a) and "rng" in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ra, rb = train_rows(straight), train_rows(wd)
    for s in (3, 4):
        for k in ("loss", "reward/total", "kl", "grad_norm", "completion_length/mean"):
            assert ra[s][k] == rb[s][k], (s, k)
    # What a resume refuses, in one line each: a config that changes the computation, a total below the step.
    for extra, message in (("--config.grpo.beta=0.1", "changes what the run computes: config.grpo.beta: saved 0.04, "
                                                      "now 0.1; resume with the saved values"),
                           ("--config.train.total_steps=3", "config.train.total_steps=3, but the checkpoint restored "
                                                            f"from {wd} is at step 4: nothing to train")):
        r = run([*args, extra], env)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert r.stderr.strip().splitlines()[-1].startswith("error: ")
        saved = json.loads((wd / "config.json").read_text())  # a refused config is not saved over the run's
        assert saved["grpo"]["beta"] == 0.04 and saved["train"]["total_steps"] == 4


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


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_write_a_checkpoint_and_exit_cleanly(tmp_path, env, data_dir, signum, status):
    wd = tmp_path / "preempted"
    args = ["--config", DEMO, "--workdir", str(wd),
            *small(data_dir, **{"train.total_steps": 1000, "eval.every": 0, "checkpoint.every": 500,
                                "warmup.steps": 2 if signum == signal.SIGTERM else 0})]
    p = subprocess.Popen([sys.executable, "-m", "tempr1_jax.train", *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            if (wd / "metrics.jsonl").is_file() and train_rows(wd):
                break
            time.sleep(0.5)
        assert p.poll() is None, p.communicate()[1][-6000:]
        p.send_signal(signum)
        _, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == status, stderr[-6000:]
    assert "preemption requested" in stderr and "Traceback" not in stderr
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
rc_train = evaluate.main(["--checkpoint", workdir])  # the run's saved config: no --config, no overrides
rc_again = evaluate.main(["--checkpoint", workdir + "/checkpoints/4"])  # would overwrite: refused
rc_hf = evaluate.main(["--config", demo, "--checkpoint", workdir + "/warmup_model", "--output", out, *overrides])
rc_bad = evaluate.main(["--config", demo, "--checkpoint", out, *overrides])
print("RC", rc_train, rc_again, rc_hf, rc_bad)
"""


def test_evaluate_generation_mode_from_a_train_checkpoint_and_an_hf_directory(tmp_path, env, data_dir, straight):
    out = tmp_path / "hf_eval"
    overrides = small(data_dir)
    ckpt_dir = straight / "eval" / "step_4"
    during_training = (ckpt_dir / "predictions.jsonl").read_text()
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(EVALUATE_BOTH), DEMO, str(straight), str(out),
                        *overrides], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "RC 0 2 0 2" in r.stdout, r.stdout[-3000:] + r.stderr[-6000:]
    assert "neither a Hugging Face model directory" in r.stderr
    assert f"{straight / 'evaluate' / 'step_4'} already holds an evaluation" in r.stderr
    # From the train.py checkpoint: the latest step (4), in a directory of its own (the run's eval/step_4 stays).
    new_dir = straight / "evaluate" / "step_4"
    for d in (new_dir, out):
        preds = [json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()]
        assert len(preds) == 20 and sorted(p["task"] for p in preds) == sorted(TASKS * 4)
        for p in preds:
            assert isinstance(p["completion"], str)
            assert p["segments"] is None or all(0 <= s <= e for s, e in p["segments"])
        m = json.loads((d / "metrics.json").read_text())
        assert set(m["tg"]) >= {"R1@0.3", "R1@0.5", "R1@0.7", "mIoU"}
        assert all(m["counts"][t]["total"] == 4 for t in TASKS), m["counts"]
    assert r.stdout.count("R1@0.3") == 4 and "mean reward" in r.stdout  # tg and dtg tables, two evaluations
    # The saved config gives the same data, pixels and greedy decoding as the trainer's own evaluation at step 4:
    # the same predictions; the run's own files are untouched.
    assert (new_dir / "predictions.jsonl").read_text() == during_training
    assert (ckpt_dir / "predictions.jsonl").read_text() == during_training


def test_export_writes_a_hugging_face_directory_that_both_loaders_read(tmp_path, env, straight):
    """``python -m tempr1_jax.export``: step 4's params, bit for bit in float32, with the run's tokenizer; our
    loader gets the same arrays back, transformers the same logits as our model."""
    from flax import nnx

    from tempr1_jax.models.qwen25vl import params, rope

    out = tmp_path / "hf"
    r = run(["--checkpoint", str(straight), "--output", str(out), "--dtype", "float32"], env,
            module="tempr1_jax.export")
    assert r.returncode == 0 and f"wrote {out}: the policy of step 4 of {straight} (float32)" in r.stdout, r.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(os.listdir(out))
    model = params.load_hf_checkpoint(str(out), dtype="float32")
    got = flat(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    want = {k.removesuffix("/value"): v for k, v in flat(read_state(straight, 4)["params"]).items()}
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    ids = np.array([AutoTokenizer.from_pretrained(str(out))("<answer>3 to 7</answer>")["input_ids"]])
    mask = np.ones_like(ids)
    pos, _ = rope.get_rope_index(model.cfg, ids, mask)
    ours = np.asarray(nnx.jit(lambda m, i, p, k: m.logits(i, p, k, None))(model, ids, pos, mask))
    hm = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(out), attn_implementation="eager",
                                                            dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hm(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(pos).long()).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    r = run(["--checkpoint", str(straight), "--output", str(out)], env, module="tempr1_jax.export")
    assert r.returncode == 2 and "not empty (give --overwrite to replace it)" in r.stderr


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
    # One log file per process (on a shared mount they would otherwise write into one file).
    main, other = (wd / "train.log").read_text(), (wd / "train.process1.log").read_text()
    assert "done at step 2/2" in main and "step 2/2 100.0%" in main  # process 0 logs the progress lines
    assert "done at step 2/2" in other and "step 2/2 100.0%" not in other
    assert "error" not in other.lower() and not (wd / "train.process0.log").exists()


@pytest.mark.slow
def test_the_full_demo_learns(tmp_path, env):
    """``python -m tempr1_jax.train --config configs/demo.py`` as the README runs it (about 7 minutes, seed 0). Every
    task has the format after the warm-up; GRPO raises the held-out greedy localization reward of at least four of
    the five tasks by 0.03 or more, lowers none by more than 0.03, and at least four tasks end above their
    pixel-blind bar (``tempr1_jax.baselines.pixel_blind_bars``). Measured for seed 0 (docs/demo.md): gains
    0.087-0.171, and dtg ends 0.021 below its bar (seeds 1 and 2 end every task above it)."""
    from tempr1_jax import baselines

    wd = tmp_path / "demo"
    r = run(["--config", DEMO, "--workdir", str(wd)], env, timeout=1800)
    assert r.returncode == 0, r.stderr[-6000:]
    (val,) = Path(env["XDG_CACHE_HOME"]).glob("tempr1_jax/multitask-*/val.jsonl")
    bars = baselines.pixel_blind_bars([json.loads(x) for x in val.read_text().splitlines()])
    rows = metrics_rows(wd)
    evals = [x for x in rows if "eval/reward/total" in x]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == max(x["step"] for x in rows)
    before, after = evals[0], evals[-1]
    gains, above = {}, {}
    for t in TASKS:
        key = f"eval/{t}/reward/localization"
        assert before[f"eval/{t}/reward/format"] > 0.9 and after[f"eval/{t}/reward/format"] > 0.9, t
        gains[t] = after[key] - before[key]
        above[t] = after[key] > bars[t]["localization"]
    assert sum(g >= 0.03 for g in gains.values()) >= 4 and min(gains.values()) > -0.03, gains
    assert sum(above.values()) >= 4, (above, {t: bars[t]["localization"] for t in TASKS})


def test_missing_inputs_are_all_named_before_the_first_step(tmp_path, env):
    """No eval.samples file, no samples, frames or tokenizer: one line naming all of them, before any step (the
    code before this test found the eval file at the first evaluation, hours into a real run)."""
    wd, nope = tmp_path / "run", tmp_path / "nope"
    r = run(["--config", DEMO, "--workdir", str(wd), "--config.synthetic.enabled=False",
             f"--config.data.samples=('{nope}/train.jsonl',)", f"--config.eval.samples=('{nope}/val.jsonl',)",
             f"--config.data.frames={nope}/frames", f"--config.data.tokenizer={nope}/tok",
             "--config.eval.at_start=False"],
            env, timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 4 input(s) of the run are missing or wrong (checked before the first step): ")
    for part in (f"config.data.samples[0] {nope}/train.jsonl: no such file",
                 f"config.eval.samples[0] {nope}/val.jsonl: no such file", f"config.data.frames {nope}/frames",
                 f"config.data.tokenizer {nope}/tok: no such directory"):
        assert part in last, part
    assert "Traceback" not in r.stderr and "training:" not in (wd / "train.log").read_text()


WORKDIRS = """
import sys
from tempr1_jax import train
for wd in sys.argv[2:]:
    print("RC", wd, train.main(["train", "--config", sys.argv[1], "--workdir", wd]), flush=True)
"""


def test_an_unusable_workdir_is_a_one_line_error(tmp_path, env):
    """A URL (os.path.abspath made ./gs:/bucket/run of it), a regular file, a path through one, a read-only
    directory: exit 2 with one line, before anything is written."""
    (tmp_path / "file").write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    cases = ["gs://bucket/run", str(tmp_path / "file"), str(tmp_path / "file" / "run")]
    prefix = []
    if os.geteuid() == 0 and shutil.which("setpriv"):  # root ignores permission bits unless it drops the cap
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]
    if prefix or os.geteuid() != 0:
        os.chmod(ro, 0o555)
        cases.append(str(ro / "run"))
    try:
        r = subprocess.run([*prefix, sys.executable, "-c", textwrap.dedent(WORKDIRS), DEMO, *cases], env=env,
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    finally:
        os.chmod(ro, 0o755)
    assert [ln.rsplit(" ", 1)[1] for ln in r.stdout.splitlines()] == ["2"] * len(cases), r.stdout + r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == len(cases) and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "--workdir gs://bucket/run: a workdir must be a local or mounted directory, not a URL" in errors[0]
    assert errors[1].endswith("file: a file, not a directory")
    assert "file/run: cannot create or write it (NotADirectoryError" in errors[2]
    if len(cases) == 4:
        assert "ro/run: cannot create or write it (PermissionError" in errors[3]
    assert not (tmp_path / "gs:").exists() and os.listdir(ro) == []


def test_a_signal_during_start_up_exits_cleanly(tmp_path, env, data_dir):
    """SIGTERM before the loop (here while the model is built): nothing to save, status 128 + 15, one line."""
    wd = tmp_path / "startup"
    p = subprocess.Popen([sys.executable, "-m", "tempr1_jax.train", "--config", DEMO, "--workdir", str(wd),
                          *small(data_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=REPO)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            if (wd / "train.log").is_file() and "training mixture" in (wd / "train.log").read_text():
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, stderr[-6000:]
    assert stderr.strip().splitlines()[-1] == (
        "error: interrupted by SIGTERM during start-up, before the first step: nothing to save")
    assert "Traceback" not in stderr
    assert not (wd / "checkpoints").is_dir() or not [n for n in os.listdir(wd / "checkpoints") if n.isdigit()]


def test_a_bad_warmup_targets_value_is_a_config_error_naming_it(tmp_path, env):
    r = run(["--config", DEMO, "--workdir", str(tmp_path), "--config.warmup.targets=truht"], env, timeout=120)
    assert r.returncode == 2 and "warmup.targets" in r.stderr and "Traceback" not in r.stderr
