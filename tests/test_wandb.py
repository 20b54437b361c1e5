"""The optional wandb logger (``logging.wandb.project``), offline (``WANDB_MODE=offline``, no network): the
offline run directory holds the logged scalars and tables, a resumed run attaches to the same run id (kept in
the workdir), the config is the run config, a missing wandb is an error naming the extra, and bad values are
errors naming the key. Skips when wandb is not installed (``pip install -e '.[wandb]'``)."""

from __future__ import annotations

import glob
import json
import os
import struct
import sys

import pytest
from test_train import DEMO, data_dir, env, run, small  # noqa: F401 (fixtures)

from tempr1_jax import configlib, train_log


def read_records(path: str) -> list:
    """The records of a wandb transaction log (``run-<id>.wandb``): a 7-byte file header, then LevelDB-style
    32 KiB blocks of chunks (crc32 4, length 2, type 1: full / first / middle / last), each record a protobuf
    ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()[7:]
    records, pending, block = [], b"", 32768
    pos = 0
    while pos + 7 <= len(data):
        room = block - (pos + 7) % block  # the header counts from the start of the file
        if room < 7:  # block trailer too small for a header: skip to the next block
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            records.append(rec)
    return records


def history(run_dir: str) -> dict[int, dict]:
    """step -> {key: value} of every history row in an offline run directory (nested keys joined by "/": a
    table is ``samples/_type``, ``samples/sha256``...)."""
    (log_file,) = glob.glob(os.path.join(run_dir, "*.wandb"))
    rows: dict[int, dict] = {}
    for rec in read_records(log_file):
        if rec.WhichOneof("record_type") != "history":
            continue
        row = {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in rec.history.item}
        rows.setdefault(int(row["_step"]), {}).update(row)
    return rows


def config_of(run_dir: str) -> dict:
    (log_file,) = glob.glob(os.path.join(run_dir, "*.wandb"))
    out = {}
    for rec in read_records(log_file):
        if rec.WhichOneof("record_type") == "run":
            for item in rec.run.config.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


@pytest.fixture
def offline(monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_offline_run_holds_scalars_and_tables_and_resume_attaches_to_the_same_run(tmp_path, offline):
    wd = str(tmp_path)
    w = train_log.Wandb(wd, {"grpo": {"beta": 0.04}}, project="tempr1-test", name="unit", tags=("a", "b"))
    first_id = w.run_id
    writers = train_log.Writers(None, w)
    writers.scalars(1, {"loss": 0.5, "reward/total": 1.25})
    writers.samples(
        1, ["<answer>1 to 2</answer>"], ["tg"], {"total": [1.5], "format": [1.0]}, ["v0"], num=4, max_chars=600
    )
    writers.close()
    assert open(os.path.join(wd, train_log.Wandb.ID_FILE)).read().strip() == first_id
    w = train_log.Wandb(wd, {"grpo": {"beta": 0.04}}, project="tempr1-test")
    assert w.run_id == first_id  # resumed: the same run
    w.scalars(2, {"loss": 0.25})
    w.close()
    import wandb

    wandb.teardown()  # stops wandb's service process, which writes the last records of the log on exit
    runs = sorted(glob.glob(os.path.join(wd, "wandb", "offline-run-*")))
    assert len(runs) == 2 and all(r.endswith(first_id) for r in runs)
    h1, h2 = history(runs[0]), history(runs[1])
    assert h1[1]["loss"] == 0.5 and h1[1]["reward/total"] == 1.25 and h1[1]["samples/_type"] == "table-file"
    assert h2[2]["loss"] == 0.25
    assert config_of(runs[0])["grpo"] == {"beta": 0.04}


def test_a_missing_wandb_is_an_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ValueError, match=r"logging\.wandb\.project='p'.*pip install -e '\.\[wandb\]'"):
        train_log.Wandb(str(tmp_path), {}, project="p")


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.logging.wandb.entity=me", "config.logging.wandb.entity='me': is set but logging.wandb.project is"),
        ("--config.logging.wandb.tags=('',)", "config.logging.wandb.tags=('',): must be a tuple of non-empty"),
    ],
)
def test_bad_wandb_values_are_errors_naming_the_key(override, message):
    with pytest.raises(configlib.ConfigError) as e:
        configlib.parse_flags(["train", "--config", DEMO, override])
    assert message in str(e.value)


@pytest.mark.slow
def test_train_logs_to_wandb_and_a_resumed_run_attaches_to_it(tmp_path, env, data_dir):  # noqa: F811
    """``python -m tempr1_jax.train --config.logging.wandb.project=...``: 2 steps, then 2 more in a new process."""
    pytest.importorskip("wandb")
    wd = tmp_path / "run"
    args = [
        "--config",
        DEMO,
        "--workdir",
        str(wd),
        "--config.logging.wandb.project=tempr1-test",
        *small(
            data_dir,
            **{
                "warmup.steps": 0,
                "eval.every": 0,
                "train.steps_per_run": 2,
                "logging.samples_every": 1,
                "logging.tensorboard": False,
            },
        ),
    ]
    wenv = {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for _ in range(2):
        r = run(args, wenv)
        assert r.returncode == 0, r.stderr[-6000:]
    run_id = (wd / train_log.Wandb.ID_FILE).read_text().strip()
    runs = sorted(glob.glob(str(wd / "wandb" / "offline-run-*")))
    assert len(runs) == 2 and all(x.endswith(run_id) for x in runs)
    rows = {**history(runs[0]), **history(runs[1])}
    metrics = {json.loads(x)["step"]: json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()}
    assert sorted(rows) == [1, 2, 3, 4]
    for step, row in rows.items():  # the same scalars as TensorBoard / metrics.jsonl
        for k in ("loss", "reward/total", "kl", "grad_norm"):
            assert row[k] == pytest.approx(metrics[step][k], rel=1e-6), (step, k)
        assert row["samples/_type"] == "table-file"
    assert config_of(runs[0])["grpo"]["num_generations"] == 4
