"""Training logs: log files, console progress with ETA, metrics.jsonl, TensorBoard scalars and texts, reward
breakdowns, throughput.

Host-side only (numpy and Python numbers); TensorFlow is imported lazily by ``TensorBoard`` and told to keep
off the GPUs. On several processes only process 0 prints and writes; the per-task reward breakdown is
summed over all processes first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import jax
import numpy as np
from jax.experimental import multihost_utils

from data_pipeline.schema import TASKS
from tempr1_jax import devices
from tempr1_jax.rewards import REWARD_KEYS as REWARD_COMPONENTS

REWARD_KEYS = ("total", *REWARD_COMPONENTS)  # the keys of tempr1_jax.rewards.compute_rewards

log = logging.getLogger(__name__)

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


LOGGERS = ("tempr1_jax", "data_pipeline")  # the packages whose logs go to the console and the log file


def log_file_name(process_index: int) -> str:
    """``train.log`` for process 0, ``train.process<i>.log`` for the others (one writer per file)."""
    return "train.log" if process_index == 0 else f"train.process{process_index}.log"


def setup_logging(workdir: str | None, *, process_index: int = 0) -> str | None:
    """INFO logs of this package and of the data pipeline to stderr and, with a workdir, to its log file
    (``log_file_name``); TensorFlow's start-up chatter kept out. Returns the log file's path (or None).
    Raises OSError when the workdir or the file cannot be created."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    path = None
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, log_file_name(process_index))
        handlers.append(logging.FileHandler(path))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for name in LOGGERS:
        pkg = logging.getLogger(name)
        pkg.setLevel(logging.INFO)
        pkg.propagate = False
        for h in list(pkg.handlers):
            pkg.removeHandler(h)
            if name == LOGGERS[0]:
                h.close()
        for h in handlers:
            h.setFormatter(fmt)
            pkg.addHandler(h)
    return path


class MetricsFile:
    """``metrics.jsonl``: one JSON object of scalars per logged step (``{"step": n, "time": t, ...}``), appended."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, step: int, values: Mapping[str, float]) -> None:
        row = {"step": int(step), "time": time.time()} | {k: float(v) for k, v in values.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


class CompileCounter:
    """Counts XLA compilations while active, per program: ``with CompileCounter() as c: ...``.

    ``c.count`` is the number so far, ``c.programs`` the count per program (``jit(<function name>)``) and
    ``c.recompiles`` the compilations of a program already compiled while counting (the same function with
    new shapes). A program's first compilation in this process, e.g. an evaluation sampler first used after
    a resume, is not a recompilation. Use it to check that a loop compiles once and then never again.
    """

    def __init__(self) -> None:
        self.count = 0
        self.recompiles = 0
        self.programs: dict[str, int] = {}
        self.recompiled: list[str] = []  # the program of each recompilation, in order
        self._active = False

    def _listener(self, event: str, duration: float, **kwargs: Any) -> None:
        if self._active and event == _BACKEND_COMPILE_EVENT:
            name = str(kwargs.get("fun_name", "?"))
            self.count += 1
            if name in self.programs:
                self.recompiles += 1
                self.recompiled.append(name)
            self.programs[name] = self.programs.get(name, 0) + 1

    def mark(self) -> tuple[int, int, frozenset[str]]:
        """(count, recompiles, programs seen) now: ``since(mark)`` describes what compiled after it."""
        return self.count, self.recompiles, frozenset(self.programs)

    def since(self, mark: tuple[int, int, frozenset[str]]) -> str:
        """``"0 compilations"`` or ``"N compilations (R recompilations of a program; F programs compiled for
        the first time in this process: jit(a), ...)"`` after ``mark``."""
        count, recompiles, seen = mark
        n, r = self.count - count, self.recompiles - recompiles
        if n == 0:
            return "0 compilations"
        new = sorted(set(self.programs) - seen)
        again = sorted(set(self.recompiled[len(self.recompiled) - r:])) if r else []
        return (f"{n} compilations ({r} recompilations of a program compiled before{_names(again)}; {len(new)} "
                f"programs compiled for the first time in this process{_names(new)})")

    def __enter__(self) -> CompileCounter:
        self._active = True
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._active = False
        jax.monitoring.unregister_event_duration_listener(self._listener)


def _names(names: Sequence[str], limit: int = 4) -> str:
    """``": jit(a), jit(b) and 3 more"`` (empty for no names)."""
    if not names:
        return ""
    return ": " + ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``"1:02:05"``, ``42`` -> ``"42s"``; ``"?"`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One console line per ``every`` steps: step/total, percent, seconds per step, ETA, chosen metrics.

    The speed is measured from the first ``update`` on, so the first step's compilation does not skew the
    ETA. Process 0 only: printed to ``stream`` when given, else logged (console and train.log).
    """

    def __init__(
        self,
        total_steps: int,
        *,
        start_step: int = 0,
        every: int = 1,
        keys: Sequence[str] = ("loss", "reward/mean", "kl", "clip/region", "completion_length/mean"),
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "step",
    ) -> None:
        self.unit = unit
        self.total = int(total_steps)
        self.every = max(int(every), 1)
        self.keys = tuple(keys)
        self.stream = stream
        self.clock = clock
        self._t0: float | None = None
        self._s0 = int(start_step)

    def line(self, step: int, metrics: Mapping[str, Any] | None = None) -> str:
        now = self.clock()
        if self._t0 is None:
            self._t0, self._s0 = now, step
        done = step - self._s0
        per_step = (now - self._t0) / done if done > 0 else float("nan")
        eta = per_step * (self.total - step) if done > 0 else float("nan")
        pct = 100.0 * step / self.total if self.total else 100.0
        width = len(str(self.total))
        parts = [f"{self.unit} {step:>{width}}/{self.total} {pct:5.1f}%"]
        parts.append(f"{per_step:.2f} s/{self.unit}" if done > 0 else f"-- s/{self.unit}")
        parts.append(f"ETA {format_duration(eta)}")
        for k in self.keys:
            if metrics is not None and k in metrics:
                parts.append(f"{k} {float(np.asarray(metrics[k])):.4g}")
        return " | ".join(parts)

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> str | None:
        """Prints (and returns) the line when ``step`` is a multiple of ``every`` or the last step, and
        always when the step skipped an update (``metrics["skipped"] > 0``: non-finite loss or gradients)."""
        text = self.line(step, metrics)
        skipped = (
            float(np.asarray(metrics["skipped"])) if metrics is not None and "skipped" in metrics else 0.0
        )
        if skipped > 0:
            total = float(np.asarray(metrics.get("skipped_total", skipped)))
            text += f" | SKIPPED {skipped:g} non-finite update(s) ({total:g} so far)"
            log.warning("step %d: skipped %g update(s) with a non-finite loss or gradient", step, skipped)
        if (step % self.every == 0 or step >= self.total or skipped > 0) and jax.process_index() == 0:
            if self.stream is None:
                log.info("%s", text)
            else:
                print(text, file=self.stream, flush=True)
            return text
        return None


class TensorBoard:
    """TensorBoard event files in ``logdir`` (no-op on processes other than 0).

    Written with core ``tf.summary.write`` and the scalars / text plugins' metadata, so that the
    ``tensorboard`` package is only needed to view the logs, not to write them.
    """

    def __init__(self, logdir: str | os.PathLike) -> None:
        self.logdir = os.fspath(logdir)
        self._writer = None
        if jax.process_index() != 0:
            return
        import tensorflow as tf  # lazy: heavy, and only the logging process needs it
        from tensorflow.core.framework import summary_pb2

        tf.config.set_visible_devices([], "GPU")  # TF must not take GPU memory from JAX
        self._tf = tf
        plugin = summary_pb2.SummaryMetadata.PluginData
        self._scalar_meta = summary_pb2.SummaryMetadata(
            plugin_data=plugin(plugin_name="scalars"), data_class=summary_pb2.DATA_CLASS_SCALAR
        )
        self._text_meta = summary_pb2.SummaryMetadata(
            plugin_data=plugin(plugin_name="text"), data_class=summary_pb2.DATA_CLASS_TENSOR
        )
        self._writer = tf.summary.create_file_writer(self.logdir)

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Writes each number of ``values`` (arrays of size 1 accepted) at ``step``."""
        if self._writer is None:
            return
        tf = self._tf
        with self._writer.as_default():
            for k, v in values.items():
                x = tf.constant(float(np.asarray(v).reshape(())), tf.float32)
                tf.summary.write(k, x, step=int(step), metadata=self._scalar_meta)

    def text(self, step: int, name: str, markdown: str) -> None:
        if self._writer is None:
            return
        tf = self._tf
        with self._writer.as_default():
            tf.summary.write(name, tf.constant(markdown), step=int(step), metadata=self._text_meta)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Wandb:
    """A Weights & Biases run (``logging.wandb``; only process 0 logs): the same scalars as TensorBoard, sample
    completions as tables, the config as the run config. The run id is kept in ``<workdir>/wandb_run_id``, so a
    resumed run attaches to the same wandb run. wandb is an optional extra, imported here only:
    ``pip install -e '.[wandb]'``. ``WANDB_MODE=offline`` writes the run under ``<workdir>/wandb/`` only."""

    ID_FILE = "wandb_run_id"

    def __init__(self, workdir: str, config: Mapping[str, Any], *, project: str, entity: str = "", name: str = "",
                 tags: Sequence[str] = ()) -> None:
        self._run = None
        if jax.process_index() != 0:
            return
        try:
            import wandb
        except ImportError:
            raise ValueError(f"config.logging.wandb.project={project!r}: wandb is not installed; install the "
                             "optional extra: pip install -e '.[wandb]'") from None
        self._wandb = wandb
        id_file = os.path.join(workdir, self.ID_FILE)
        if os.path.isfile(id_file):
            with open(id_file, encoding="utf-8") as f:
                run_id = f.read().strip()
        else:
            run_id = secrets.token_hex(4)  # wandb run ids: lowercase letters and digits
            with open(id_file, "w", encoding="utf-8") as f:
                f.write(run_id + "\n")
        self._run = wandb.init(project=project, entity=entity or None, name=name or None, tags=list(tags) or None,
                               config=dict(config), id=run_id, resume="allow", dir=workdir)
        log.info("wandb run %s (project %s), id in %s", run_id, project, id_file)

    @property
    def run_id(self) -> str | None:
        return None if self._run is None else self._run.id

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        if self._run is not None:
            self._run.log({k: float(np.asarray(v).reshape(())) for k, v in values.items()}, step=int(step))

    def table(self, step: int, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self._run is not None:
            self._run.log({name: self._wandb.Table(columns=list(columns), data=[list(r) for r in rows])},
                          step=int(step))

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


class Writers:
    """TensorBoard and / or wandb behind one interface: what the loop and the evaluation write (either may be
    None; the loop holds no writer at all when both are off)."""

    def __init__(self, tensorboard: TensorBoard | None = None, wandb: Wandb | None = None) -> None:
        self.tensorboard, self.wandb = tensorboard, wandb

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        for w in (self.tensorboard, self.wandb):
            if w is not None:
                w.scalars(step, values)

    def samples(self, step: int, completions: Sequence[str], tasks: Sequence[str], rewards: Mapping[str, Any],
                ids: Sequence[str], *, num: int, max_chars: int) -> None:
        """The first ``num`` completions of a step: a markdown table in TensorBoard, a table in wandb."""
        if self.tensorboard is not None:
            self.tensorboard.text(step, "samples", samples_markdown(completions, tasks, rewards, ids, num=num,
                                                                    max_chars=max_chars))
        if self.wandb is not None:
            self.wandb.table(step, "samples", *sample_rows(completions, tasks, rewards, ids, num=num,
                                                             max_chars=max_chars))

    def close(self) -> None:
        for w in (self.tensorboard, self.wandb):
            if w is not None:
                w.close()


def open_writers(workdir: str, cfg: Any) -> Writers | None:
    """The writers of ``config.logging``: TensorBoard under ``<workdir>/tensorboard`` (``logging.tensorboard``),
    wandb when ``logging.wandb.project`` is set; None when neither is on."""
    c = cfg.logging
    tb = TensorBoard(os.path.join(workdir, "tensorboard")) if c.tensorboard else None
    w = c.get("wandb")
    wb = None
    if w is not None and w.project:
        wb = Wandb(workdir, cfg.to_dict(), project=w.project, entity=w.entity, name=w.name, tags=tuple(w.tags))
    return Writers(tb, wb) if tb is not None or wb is not None else None


def reward_scalars(
    rewards: Mapping[str, Any],
    tasks: Sequence[str],
    valid: Any = None,
    *,
    prefix: str = "reward",
) -> dict[str, float]:
    """Mean reward components overall and per task, over every process's rows.

    Args:
      rewards: ``tempr1_jax.rewards.compute_rewards`` output: name -> [B] array (total, format,
        localization, answer; other keys are kept too).
      tasks: the task id of each of the B rows.
      valid: optional [B] bool, false for batch-padding rows.

    Returns ``{f"{prefix}/{key}": mean, f"{prefix}/{task}/{key}": mean, f"{prefix}/{task}/count": n}`` for
    the tasks present (over all processes).
    """
    keys = sorted(rewards)
    arr = np.stack([np.asarray(rewards[k], np.float64).reshape(-1) for k in keys], 1)  # [B, K]
    B = arr.shape[0]
    if len(tasks) != B:
        raise ValueError(f"reward_scalars: {len(tasks)} task ids for {B} rewards")
    ok = np.ones(B, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
    idx = np.empty(B, np.int64)
    for i, t in enumerate(tasks):
        if t not in TASKS:
            raise ValueError(f"reward_scalars: unknown task {t!r} in row {i}; tasks are {TASKS}")
        idx[i] = TASKS.index(t)
    sums = np.zeros((len(TASKS), len(keys)))
    counts = np.zeros(len(TASKS))
    np.add.at(sums, idx[ok], arr[ok])
    np.add.at(counts, idx[ok], 1)
    if jax.process_count() > 1:
        sums = np.asarray(multihost_utils.process_allgather(sums)).sum(0)
        counts = np.asarray(multihost_utils.process_allgather(counts)).sum(0)
    out: dict[str, float] = {}
    total = counts.sum()
    for j, k in enumerate(keys):
        out[f"{prefix}/{k}"] = float(sums[:, j].sum() / total) if total else 0.0
    for t, task in enumerate(TASKS):
        if counts[t]:
            out[f"{prefix}/{task}/count"] = float(counts[t])
            for j, k in enumerate(keys):
                out[f"{prefix}/{task}/{k}"] = float(sums[t, j] / counts[t])
    return out


def _cell(text: str, limit: int) -> str:
    text = text if len(text) <= limit else text[:limit] + " [...]"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def sample_rows(
    completions: Sequence[str],
    tasks: Sequence[str],
    rewards: Mapping[str, Any],
    ids: Sequence[str] | None = None,
    *,
    num: int = 4,
    max_chars: int | None = 600,
) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of the first ``num`` completions: id, task, each reward component (float), the completion
    (cut to ``max_chars`` characters; None: whole)."""
    keys = [k for k in REWARD_KEYS if k in rewards] + sorted(set(rewards) - set(REWARD_KEYS))
    rows = []
    for i in range(min(num, len(completions))):
        text = completions[i]
        if max_chars is not None and len(text) > max_chars:
            text = text[:max_chars] + " [...]"
        rows.append([str(ids[i] if ids is not None else i), str(tasks[i]),
                     *(float(np.asarray(rewards[k]).reshape(-1)[i]) for k in keys), text])
    return ["id", "task", *keys, "completion"], rows


def samples_markdown(
    completions: Sequence[str],
    tasks: Sequence[str],
    rewards: Mapping[str, Any],
    ids: Sequence[str] | None = None,
    *,
    num: int = 4,
    max_chars: int = 600,
) -> str:
    """A markdown table of the first ``num`` completions with their task, id and reward components, for
    ``TensorBoard.text`` (completions are untrusted text: pipes and newlines are escaped, long ones cut)."""
    head, table = sample_rows(completions, tasks, rewards, ids, num=num, max_chars=None)  # _cell cuts them
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rid, task, *vals, text in table:
        cells = [_cell(rid, 80), _cell(task, 16), *(f"{v:.3f}" for v in vals), _cell(text, max_chars)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def peak_flops(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device of this kind (``tempr1_jax.devices``' table), or None when unknown
    (then MFU is not logged)."""
    return devices.peak_bf16_flops(device_kind)


def throughput(
    tokens: float,
    seconds: float,
    *,
    flops: float | None = None,
    num_devices: int | None = None,
    device_kind: str | None = None,
) -> dict[str, float]:
    """tokens/s, and MFU = flops / (seconds * devices * peak) when the model FLOPs and the peak are known."""
    out = {"tokens_per_sec": tokens / seconds if seconds > 0 else 0.0, "step_time": float(seconds)}
    kind = jax.devices()[0].device_kind if device_kind is None else device_kind
    peak = peak_flops(kind)
    if flops is not None and peak is not None and seconds > 0:
        n = jax.device_count() if num_devices is None else num_devices
        out["mfu"] = flops / (seconds * n * peak)
    return out
