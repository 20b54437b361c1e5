"""Logging helpers: progress/ETA, TensorBoard scalars and text read back, reward breakdowns, throughput."""

from __future__ import annotations

import io
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tempr1_jax import train_log


def test_format_duration():
    assert train_log.format_duration(42) == "42s"
    assert train_log.format_duration(125) == "2:05"
    assert train_log.format_duration(3725.2) == "1:02:05"
    assert train_log.format_duration(float("nan")) == "?"


def test_progress_eta_ignores_the_first_step():
    t = [100.0]
    out = io.StringIO()
    p = train_log.Progress(10, start_step=0, every=2, stream=out, keys=("loss",), clock=lambda: t[0])
    assert p.update(1, {"loss": 0.5}) is None  # not a multiple of every
    t[0] += 30.0  # step 2 took 30 s (compilation and all): the rate is measured from step 1 on
    line = p.update(2, {"loss": np.float32(0.25), "other": 1})
    assert line == "step  2/10  20.0% | 30.00 s/step | ETA 4:00 | loss 0.25"
    t[0] += 20.0
    p.update(3)
    t[0] += 20.0
    line = p.update(4, {"loss": jnp.float32(0.125)})
    assert "23.33 s/step" in line and "ETA 2:20" in line
    t[0] += 1.0
    assert p.update(10) is not None  # the last step always prints
    assert out.getvalue().count("\n") == 3


def test_tensorboard_scalars_and_text_read_back(tmp_path):
    import tensorflow as tf

    tb = train_log.TensorBoard(tmp_path)
    tb.scalars(3, {"loss": jnp.float32(0.5), "reward/tg/total": np.array([1.25])})
    tb.scalars(4, {"loss": 0.25})
    tb.text(4, "samples", "| a | b |\n|---|---|\n| 1 | 2 |")
    tb.close()
    seen, plugins = {}, {}
    for f in tmp_path.iterdir():
        for e in tf.compat.v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                seen[(v.tag, e.step)] = tf.make_ndarray(v.tensor)
                plugins[v.tag] = v.metadata.plugin_data.plugin_name or plugins.get(v.tag)
    assert seen[("loss", 3)] == pytest.approx(0.5) and seen[("loss", 4)] == pytest.approx(0.25)
    assert seen[("reward/tg/total", 3)] == pytest.approx(1.25)
    assert b"| 1 | 2 |" in seen[("samples", 4)].item()
    assert plugins == {"loss": "scalars", "reward/tg/total": "scalars", "samples": "text"}


def test_reward_scalars_per_task():
    rewards = {
        "total": np.array([2.0, 1.0, 0.5, 3.0, 9.0]),
        "format": np.array([1.0, 1.0, 0.0, 1.0, 9.0]),
        "localization": np.array([1.0, 0.0, 0.5, 1.0, 9.0]),
        "answer": np.array([0.0, 0.0, 0.0, 1.0, 9.0]),
    }
    tasks = ["tg", "tg", "tal", "gvqa", "tg"]
    valid = np.array([True, True, True, True, False])  # the last row pads the batch
    out = train_log.reward_scalars(rewards, tasks, valid)
    assert out["reward/total"] == pytest.approx(6.5 / 4)
    assert out["reward/tg/total"] == pytest.approx(1.5) and out["reward/tg/count"] == 2
    assert out["reward/gvqa/answer"] == 1.0 and out["reward/tal/localization"] == 0.5
    assert "reward/dtg/total" not in out
    with pytest.raises(ValueError, match="unknown task 'asr' in row 1"):
        train_log.reward_scalars(rewards, ["tg", "asr", "tg", "tg", "tg"])
    with pytest.raises(ValueError, match="4 task ids for 5 rewards"):
        train_log.reward_scalars(rewards, tasks[:4])


def test_samples_markdown_escapes_untrusted_text():
    comps = ["<answer>1 to 2</answer>", "a | b\nnext line" + "x" * 50, "unused"]
    rewards = {"total": [2.0, 0.0, 1.0], "format": [1.0, 0.0, 1.0], "localization": [1.0, 0.0, 0.0]}
    md = train_log.samples_markdown(comps, ["tg", "vhd", "tg"], rewards, ids=["v#0", "q|1", "x"], num=2,
                                    max_chars=20)  # fmt: skip
    lines = md.splitlines()
    assert lines[0] == "| id | task | total | format | localization | completion |"
    assert len(lines) == 4  # header, rule, two rows
    assert "a \\| b<br>next line" in lines[3] and "[...]" in lines[3] and "q\\|1" in lines[3]
    assert "| 2.000 | 1.000 | 1.000 |" in lines[2]


def test_throughput_and_mfu():
    assert train_log.peak_flops("TPU v5 lite") == 197e12
    assert train_log.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert train_log.peak_flops("cpu") is None
    out = train_log.throughput(1000, 2.0, flops=197e12, num_devices=2, device_kind="TPU v5 lite")
    assert out["tokens_per_sec"] == 500 and out["mfu"] == pytest.approx(0.25)
    assert "mfu" not in train_log.throughput(1000, 2.0, flops=1e12, device_kind="cpu")


def test_compile_counter_counts_compilations():
    f = jax.jit(lambda x: x * 3 + 1)
    a, b, c4 = np.ones(3, np.float32), np.full(3, 2, np.float32), np.ones(4, np.float32)
    with train_log.CompileCounter() as c:
        f(a)
        n = c.count
        f(b)
        assert c.count == n >= 1
        f(c4)  # a new shape compiles again
        assert c.count == n + 1
    f(np.ones(5, np.float32))
    assert c.count == n + 1  # no longer counting


def test_progress_always_reports_skipped_updates():
    out = io.StringIO()
    p = train_log.Progress(100, every=50, stream=out, keys=(), clock=lambda: 0.0)
    assert p.update(3, {"skipped": np.float32(0)}) is None
    line = p.update(7, {"skipped": np.float32(1), "skipped_total": 2.0})
    assert line is not None and line.endswith("SKIPPED 1 non-finite update(s) (2 so far)")


def test_compile_counter_tells_recompilations_from_first_compilations_of_a_program():
    def named(name, fn):
        fn.__name__ = fn.__qualname__ = name
        return jax.jit(fn)

    train, evaluate = named("train_prog", lambda x: x * 2), named("eval_prog", lambda x: x * 2)
    with train_log.CompileCounter() as c:
        train(np.ones(3, np.float32))
        mark = c.mark()
        assert c.since(mark) == "0 compilations"
        evaluate(np.ones(3, np.float32))  # another program's first compilation: not a recompilation
        assert c.recompiles == 0 and c.programs["jit(eval_prog)"] == 1
        train(np.ones(5, np.float32))  # the same program, a new shape: a recompilation
        assert c.recompiles == 1 and c.programs["jit(train_prog)"] == 2
    assert c.since(mark) == ("2 compilations (1 recompilations of a program compiled before: jit(train_prog); 1 "
                             "programs compiled for the first time in this process: jit(eval_prog))")


def test_progress_lines_go_to_the_log_by_default(caplog, tmp_path):
    """Without a stream the progress line is logged: the console and train.log (setup_logging) both get it."""
    path = train_log.setup_logging(str(tmp_path), process_index=0)
    try:
        train_log.Progress(4, every=1, keys=(), clock=lambda: 0.0).update(2)
        logging.getLogger("data_pipeline.stream").warning("8 of 56 samples refer to 4 videos missing: skipped")
        for h in logging.getLogger("tempr1_jax").handlers:
            h.flush()
        text = open(path).read()
        assert "step 2/4  50.0%" in text and "data_pipeline.stream: 8 of 56 samples" in text
        assert train_log.log_file_name(0) == "train.log" and train_log.log_file_name(3) == "train.process3.log"
    finally:
        for name in train_log.LOGGERS:  # leave the test session's logging as pytest set it up
            lg = logging.getLogger(name)
            for h in list(lg.handlers):
                lg.removeHandler(h)
                h.close()
            lg.propagate = True
