"""Before the first step: the run's saved config, the inputs it will read, the mixture it will train on.

    saved = check_resume(cfg, workdir)        # the config a resumed run saved; refuses what must not change
    save_run_config(cfg, workdir)             # <workdir>/config.py (a config file) + config.json
    check_inputs(cfg, training=True)          # every file the run will read: all the missing ones at once
    log_mixture(stream, prompts_per_step)     # samples per task and per source, their share of a step
    check_resumed_step(cfg, saved, step, total_steps, workdir)   # after the restore: steps and schedule

What may differ on resume (logged): ``RESUME_FREE`` (how long, how often, where and how fast the run goes;
``train.total_steps`` only without a change of the learning-rate schedule, or with
``train.allow_schedule_change``); paths (``RESUME_PATHS``, a warning: the data stream checks by fingerprint
that it is the same data, the model directory is not checked); everything else (the objective, optimizer,
model, data, rollout, rewards, seed) changes what the run computes and is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from data_pipeline import fileio, records
from data_pipeline import stream as data_stream
from tempr1_jax import checkpoint, configlib, trainer

log = logging.getLogger(__name__)

RESUME_FREE = (
    "train.total_steps", "train.steps_per_run", "train.max_consecutive_skips", "train.allow_schedule_change",
    "logging.", "checkpoint.every", "checkpoint.keep", "checkpoint.async_save", "eval.", "distributed.", "mesh.",
    "data.num_parallel_calls", "data.prefetch_batches", "model.attention_chunk", "model.attention_impl",
    "model.remat", "model.logprob_chunk",
)  # fmt: skip
RESUME_PATHS = ("data.samples", "data.frames", "data.tokenizer", "model.path", "synthetic.dir")


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping) and v:
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def config_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) of every leaf that differs (``"<absent>"`` for a missing key)."""
    a, b = _flat(saved), _flat(now)
    return [
        (k, a.get(k, "<absent>"), b.get(k, "<absent>"))
        for k in sorted(set(a) | set(b))
        if a.get(k, "<absent>") != b.get(k, "<absent>")
    ]


def check_resume(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
    """When ``workdir`` holds checkpoints, compares ``cfg`` with the config the run saved (``config.json``);
    raises ValueError listing every key that must not change on resume, logs the others. Returns the saved
    config (a dict) or None (a fresh start, or a run saved before configs were)."""
    steps = checkpoint.saved_steps(os.path.join(workdir, "checkpoints"))
    if not steps:
        return None
    saved = configlib.read_run_config(workdir)
    if saved is None:
        log.warning(
            "resuming %s without a saved config (%s: written by runs since it exists): not checked",
            workdir,
            configlib.RUN_CONFIG_JSON,
        )
        return None
    diffs = config_differences(saved, json.loads(cfg.to_json()))
    refused = [d for d in diffs if not _matches(d[0], RESUME_FREE + RESUME_PATHS) and d[1] != "<absent>"]
    if refused:
        listed = "; ".join(f"config.{k}: saved {a!r}, now {b!r}" for k, a, b in refused)
        raise ValueError(
            f"resuming {workdir} (checkpoints up to step {max(steps)}) with a config that changes what the run "
            f"computes: {listed}; resume with the saved values ({os.path.join(workdir, configlib.RUN_CONFIG)}) or "
            "start a new --workdir (what may change on resume: docs/training.md)"
        )
    for k, a, b in diffs:
        if _matches(k, RESUME_PATHS):
            log.warning(
                "resuming with config.%s changed: saved %r, now %r (the same data and model is assumed)", k, a, b
            )
        elif k != "train.total_steps":  # checked with the schedule after the restore
            log.info("resuming with config.%s changed: saved %r, now %r", k, a, b)
    return saved


def warn_policy_changes(cfg: ml_collections.ConfigDict, run_config: Mapping[str, Any] | None) -> None:
    """One warning listing what ``cfg`` changes against a run's saved config in what the policy sees (the
    model and data blocks: pixel budgets, frame rate, prompts...), for an evaluation with another config."""
    if not run_config:
        return
    diffs = [
        d
        for d in config_differences(run_config, json.loads(cfg.to_json()))
        if d[0].split(".")[0] in ("model", "data") and not _matches(d[0], RESUME_FREE)
    ]
    if diffs:
        log.warning(
            "the config differs from the run's saved config in what the policy sees: %s",
            "; ".join(f"config.{k}: saved {a!r}, now {b!r}" for k, a, b in diffs),
        )


def save_run_config(cfg: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes ``<workdir>/config.py`` and ``config.json`` (process 0; every process calls it, after its own
    ``check_resume``: the processes wait for each other first, so that none reads the new file as the saved one)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("preflight: saved config read")
    if jax.process_index() == 0:
        log.info("config: %s (and %s)", configlib.write_run_config(cfg, workdir), configlib.RUN_CONFIG_JSON)


def total_steps(cfg: ml_collections.ConfigDict, num_samples: int) -> int:
    """``train.total_steps``, or ``train.num_epochs`` passes over ``num_samples`` samples."""
    if cfg.train.total_steps:
        return int(cfg.train.total_steps)
    return max(1, math.ceil(cfg.train.num_epochs * num_samples / int(cfg.train.prompts_per_step)))


def check_resumed_step(
    cfg: ml_collections.ConfigDict,
    saved: Mapping[str, Any] | None,
    step: int,
    total: int,
    num_samples: int,
    workdir: str,
) -> None:
    """After a restore at ``step``: refuses a ``total`` below it, and a total that changes the learning-rate
    schedule of the saved run unless ``train.allow_schedule_change`` (then a warning with both rates)."""
    if step > total:
        raise ValueError(
            f"config.train.total_steps={total}, but the checkpoint restored from {workdir} is at step {step}: "
            f"nothing to train (give total_steps >= {step}; evaluate or export the checkpoint as it is)"
        )
    if saved is None:
        return
    old_cfg = ml_collections.ConfigDict(saved)
    old = total_steps(old_cfg, num_samples)
    if old == total:
        return
    mu, o = int(cfg.grpo.num_iterations), cfg.optimizer
    sched_old, sched_new = (
        trainer.make_schedule(
            float(o.learning_rate),
            t * mu,
            warmup_steps=int(o.warmup_steps),
            decay=str(o.decay),
            end_factor=float(o.end_factor),
        )
        for t in (old, total)
    )
    probe = sorted({step * mu, (step + 1) * mu - 1, min(old, total) * mu - 1})
    lr_old, lr_new = float(sched_old(step * mu)), float(sched_new(step * mu))
    if all(float(sched_old(s)) == float(sched_new(s)) for s in probe):
        log.info(
            "train.total_steps %d -> %d: the learning-rate schedule (%s) does not change",
            old,
            total,
            cfg.optimizer.decay,
        )
        return
    msg = (
        f"config.train.total_steps={total} changes the learning-rate schedule of the saved run "
        f"({old} steps, optimizer.decay={cfg.optimizer.decay!r}): lr at step {step + 1} {lr_old:.4g} -> {lr_new:.4g}"
    )
    if not cfg.train.get("allow_schedule_change", False):
        raise ValueError(
            f"{msg}; give --config.train.allow_schedule_change=True to resume with the new schedule, "
            f"or train.total_steps={old}"
        )
    log.warning("%s (train.allow_schedule_change=True)", msg)


def check_inputs(cfg: ml_collections.ConfigDict, *, training: bool) -> None:
    """Every file the run will read exists: the samples (training only) and the held-out samples, the frames
    index, the tokenizer and the model directory. Raises FileNotFoundError naming all the missing ones."""
    problems: list[str] = []
    d = cfg.data
    files = [(f"config.data.samples[{i}]", p) for i, p in enumerate(d.samples)] if training and not d.tfds_name else []
    files += [(f"config.eval.samples[{i}]", p) for i, p in enumerate(cfg.eval.samples)]
    for i, (key, path) in enumerate(files):
        if (key.split("[")[0], path) in [(k.split("[")[0], p) for k, p in files[:i]]:
            problems.append(f"{key} {path}: listed twice")
        elif not fileio.exists(path):
            problems.append(f"{key} {path}: no such file")
    if not d.tfds_name and (files or training):
        if not d.frames:
            problems.append("config.data.frames is empty (the extract_frames output directory)")
        elif not fileio.exists(d.frames):
            problems.append(f"config.data.frames {d.frames}: no such directory (run data_pipeline.extract_frames)")
        elif not fileio.glob(fileio.join(d.frames, "*" + records.INDEX_SUFFIX)):
            problems.append(
                f"config.data.frames {d.frames}: no *{records.INDEX_SUFFIX} (run data_pipeline.extract_frames)"
            )
    m = cfg.model.path
    if m and not os.path.isfile(os.path.join(m, "config.json")):
        problems.append(f"config.model.path {m}: " + ("no config.json" if os.path.isdir(m) else "no such directory"))
    elif m and not any(n.endswith(".safetensors") for n in os.listdir(m)):
        problems.append(f"config.model.path {m}: no *.safetensors")
    tok, key = (d.tokenizer, "config.data.tokenizer") if d.tokenizer else (m, "config.model.path")
    if not tok:
        problems.append("config.data.tokenizer and config.model.path are both empty: no tokenizer")
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
    if tok and os.path.isdir(tok) and not any(os.path.isfile(os.path.join(tok, n)) for n in names):
        problems.append(f"{key} {tok}: no tokenizer files ({', '.join(names)})")
    elif tok and tok != m and not os.path.isdir(tok):
        problems.append(f"{key} {tok}: no such directory")
    if problems:
        raise FileNotFoundError(
            f"{len(problems)} input(s) of the run are missing or wrong (checked before the "
            f"first step): " + "; ".join(problems)
        )


def log_mixture(stream: data_stream.Stream, prompts_per_step: int, *, key: str = "config.data.samples") -> None:
    """Logs per task and per source the samples in the stream and their expected share of a step's prompts;
    warns about a source none of whose samples made it into the stream."""
    m = stream.mixture()
    n = int(prompts_per_step)
    weighted = stream.weights is not None
    tasks = ", ".join(
        f"{t} {v['samples']} ({100 * v['share']:.1f}%, {n * v['share']:.2f} prompts)" for t, v in m["tasks"].items()
    )
    log.info(
        "training mixture (%s; share of the %d prompts of a step): %d samples: %s",
        "config.data.task_weights" if weighted else "natural proportions",
        n,
        stream.num_samples,
        tasks,
    )
    for i, s in enumerate(m["sources"]):
        log.info(
            "  %s[%d] %s: %d of %d samples (%s), %.1f%% of a step",
            key,
            i,
            s["path"],
            s["samples"],
            s["read"],
            ", ".join(s["tasks"]) or "-",
            100 * s["share"],
        )
        if not s["samples"]:
            log.warning(
                "%s[%d] %s: none of its %d samples is in the stream (their videos are missing from the "
                "frames index, or skipped): it contributes nothing to training",
                key,
                i,
                s["path"],
                s["read"],
            )


def check_workdir(path: str) -> str:
    """The absolute path of a usable workdir, created if missing. Raises ValueError for a URL (``gs://...``:
    the run writes its logs, metrics and write probes with local file I/O; mount a bucket with gcsfuse) and
    OSError naming the path when it cannot be created or written (read-only, a path through a regular file)."""
    if "://" in path:
        raise ValueError(
            f"--workdir {path}: a workdir must be a local or mounted directory, not a URL (mount a "
            "bucket with gcsfuse and give its mount point: docs/tpu_vm.md)"
        )
    workdir = os.path.abspath(path)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise OSError(f"--workdir {path}: a file, not a directory")
    probe = os.path.join(workdir, f".write-probe-{os.getpid()}")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OSError(
            f"--workdir {path}: cannot create or write it ({type(e).__name__}: {reason}"
            f"{': ' + e.filename if e.filename and e.filename != probe else ''})"
        ) from None
    return workdir
