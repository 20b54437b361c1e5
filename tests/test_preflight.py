"""tempr1_jax.preflight: the resume check against the saved config, the learning-rate schedule on resume, every
input checked at once, the workdir, the mixture log. No model, no data stream (the trainer's end-to-end checks
are in tests/test_train.py)."""

from __future__ import annotations

import json
import logging
import os
import types
from pathlib import Path

import pytest

from tempr1_jax import configlib, preflight

REPO = Path(__file__).resolve().parents[1]
SEVEN = str(REPO / "configs" / "tempr1_7b.py")


def config(*overrides: str, root: str = "/data/t"):
    return configlib.parse_flags(["train", "--config", f"{SEVEN}:{root}", *overrides]).config


def workdir_with_checkpoint(tmp_path: Path, *overrides: str) -> str:
    wd = tmp_path / "run"
    (wd / "checkpoints" / "150").mkdir(parents=True)
    configlib.write_run_config(config(*overrides), str(wd))
    return str(wd)


def test_a_fresh_workdir_has_nothing_to_check(tmp_path):
    assert preflight.check_resume(config(), str(tmp_path)) is None
    configlib.write_run_config(config("--config.grpo.beta=0.5"), str(tmp_path))  # no checkpoint: a new start
    assert preflight.check_resume(config(), str(tmp_path)) is None


def test_resume_refuses_what_changes_the_computation_and_names_every_key(tmp_path):
    wd = workdir_with_checkpoint(tmp_path)
    with pytest.raises(ValueError) as e:
        preflight.check_resume(config("--config.grpo.beta=0", "--config.data.max_pixels=12544", "--config.seed=3"), wd)
    msg = str(e.value)
    assert msg.startswith(
        f"resuming {wd} (checkpoints up to step 150) with a config that changes what the run computes: "
    )
    for part in (
        "config.data.max_pixels: saved 602112, now 12544",
        "config.grpo.beta: saved 0.04, now 0.0",
        "config.seed: saved 0, now 3",
        f"resume with the saved values ({wd}/config.py)",
    ):
        assert part in msg, part
    assert "\n" not in msg


def test_resume_allows_run_length_logging_and_paths_with_a_note(tmp_path, caplog):
    wd = workdir_with_checkpoint(tmp_path)
    now = config(
        "--config.logging.every=10",
        "--config.eval.max_samples=0",
        "--config.mesh.fsdp=4",
        "--config.train.total_steps=900",
        root="/moved/t",
    )
    with caplog.at_level(logging.INFO, logger="tempr1_jax"):
        saved = preflight.check_resume(now, wd)
    assert saved["train"]["total_steps"] is None and saved["logging"]["every"] == 1
    text = {r.levelname: [] for r in caplog.records}
    for r in caplog.records:
        text[r.levelname].append(r.getMessage())
    assert "resuming with config.logging.every changed: saved 1, now 10" in text["INFO"]
    assert any(
        "config.data.frames changed: saved '/data/t/frames', now '/moved/t/frames'" in m for m in text["WARNING"]
    )
    assert not any("total_steps" in m for m in text["INFO"])  # checked with the schedule after the restore


def test_a_run_saved_before_configs_were_is_resumed_with_a_warning(tmp_path, caplog):
    (tmp_path / "checkpoints" / "3").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="tempr1_jax"):
        assert preflight.check_resume(config(), str(tmp_path)) is None
    assert "without a saved config" in caplog.text


def saved_dict(*overrides: str) -> dict:
    return json.loads(config(*overrides).to_json())


def test_total_steps_below_the_checkpoint_is_refused():
    cfg = config("--config.train.total_steps=100")
    with pytest.raises(
        ValueError,
        match=r"config.train.total_steps=100, but the checkpoint restored from /w is at "
        r"step 150: nothing to train \(give total_steps >= 150",
    ):
        preflight.check_resumed_step(cfg, None, 150, 100, 1000, "/w")
    preflight.check_resumed_step(cfg, None, 100, 100, 1000, "/w")  # at the end already: fine


def test_a_new_total_that_changes_the_schedule_is_refused_unless_allowed(caplog):
    """The 7B recipe decays linearly to 0 at total_steps: a longer run changes every later rate."""
    saved = saved_dict("--config.train.total_steps=6")
    cfg = config("--config.train.total_steps=10")
    with pytest.raises(ValueError) as e:
        preflight.check_resumed_step(cfg, saved, 3, 10, 1000, "/w")
    assert str(e.value) == (
        "config.train.total_steps=10 changes the learning-rate schedule of the saved run (6 steps, "
        "optimizer.decay='linear'): lr at step 4 5e-07 -> 7e-07; give --config.train.allow_schedule_change=True to "
        "resume with the new schedule, or train.total_steps=6"
    )
    allowed = config("--config.train.total_steps=10", "--config.train.allow_schedule_change=True")
    with caplog.at_level(logging.WARNING, logger="tempr1_jax"):
        preflight.check_resumed_step(allowed, saved, 3, 10, 1000, "/w")
    assert "lr at step 4 5e-07 -> 7e-07 (train.allow_schedule_change=True)" in caplog.text
    # None (one epoch over 1000 samples / 8 prompts = 125 steps) -> 125 is no change at all.
    preflight.check_resumed_step(config("--config.train.total_steps=125"), saved_dict(), 3, 125, 1000, "/w")


def test_a_constant_schedule_does_not_depend_on_the_total(caplog):
    saved = saved_dict("--config.train.total_steps=6", "--config.optimizer.decay=constant")
    cfg = config("--config.train.total_steps=10", "--config.optimizer.decay=constant")
    with caplog.at_level(logging.INFO, logger="tempr1_jax"):
        preflight.check_resumed_step(cfg, saved, 3, 10, 1000, "/w")
    assert "train.total_steps 6 -> 10: the learning-rate schedule (constant) does not change" in caplog.text


def test_every_missing_input_is_named_at_once(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    tok = tmp_path / "tok"
    tok.mkdir()
    (tmp_path / "a.jsonl").write_text("")
    cfg = config(
        f"--config.model.path={model}",
        f"--config.data.tokenizer={tok}",
        f"--config.data.samples=('{tmp_path}/a.jsonl', '{tmp_path}/b.jsonl', '{tmp_path}/a.jsonl')",
        f"--config.eval.samples=('{tmp_path}/c.jsonl',)",
        root=str(tmp_path),
    )
    with pytest.raises(FileNotFoundError) as e:
        preflight.check_inputs(cfg, training=True)
    msg = str(e.value)
    assert msg.startswith("6 input(s) of the run are missing or wrong (checked before the first step): ")
    for part in (
        f"config.data.samples[1] {tmp_path}/b.jsonl: no such file",
        f"config.data.samples[2] {tmp_path}/a.jsonl: listed twice",
        f"config.eval.samples[0] {tmp_path}/c.jsonl: no such file",
        f"config.data.frames {tmp_path}/frames: no such directory (run data_pipeline.extract_frames)",
        f"config.model.path {model}: no *.safetensors",
        f"config.data.tokenizer {tok}: no tokenizer files",
    ):
        assert part in msg, part
    # Evaluation reads no training samples.
    with pytest.raises(FileNotFoundError, match=r"^4 input"):
        preflight.check_inputs(cfg, training=False)


def test_a_workdir_must_be_a_writable_local_directory(tmp_path):
    assert preflight.check_workdir(str(tmp_path / "new")) == str(tmp_path / "new") and (tmp_path / "new").is_dir()
    with pytest.raises(
        ValueError,
        match=r"--workdir gs://bucket/run: a workdir must be a local or mounted "
        r"directory, not a URL",
    ):
        preflight.check_workdir("gs://bucket/run")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="file: a file, not a directory"):
        preflight.check_workdir(str(tmp_path / "file"))
    with pytest.raises(OSError, match=r"file/run: cannot create or write it \(NotADirectoryError"):
        preflight.check_workdir(str(tmp_path / "file" / "run"))
    assert not os.path.exists("gs:")  # the old os.path.abspath made ./gs:/bucket/run


def test_the_mixture_log_names_tasks_sources_and_empty_sources(caplog):
    fake = types.SimpleNamespace(
        num_samples=30,
        weights=None,
        mixture=lambda: {
            "tasks": {"tg": {"samples": 20, "share": 2 / 3}, "gvqa": {"samples": 10, "share": 1 / 3}},
            "sources": [
                {"path": "/d/tg.jsonl", "read": 20, "samples": 20, "tasks": ["tg"], "share": 2 / 3},
                {"path": "/d/q.jsonl", "read": 12, "samples": 10, "tasks": ["gvqa"], "share": 1 / 3},
                {"path": "/d/tal.jsonl", "read": 5, "samples": 0, "tasks": [], "share": 0.0},
            ],
        },
    )
    with caplog.at_level(logging.INFO, logger="tempr1_jax"):
        preflight.log_mixture(fake, 8)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        "training mixture (natural proportions; share of the 8 prompts of a step): 30 samples: "
        "tg 20 (66.7%, 5.33 prompts), gvqa 10 (33.3%, 2.67 prompts)"
    )
    assert lines[2] == "  config.data.samples[1] /d/q.jsonl: 10 of 12 samples (gvqa), 33.3% of a step"
    assert lines[-1].startswith("config.data.samples[2] /d/tal.jsonl: none of its 5 samples is in the stream")
    assert caplog.records[-1].levelname == "WARNING"


def test_evaluating_with_another_config_names_what_the_policy_sees_differently(caplog):
    saved = saved_dict("--config.data.max_pixels=12544")
    with caplog.at_level(logging.WARNING, logger="tempr1_jax"):
        preflight.warn_policy_changes(
            config("--config.data.max_pixels=12544", "--config.eval.max_samples=0", "--config.data.prefetch_batches=8"),
            saved,
        )
        assert not caplog.records  # evaluation and speed knobs: nothing the policy sees
        preflight.warn_policy_changes(config(), saved)
    (record,) = caplog.records
    assert record.getMessage() == (
        "the config differs from the run's saved config in what the policy sees: "
        "config.data.max_pixels: saved 12544, now 602112"
    )
