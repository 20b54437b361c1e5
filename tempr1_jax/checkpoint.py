"""Checkpoints with orbax: async saves every K steps and on SIGTERM, keep the last N, exact resume.

A checkpoint ``<directory>/<step>/`` holds two orbax items:

- ``state``: the TrainState (params, optimizer state, step, PRNG key, skipped count); the frozen reference
  params only with ``save_ref_params=True`` (by default they are not written: they are the initial policy,
  which the run reloads from the model path, and would double the checkpoint's size);
- ``data``: JSON with the data stream's position of every process (``{"positions": [...], ...}``), so that
  each host resumes its own shard where it stopped. A position is opaque to the trainer: any JSON value
  (dicts with str keys, lists, str, numbers), numpy arrays included (restored with their dtype and shape;
  tuples come back as lists).

Orbax writes into a temporary directory and renames it when complete, so a process killed mid-save leaves
the previous checkpoint as the latest loadable one (and the debris is removed at the next start).

Typical loop (see README):

    ckpt = Checkpointer(workdir / "checkpoints", every=cfg.checkpoint.every, keep=cfg.checkpoint.keep)
    restored = ckpt.restore(trainer.abstract_state(state), ref_params=state.ref_params)
    if restored: state, data_position = restored
    with PreemptionWatcher() as preempt:
        for ...:
            state, metrics = train_step(state, batch)
            stop = preempt.requested()
            ckpt.save(state, data_position, force=stop or last_step)
            if stop: break
    ckpt.close()
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from tempr1_jax import sharding, trainer

log = logging.getLogger(__name__)


def _encode(obj: Any) -> Any:
    """JSON-able form of a data position: numpy arrays and scalars become tagged dicts (exact round trip)."""
    if isinstance(obj, np.ndarray | np.generic):
        a = np.asarray(obj)
        return {"__ndarray__": a.tolist(), "dtype": a.dtype.str, "shape": list(a.shape)}
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v) for v in obj]
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def _gather_positions(obj: Any) -> list[Any]:
    """Every process's data position (``sharding.gather_json`` of its encoded form), in process order."""
    try:
        return sharding.gather_json(_encode(obj))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"checkpoint: the data stream position must be JSON-serializable (dicts with str keys, lists, "
            f"str, numbers, numpy arrays): "
            f"{e}"
        ) from None


class Checkpointer:
    """Saves and restores (TrainState, data stream position) under ``directory``.

    Args:
      directory: where the step directories go (created if missing).
      every: ``save`` writes when step % every == 0 (or when forced).
      keep: how many checkpoints to keep (the oldest are deleted).
      async_save: write in a background thread (the device-to-host copy still happens before ``save``
        returns, so the next step may donate the state's buffers).
      save_ref_params: also write the reference params.

    Every process must make the same calls (orbax coordinates multi-host writes).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        every: int,
        keep: int,
        async_save: bool = True,
        save_ref_params: bool = False,
    ) -> None:
        if every < 1:
            raise ValueError(f"checkpoint.every={every}: must be >= 1")
        if keep < 1:
            raise ValueError(f"checkpoint.keep={keep}: must be >= 1")
        self.directory = os.path.abspath(os.fspath(directory))
        self.every = every
        self.save_ref_params = save_ref_params
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._mgr = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def save(self, state: trainer.TrainState, data_position: Any = None, *, force: bool = False) -> bool:
        """Starts saving ``state`` at ``state.step`` if it is a multiple of ``every`` or ``force``.

        Returns whether a save started. A step already saved is not saved again. Raises FloatingPointError
        (and writes nothing) if the params are not finite: a broken state never becomes a checkpoint.
        """
        step = int(jax.device_get(state.step))
        if not (force or step % self.every == 0) or step in self._mgr.all_steps():
            return False
        if not trainer.params_finite(state.params):
            raise FloatingPointError(f"checkpoint: refusing to save step {step}: the params are not finite")
        positions = _gather_positions(data_position)
        data = {
            "positions": positions,
            "process_count": jax.process_count(),
            "has_ref_params": bool(self.save_ref_params and state.ref_params is not None),
        }
        payload = state if data["has_ref_params"] else state.replace(ref_params=None)
        saved = self._mgr.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(payload), data=ocp.args.JsonSave(data)),
            force=True,
        )
        if saved:
            log.info("checkpoint: saving step %d to %s", step, self.directory)
        return bool(saved)

    def restore(
        self,
        target: trainer.TrainState,
        *,
        step: int | None = None,
        ref_params: Any = None,
    ) -> tuple[trainer.TrainState, Any] | None:
        """The latest (or ``step``'s) checkpoint as (state, this process's data position); None if none.

        ``target`` is the abstract state (``trainer.abstract_state``: shapes, dtypes, shardings) the arrays
        are restored into, resharded if the mesh changed. ``ref_params`` fills the state's reference when
        the checkpoint has none (the usual case): pass the initial policy params (or None when beta == 0).
        """
        if step is None:
            step = self._mgr.latest_step()
            if step is None:
                return None
        elif step not in self._mgr.all_steps():
            have = self.all_steps()
            raise FileNotFoundError(f"checkpoint: no step {step} in {self.directory} (have {have})")
        data = self._mgr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
        has_ref = bool(data.get("has_ref_params"))
        tgt = target if has_ref else target.replace(ref_params=None)
        restored = self._mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(tgt)))
        state = restored["state"]
        if not has_ref:
            state = state.replace(ref_params=ref_params)
        positions = [_decode(p) for p in data["positions"]]
        if len(positions) == jax.process_count():
            position = positions[jax.process_index()]
        elif all(p == positions[0] for p in positions):
            position = positions[0]
        else:
            raise ValueError(
                f"checkpoint step {step} was written by {len(positions)} processes with different data "
                f"positions; it cannot resume the data stream on {jax.process_count()} processes"
            )
        log.info("checkpoint: restored step %d from %s", step, self.directory)
        return state, position

    def restore_params(self, target: Any, *, step: int | None = None) -> tuple[Any, int]:
        """Only the policy params of the latest (or ``step``'s) checkpoint, e.g. for evaluation: the optimizer
        state is never read. ``target``: the params' abstract tree (ShapeDtypeStructs with shardings).
        Returns (params, step); raises FileNotFoundError when the directory holds no checkpoint."""
        if step is None:
            step = self._mgr.latest_step()
            if step is None:
                raise FileNotFoundError(f"checkpoint: no checkpoint in {self.directory}")
        elif step not in self._mgr.all_steps():
            raise FileNotFoundError(f"checkpoint: no step {step} in {self.directory} (have {self.all_steps()})")
        item = {"params": target}
        args = ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
        )
        restored = self._mgr.restore(step, args=ocp.args.Composite(state=args))
        log.info("checkpoint: restored the params of step %d from %s", step, self.directory)
        return restored["state"]["params"], int(step)

    def wait(self) -> None:
        """Blocks until the pending async save is on disk."""
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()


class PreemptionWatcher:
    """Turns SIGTERM (preemption) into a flag the loop polls between steps: save, then exit cleanly.

    ``requested()`` is agreed across processes (true on all as soon as one host got the signal), so every
    host saves at the same step. Use as a context manager: the previous handlers come back on exit. The
    handler is only installed from the main thread (Python's rule); elsewhere it only reads the flag.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)) -> None:
        self._flag = threading.Event()
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for s in signals:
                self._previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("received signal %d: will checkpoint and stop after this step", signum)
        self._flag.set()

    def requested(self) -> bool:
        local = self._flag.is_set()
        if jax.process_count() == 1:
            return local
        return bool(np.asarray(multihost_utils.process_allgather(np.array([local]))).any())

    def close(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def __enter__(self) -> PreemptionWatcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
