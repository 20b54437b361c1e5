"""Checkpoints with orbax: async saves every K steps and on SIGTERM / SIGINT, keep the last N, exact resume, verified
reads.

A checkpoint ``<directory>/<step>/`` holds two orbax items:

- ``state``: the TrainState (params, optimizer state, step, PRNG key, skipped count); the frozen reference
  params only with ``save_ref_params=True`` (by default they are not written: they are the initial policy,
  which the run reloads from the model path, and would double the checkpoint's size);
- ``data``: JSON with the data stream's position of every process (``{"positions": [...], ...}``), so that
  each host resumes its own shard where it stopped, and a checksum of every array of ``state``
  (``"checksums"``, see ``array_checksums``). A position is opaque to the trainer: any JSON value (dicts
  with str keys, lists, str, numbers), numpy arrays included (restored with their dtype and shape; tuples
  come back as lists).

Orbax writes into a temporary directory and renames it when complete, so a process killed mid-save leaves
the previous checkpoint as the latest loadable one (and the debris is removed at the next start). What orbax
does not catch, this module does:

- corrupt array data (orbax's zarr/OCDBT files checksum their indexes, not the values): every restored array
  is checksummed on device and compared with the checksum taken when it was saved, and must be finite;
- a broken latest step (truncated files, an empty directory, no ``data`` item, a failed check): ``restore``
  falls back to the newest step that restores and verifies, with one warning per skipped step, and raises
  ``CheckpointReadError`` when step directories exist but none does (never "start from scratch");
- a failed write (read-only or full disk, a path through a file): ``save`` / ``wait`` / ``close`` raise
  ``CheckpointWriteError`` with one line, the partial step is removed, earlier steps stay, nothing hangs.

Typical loop (see docs/grpo.md):

    ckpt = Checkpointer(workdir / "checkpoints", every=cfg.checkpoint.every, keep=cfg.checkpoint.keep)
    restored = ckpt.restore(trainer.abstract_state(state), ref_params=state.ref_params)
    if restored: state, data_position = restored  # state.step: the step used
    ckpt.check_state(state)  # compiles the save-time checks outside the loop
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
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from tempr1_jax import sharding, trainer

log = logging.getLogger(__name__)

CHECKSUM_ALGORITHM = "pos-sum32+fmix32-sum32"  # see _leaf_check; recorded in each checkpoint


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (one-line message naming the directory and the OS error)."""


class CheckpointReadError(ValueError):
    """No step directory restores and verifies, or the requested one does not (one line, naming it)."""


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or repr(e)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}"


def _all_processes(ok: bool) -> bool:
    """True on every process when ``ok`` on all of them (every process must call it at the same point)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.asarray(multihost_utils.process_allgather(np.array([ok]))).all())


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


# ----------------------------------------------------------------------------------------------------------
# Checksums: a 64-bit fingerprint of every array, computed on device (one fused reduction per array)
# ----------------------------------------------------------------------------------------------------------


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer (every input bit flips each output bit with probability ~1/2)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _bits(x: jax.Array) -> jax.Array:
    """The array's raw bits as uint32, one value per element (a trailing dim of 2 for 64-bit dtypes)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)


def _leaf_check(x: jax.Array) -> jax.Array:
    """uint32 [3]: two checksums of ``x``'s bits and whether it is finite, in one pass over ``x``.

    h1 = sum_i bits_i * (2 i + 1) and h2 = sum_i fmix32(bits_i ^ i * golden), mod 2^32, i the row-major
    position. Sums mod 2^32 are exact in any order, so the result does not depend on the sharding or the mesh
    (a checkpoint restored on another mesh checks the same), and the sums are one reduction over the array's
    shards with no reshape (no resharding). h1 changes whenever one element changes (2 i + 1 is odd); h2,
    nonlinear, catches what cancels in h1 (e.g. two flipped sign bits). One variadic reduction: on CPU 50x
    faster than three separate ones, which XLA does not fuse.
    """
    u = _bits(x)
    idx, stride = jnp.zeros(u.shape, jnp.uint32), 1
    for d in reversed(range(u.ndim)):
        idx = idx + jax.lax.broadcasted_iota(jnp.uint32, u.shape, d) * jnp.uint32(stride)
        stride = (stride * u.shape[d]) % (1 << 32)
    h1 = u * (idx * jnp.uint32(2) + jnp.uint32(1))
    h2 = _fmix32(u ^ (idx * jnp.uint32(0x9E3779B9)))
    if jnp.issubdtype(x.dtype, jnp.inexact):
        finite = jnp.isfinite(x).reshape(x.shape + (1,) * (u.ndim - x.ndim))
        finite = jnp.broadcast_to(finite, u.shape).astype(jnp.uint32)
    else:
        finite = jnp.ones(u.shape, jnp.uint32)
    zero, one = jnp.uint32(0), jnp.uint32(1)
    out = jax.lax.reduce(
        (h1, h2, finite), (zero, zero, one), lambda a, b: (a[0] + b[0], a[1] + b[1], a[2] & b[2]), tuple(range(u.ndim))
    )
    return jnp.stack(out)


@jax.jit
def _checks(leaves: list[jax.Array]) -> jax.Array:
    return jnp.stack([_leaf_check(x) for x in leaves]) if leaves else jnp.zeros((0, 3), jnp.uint32)


def _path(keys: tuple) -> str:
    names = [getattr(k, "name", getattr(k, "key", getattr(k, "idx", None))) for k in keys]
    return "/".join(str(k) for k in names)


def array_checksums(tree: Any) -> dict[str, dict[str, Any]]:
    """``{"params/mlp/w1": {"dtype", "shape", "hash": 16 hex digits, "finite": bool}, ...}`` of a pytree.

    One jitted call (compiled once per tree structure, shapes and shardings) and one small device -> host
    copy; with several processes every process must call it (the reductions span the mesh) and all get the
    same result.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    got = np.asarray(_checks([x for _, x in flat]))
    return {
        _path(k): {
            "dtype": str(x.dtype),
            "shape": list(x.shape),
            "hash": f"{int(c[0]):08x}{int(c[1]):08x}",
            "finite": bool(c[2]),
        }
        for (k, x), c in zip(flat, got, strict=True)
    }


def _verify(checks: dict[str, dict[str, Any]], saved: dict[str, Any] | None) -> str | None:
    """Why restored arrays (``checks``: ``array_checksums``) fail against the saved checksums, or None."""
    if saved is not None:
        if saved.get("algorithm") != CHECKSUM_ALGORITHM:
            return f"unknown checksum algorithm {saved.get('algorithm')!r} (expected {CHECKSUM_ALGORITHM!r})"
        arrays = saved["arrays"]
        for path, c in checks.items():
            if path not in arrays:
                return f"{path} has no saved checksum"
            if arrays[path]["hash"] != c["hash"]:
                return (f"{path}: checksum mismatch (saved {arrays[path]['hash']}, read {c['hash']}): "
                        f"the array data on disk is corrupt")  # fmt: skip
    bad = [p for p, c in checks.items() if not c["finite"]]
    if not bad:
        return None
    return f"{bad[0]} is not finite (NaN or Inf)" + (f" (and {len(bad) - 1} more arrays)" if len(bad) > 1 else "")


def _with_dtypes(target: Any, saved: dict[str, Any] | None, prefix: str = "") -> Any:
    """``target`` (ShapeDtypeStructs) with each leaf's dtype as it was saved (restore those bits, check them,
    then cast: a checksum is of the saved bits)."""
    if saved is None:
        return target
    arrays = saved["arrays"]

    def one(keys: tuple, x: Any) -> Any:
        rec = arrays.get(prefix + _path(keys))
        if rec is None or not isinstance(x, jax.ShapeDtypeStruct) or str(x.dtype) == rec["dtype"]:
            return x
        return jax.ShapeDtypeStruct(x.shape, jnp.dtype(rec["dtype"]), sharding=x.sharding)

    return jax.tree_util.tree_map_with_path(one, target)


def _cast_like(tree: Any, target: Any) -> Any:
    return jax.tree.map(lambda x, t: x if x.dtype == t.dtype else x.astype(t.dtype), tree, target)


# ----------------------------------------------------------------------------------------------------------
# The checkpointer
# ----------------------------------------------------------------------------------------------------------


class Checkpointer:
    """Saves and restores (TrainState, data stream position) under ``directory``.

    Args:
      directory: where the step directories go (created if missing).
      every: ``save`` writes when step % every == 0 (or when forced).
      keep: how many checkpoints to keep (the oldest are deleted).
      async_save: write in a background thread (the device-to-host copy still happens before ``save``
        returns, so the next step may donate the state's buffers).
      save_ref_params: also write the reference params.
      read_only: only restore (evaluation): nothing in ``directory`` is created, cleaned or renamed.

    Every process must make the same calls (orbax coordinates multi-host writes; the checks and the choice
    of the step to restore are agreed across processes). After a ``CheckpointWriteError`` the checkpointer is
    closed: ``save`` / ``wait`` raise the same error again, ``close`` returns.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        every: int,
        keep: int,
        async_save: bool = True,
        save_ref_params: bool = False,
        read_only: bool = False,
    ) -> None:
        if every < 1:
            raise ValueError(f"checkpoint.every={every}: must be >= 1")
        if keep < 1:
            raise ValueError(f"checkpoint.keep={keep}: must be >= 1")
        self.directory = os.path.abspath(os.fspath(directory))
        self.every = every
        self.save_ref_params = save_ref_params
        self.read_only = read_only
        self._async = async_save
        self._pending: int | None = None  # the step of the async save in flight
        self._failure: str | None = None  # the message of the write failure that closed this checkpointer
        self._closed = False
        self._unreadable: set[int] = set()  # steps restore skipped: set aside at the next save
        self._no_checksums_warned = False
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only,
            # Step directories are made in save() itself: a failure raises there, instead of leaving orbax's
            # writer threads waiting 20 minutes for a "directory created" signal that never comes.
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
        )
        try:
            self._mgr = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))
        except OSError as e:
            raise CheckpointWriteError(f"checkpoint: cannot use {self.directory}: {_one_line(e)}") from e

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    # -- saving ----------------------------------------------------------------------------------------------

    def _payload(self, state: trainer.TrainState) -> tuple[trainer.TrainState, bool]:
        has_ref = bool(self.save_ref_params and state.ref_params is not None)
        return (state if has_ref else state.replace(ref_params=None)), has_ref

    def check_state(self, state: trainer.TrainState) -> dict[str, dict[str, Any]]:
        """The checksums ``save`` would record for ``state``; raises FloatingPointError naming the first
        array that is not finite. Call it once before the loop: it compiles the check for the state's shapes
        and shardings, so the first save in the loop compiles nothing."""
        checks = array_checksums(self._payload(state)[0])
        bad = _verify(checks, None)
        if bad is not None:
            step = int(jax.device_get(state.step))
            raise FloatingPointError(f"checkpoint: refusing to save step {step}: {bad}")
        return checks

    def save(self, state: trainer.TrainState, data_position: Any = None, *, force: bool = False) -> bool:
        """Starts saving ``state`` at ``state.step`` if it is a multiple of ``every`` or ``force``.

        Returns whether a save started. A step already saved is not saved again. Raises FloatingPointError
        (and writes nothing) if an array is not finite: a broken state never becomes a checkpoint. Raises
        CheckpointWriteError if this save (or the previous async one) cannot be written.
        """
        if self._failure is not None:
            raise CheckpointWriteError(self._failure)
        if self.read_only:
            raise ValueError(f"checkpoint: {self.directory} was opened read-only")
        step = int(jax.device_get(state.step))
        if not (force or step % self.every == 0):
            return False
        if step in self._mgr.all_steps() and step not in self._unreadable:
            return False
        checks = self.check_state(state)
        positions = _gather_positions(data_position)
        self._check_writable(step)
        self._set_aside_unreadable(step)
        payload, has_ref = self._payload(state)
        data = {
            "positions": positions,
            "process_count": jax.process_count(),
            "has_ref_params": has_ref,
            "checksums": {
                "algorithm": CHECKSUM_ALGORITHM,
                "arrays": {p: {k: c[k] for k in ("dtype", "shape", "hash")} for p, c in checks.items()},
            },
        }
        args = ocp.args.Composite(state=ocp.args.StandardSave(payload), data=ocp.args.JsonSave(data))
        self.wait()  # the previous async save: its failure is its own
        try:
            saved = self._mgr.save(step, args=args, force=True)
        except Exception as e:
            self._fail(step, e)
        self._pending = step if saved and self._async else None
        if saved:
            log.info("checkpoint: saving step %d to %s", step, self.directory)
        return bool(saved)

    def _check_writable(self, step: int) -> None:
        """Creates and removes a probe file on every process: an unwritable directory fails here, on every
        process at once, before orbax starts (whose threads would wait for each other)."""
        probe = os.path.join(self.directory, f".write-probe-{jax.process_index()}")
        error = None
        try:
            os.makedirs(self.directory, exist_ok=True)
            with open(probe, "wb") as f:
                f.write(b"\0")
        except OSError as e:
            error = e
        try:
            os.remove(probe)
        except OSError:
            pass
        if not _all_processes(error is None):
            self._fail(step, error if error is not None else OSError("another process cannot write there"))

    def _set_aside_unreadable(self, step: int) -> None:
        """Renames the step directories ``restore`` could not use to ``<step>.unreadable`` (kept for a look,
        ignored by orbax): they must not count as kept checkpoints nor block a new save of their step."""
        if not self._unreadable:
            return
        if jax.process_index() == 0:
            for s in sorted(self._unreadable):
                src, dst, n = self.step_dir(s), self.step_dir(s) + ".unreadable", 1
                while os.path.exists(dst):
                    dst, n = f"{self.step_dir(s)}.unreadable.{n}", n + 1
                if os.path.isdir(src):
                    os.rename(src, dst)
                    log.warning("checkpoint: moved the unreadable step directory %s to %s", src, dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint: set aside unreadable steps before {step}")
        self._unreadable.clear()
        self._mgr.reload()

    def _fail(self, step: int | None, error: BaseException) -> NoReturn:
        """Closes orbax (a pending save still finishes), removes the partial ``<step>.orbax-checkpoint-tmp*``,
        then raises CheckpointWriteError; this checkpointer raises it again on every save / wait."""
        try:
            self._mgr.close()
        except Exception:  # the same failure, raised again by orbax
            pass
        self._closed = True
        _join_orbax_threads(timeout_s=10.0)
        removed = _remove_partial(self.directory, step) if step is not None else []
        steps = _complete_steps(self.directory)
        what = f"step {step}" if step is not None else "the pending save"
        msg = f"checkpoint: cannot write {what} to {self.directory}: {_one_line(error)}"
        msg += f"; removed the partial {', '.join(removed)}" if removed else ""
        msg += f"; the latest checkpoint is step {steps[-1]}" if steps else "; there is no earlier checkpoint"
        self._failure = msg
        raise CheckpointWriteError(msg) from error

    def wait(self) -> None:
        """Blocks until the pending async save is on disk; raises CheckpointWriteError if it failed."""
        if self._failure is not None:
            raise CheckpointWriteError(self._failure)
        try:
            self._mgr.wait_until_finished()
        except Exception as e:
            self._fail(self._pending, e)
        self._pending = None

    def close(self) -> None:
        """Waits for the pending save (raises CheckpointWriteError if it failed) and releases orbax."""
        if self._closed:
            return
        self.wait()
        self._closed = True
        self._mgr.close()

    # -- restoring -------------------------------------------------------------------------------------------

    def _candidates(self, step: int | None) -> list[int]:
        have = self.all_steps()
        if step is None:
            return sorted(have, reverse=True)
        if step not in have:
            raise FileNotFoundError(f"checkpoint: no step {step} in {self.directory} (have {have})")
        return [step]

    def _read_item(self, step: int, name: str, handler: Any, args: Any) -> Any:
        """One item of a step through its orbax handler. Not through the manager: its restore ends with a
        barrier that a process whose read failed would skip, and the processes' collectives would then no
        longer match; the processes agree on the outcome afterwards instead (``_first_good``)."""
        path = os.path.join(self.step_dir(step), name)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no {name!r} item in {self.step_dir(step)}")
        try:
            return handler.restore(epath.Path(path), args=args)
        finally:
            handler.close()

    def _read_data(self, step: int) -> dict[str, Any]:
        data = self._read_item(step, "data", ocp.JsonCheckpointHandler(), ocp.args.JsonRestore())
        if not isinstance(data, dict) or "positions" not in data:
            raise ValueError("its data item holds no data stream positions")
        return data

    def _first_good(self, steps: list[int], load: Callable[[int, dict[str, Any]], Any],
                    explicit: bool) -> tuple[Any, dict[str, Any], int]:  # fmt: skip
        """(tree, data, step) of the newest of ``steps`` whose data item and arrays load on every process and
        verify; one warning per skipped step; CheckpointReadError if none does (or ``explicit`` and it fails).

        ``load(step, data)`` restores the arrays; their checksums are compared with the data item's."""
        skipped, first = [], ""
        for s in steps:
            got, reason = None, None
            for phase in ("data", "arrays"):
                try:
                    got = self._read_data(s) if phase == "data" else (load(s, got), got)
                except Exception as e:
                    what = "its data item does" if phase == "data" else "its arrays do"
                    reason = f"{what} not restore: {_one_line(e)}"
                if not _all_processes(reason is None):
                    reason = reason or "another process could not restore it"
                    break
            if reason is None:
                tree, data = got
                if data.get("checksums") is None and not self._no_checksums_warned:
                    self._no_checksums_warned = True
                    log.warning("checkpoint: step %d in %s has no checksums (written before they existed): "
                                "only checked for finite values", s, self.directory)  # fmt: skip
                reason = _verify(array_checksums(tree), data.get("checksums"))
            if reason is None:
                if skipped:
                    log.warning("checkpoint: restoring step %d, the newest that verifies (skipped %s)", s, skipped)
                return tree, data, s
            where = f"step directory {self.step_dir(s)}"
            if explicit:
                raise CheckpointReadError(f"checkpoint: cannot restore {where}: {reason}")
            log.warning("checkpoint: skipping %s: %s", where, reason)
            skipped.append(s)
            first = first or f"step {s}: {reason}"
            self._unreadable.add(s)
        raise CheckpointReadError(
            f"checkpoint: none of the {len(steps)} step directories in {self.directory} restores and verifies "
            f"(steps {steps}, each skipped with a warning; the newest, {first})"
        )

    def restore(
        self,
        target: trainer.TrainState,
        *,
        step: int | None = None,
        ref_params: Any = None,
    ) -> tuple[trainer.TrainState, Any] | None:
        """The newest (or ``step``'s) checkpoint that restores and verifies, as (state, this process's data
        position); ``state.step`` is the step used. None only when the directory holds no step directory.

        ``target`` is the abstract state (``trainer.abstract_state``: shapes, dtypes, shardings) the arrays
        are restored into, resharded if the mesh changed. ``ref_params`` fills the state's reference when
        the checkpoint has none (the usual case): pass the initial policy params (or None when beta == 0).
        Raises CheckpointReadError when step directories exist but none verifies (or ``step``'s does not).
        """
        steps = self._candidates(step)
        if not steps:
            return None

        def load(s: int, data: dict[str, Any]) -> trainer.TrainState:
            tgt = target if data.get("has_ref_params") else target.replace(ref_params=None)
            tgt = _with_dtypes(tgt, data.get("checksums"))
            return self._read_item(s, "state", ocp.StandardCheckpointHandler(), ocp.args.StandardRestore(tgt))

        state, data, step = self._first_good(steps, load, explicit=step is not None)
        tgt = target if data.get("has_ref_params") else target.replace(ref_params=None)
        state = _cast_like(state, tgt)
        if not data.get("has_ref_params"):
            state = state.replace(ref_params=ref_params)
        position = _local_position(data["positions"], step)
        log.info("checkpoint: restored step %d from %s", step, self.directory)
        return state, position

    def restore_params(self, target: Any, *, step: int | None = None) -> tuple[Any, int]:
        """Only the policy params of the newest (or ``step``'s) checkpoint that restores and verifies, e.g.
        for evaluation: the optimizer state is never read. ``target``: the params' abstract tree
        (ShapeDtypeStructs with shardings). Returns (params, the step used); raises FileNotFoundError when the
        directory holds no checkpoint, CheckpointReadError when none verifies (or ``step``'s does not)."""
        steps = self._candidates(step)
        if not steps:
            raise FileNotFoundError(f"checkpoint: no checkpoint in {self.directory}")

        def load(s: int, data: dict[str, Any]) -> dict[str, Any]:
            item = {"params": _with_dtypes(target, data.get("checksums"), prefix="params/")}
            args = ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
            )
            return self._read_item(s, "state", ocp.PyTreeCheckpointHandler(), args)

        tree, _, step = self._first_good(steps, load, explicit=step is not None)
        log.info("checkpoint: restored the params of step %d from %s", step, self.directory)
        return _cast_like(tree["params"], target), int(step)


def _local_position(positions: list[Any], step: int) -> Any:
    """This process's data position out of the positions of the processes that wrote step ``step``."""
    positions = [_decode(p) for p in positions]
    if len(positions) == jax.process_count():
        return positions[jax.process_index()]
    if all(p == positions[0] for p in positions):
        return positions[0]
    raise ValueError(
        f"checkpoint step {step} was written by {len(positions)} processes with different data "
        f"positions; it cannot resume the data stream on {jax.process_count()} processes"
    )


def _remove_partial(directory: str, step: int) -> list[str]:
    """Removes ``<step>.orbax-checkpoint-tmp*`` (what a failed save of ``step`` left); returns their names."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(f"{step}.orbax-checkpoint-tmp")]
    except OSError:
        return []
    for n in names:
        shutil.rmtree(os.path.join(directory, n), ignore_errors=True)
    return [n for n in names if not os.path.exists(os.path.join(directory, n))]


def saved_steps(directory: str) -> list[int]:
    """The step directories (``<directory>/<digits>``) in ``directory``, sorted; [] when there is none."""
    try:
        return sorted(int(n) for n in os.listdir(directory) if n.isdigit())
    except OSError:
        return []


_complete_steps = saved_steps


def _join_orbax_threads(timeout_s: float) -> None:
    """Waits (up to ``timeout_s``) for orbax's writer threads to end after a failed save, so that removing
    the partial directory is not undone by a late write."""
    deadline = time.monotonic() + timeout_s
    for t in threading.enumerate():
        if t is not threading.current_thread() and type(t).__module__.startswith("orbax."):
            threading.Thread.join(t, max(0.0, deadline - time.monotonic()))  # (not orbax's join: it raises)
    alive = [t.name for t in threading.enumerate() if type(t).__module__.startswith("orbax.") and t.is_alive()]
    if alive:
        log.warning("checkpoint: orbax threads still running %.0f s after a failed save: %s", timeout_s, alive)


class Interrupted(BaseException):
    """A SIGTERM or SIGINT that arrived while the watcher was not armed (start-up: nothing to save yet).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way (a checkpoint read
    that falls back to an older step, say) mistakes it for a failure of its own."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class PreemptionWatcher:
    """Turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a flag the loop polls between steps: save, then exit.

    Before ``arm()`` (start-up) a signal raises ``Interrupted`` at once instead: there is nothing to save.
    After the first SIGINT the default action comes back, so a second Ctrl-C ends the process at once
    (unsaved). ``requested()`` is agreed across processes (true on all as soon as one host got a signal), so
    every host saves at the same step; ``signum`` is the first signal this process got (None if none). Use as
    a context manager: the previous handlers come back on exit. The handlers are only installed from the main
    thread (Python's rule); elsewhere it only reads the flag.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT), *, armed: bool = True) -> None:
        self._flag = threading.Event()
        self._previous: dict[int, Any] = {}
        self.armed = armed
        self.signum: int | None = None
        if threading.current_thread() is threading.main_thread():
            for s in signals:
                self._previous[s] = signal.signal(s, self._handle)

    def arm(self) -> None:
        """From now on a signal sets the flag (checkpoint and stop after the step) instead of raising."""
        self.armed = True

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and signum in self._previous:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends the process at once
        if not self.armed:
            raise Interrupted(signum)
        log.warning("received %s: will checkpoint and stop after this step%s", signal.Signals(signum).name,
                    " (Ctrl-C again to stop at once, unsaved)" if signum == signal.SIGINT else "")
        self.signum = self.signum or signum
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
