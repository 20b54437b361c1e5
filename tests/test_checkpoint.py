"""Checkpoints: exact resume, keep-N / every-K, SIGKILL mid-save, SIGTERM, non-finite states, bad inputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_policy as tp

from tempr1_jax import checkpoint, trainer

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent / "_support"  # toy_policy and the other support modules
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}"}


@jax.jit
def split_and_noise(rng):
    rng, sub = jax.random.split(rng)
    return rng, jax.random.uniform(sub, (4 * tp.G,))


def loop(state, step, start, stop):
    """The training loop's shape: the batch depends on the data position and on the state's PRNG key."""
    for i in range(start, stop):
        rng, noise = split_and_noise(state.rng)
        state = state.replace(rng=rng)
        batch = tp.make_batch(i)
        batch = batch.replace(rewards=batch.rewards + np.asarray(noise))
        state, _ = step(state, batch)
    return state


def same(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb):
        return False
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


def test_resume_is_exact_bit_for_bit(tmp_path):
    state, step, *_ = tp.setup()
    straight = loop(state, step, 0, 4)

    state, step, *_ = tp.setup()
    state = loop(state, step, 0, 2)
    ck = checkpoint.Checkpointer(tmp_path, every=2, keep=3)
    assert ck.save(state, {"next_batch": 2, "epoch": 0})
    ck.close()
    del state

    fresh, step, *_ = tp.setup()  # a new run: initial params, then the checkpoint on top
    ck = checkpoint.Checkpointer(tmp_path, every=2, keep=3)
    restored, position = ck.restore(trainer.abstract_state(fresh), ref_params=fresh.ref_params)
    ck.close()
    assert position == {"next_batch": 2, "epoch": 0} and int(restored.step) == 2
    resumed = loop(restored, step, position["next_batch"], 4)
    for field in ("step", "params", "opt_state", "rng", "skipped", "ref_params"):
        assert same(getattr(straight, field), getattr(resumed, field)), field


def test_every_k_keep_n_and_no_double_save(tmp_path):
    state, *_ = tp.setup(beta=0.0)
    ck = checkpoint.Checkpointer(tmp_path, every=2, keep=2)
    saved = []
    for i in range(1, 8):
        s = state.replace(step=jnp.int32(i))
        saved.append(ck.save(s, {"i": i}, force=(i == 7)))
    assert saved == [False, True, False, True, False, True, True]
    assert not ck.save(state.replace(step=jnp.int32(7)), {"i": 7}, force=True)  # already there
    ck.wait()
    assert ck.all_steps() == [6, 7] and ck.latest_step() == 7
    ck.close()
    ck = checkpoint.Checkpointer(tmp_path, every=2, keep=2)
    s, pos = ck.restore(trainer.abstract_state(state), step=6)
    assert int(s.step) == 6 and pos == {"i": 6} and s.ref_params is None
    with pytest.raises(FileNotFoundError, match="no step 3"):
        ck.restore(trainer.abstract_state(state), step=3)
    ck.close()


def test_a_skipped_non_finite_step_never_reaches_a_checkpoint(tmp_path):
    state, step, *_ = tp.setup()
    state, _ = step(state, tp.make_batch(0))
    good = tp.to_host(state.params)
    bad = tp.make_batch(1)
    bad.old_logp[bad.completion_mask] = np.nan
    state, m = step(state, bad)
    assert float(m["skipped"]) == 1
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=2)
    assert ck.save(state, None)
    ck.wait()
    restored, pos = ck.restore(trainer.abstract_state(state), ref_params=state.ref_params)
    assert same(restored.params, good) and int(restored.skipped) == 1 and pos is None
    # A state whose params are not finite is refused outright.
    broken = state.replace(step=state.step + 1, params=jax.tree.map(lambda x: x * np.nan, state.params))
    with pytest.raises(FloatingPointError, match="step 3"):
        ck.save(broken, None, force=True)
    ck.wait()
    assert ck.all_steps() == [2]
    ck.close()


def test_reference_params_saved_only_on_request(tmp_path):
    state, *_ = tp.setup()
    marked = state.replace(ref_params=jax.tree.map(lambda x: x + 1.0, state.ref_params))
    ck = checkpoint.Checkpointer(tmp_path / "with", every=1, keep=1, save_ref_params=True)
    ck.save(marked.replace(step=jnp.int32(1)))
    ck.wait()
    got, _ = ck.restore(trainer.abstract_state(state), ref_params=state.params)
    assert same(got.ref_params, marked.ref_params)
    ck.close()
    ck = checkpoint.Checkpointer(tmp_path / "without", every=1, keep=1, async_save=False)
    ck.save(marked.replace(step=jnp.int32(1)))
    got, _ = ck.restore(trainer.abstract_state(state), ref_params=state.params)
    assert same(got.ref_params, state.params)
    assert ck.restore(trainer.abstract_state(state), step=None) is not None
    ck.close()


def test_bad_inputs(tmp_path):
    state, *_ = tp.setup(beta=0.0)
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=1)
    assert ck.restore(trainer.abstract_state(state)) is None
    with pytest.raises(ValueError, match="JSON-serializable"):
        ck.save(state.replace(step=jnp.int32(1)), {"pos": object()})
    ck.close()
    with pytest.raises(ValueError, match="checkpoint.every=0"):
        checkpoint.Checkpointer(tmp_path, every=0, keep=1)
    with pytest.raises(ValueError, match="checkpoint.keep=0"):
        checkpoint.Checkpointer(tmp_path, every=1, keep=0)


KILLED_MID_SAVE = """
import asyncio, os, sys, time
import jax, orbax.checkpoint as ocp
import toy_policy as tp
from tempr1_jax import checkpoint

d = sys.argv[1]
state, *_ = tp.setup(beta=0.0)
ck = checkpoint.Checkpointer(d, every=1, keep=3)
ck.save(state.replace(step=state.step + 1), {"next_batch": 1})
ck.wait()

async def stuck(self):  # fault injection: the data is written, the commit never happens
    open(os.path.join(d, "STUCK"), "w").close()
    await asyncio.sleep(3600)

ocp.path.atomicity.AtomicRenameTemporaryPath.finalize = stuck
later = state.replace(step=state.step + 2, params=jax.tree.map(lambda x: x + 1.0, state.params))
ck.save(later, {"next_batch": 2})
print("SAVING", flush=True)
time.sleep(3600)
"""


def test_sigkill_mid_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_MID_SAVE), str(tmp_path)], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "STUCK").exists():
            assert p.poll() is None, p.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the child never reached the commit"
            time.sleep(0.05)
        debris = [n for n in os.listdir(tmp_path) if n.startswith("2") and n != "2"]
        assert debris, os.listdir(tmp_path)  # step 2 is half-written
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    state, *_ = tp.setup(beta=0.0)
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=3)
    assert ck.all_steps() == [1]
    restored, pos = ck.restore(trainer.abstract_state(state))
    assert int(restored.step) == 1 and pos == {"next_batch": 1}
    assert same(restored.params, state.params)
    ck.close()


PREEMPTED = """
import sys, time
import toy_policy as tp
from tempr1_jax import checkpoint

d = sys.argv[1]
state, step, *_ = tp.setup()
ck = checkpoint.Checkpointer(d, every=1000, keep=2)
with checkpoint.PreemptionWatcher() as preempt:
    for i in range(1, 400):
        state, m = step(state, tp.make_batch(i))
        print("STEP", i, flush=True)
        stop = preempt.requested()
        ck.save(state, {"next_batch": i + 1}, force=stop)
        if stop:
            print("PREEMPTED", i, flush=True)
            break
        time.sleep(0.02)
    else:
        sys.exit(3)
ck.close()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_checkpoint_and_stop(tmp_path, signum):
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PREEMPTED), str(tmp_path)], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    try:
        for line in p.stdout:
            if line.startswith("STEP 2"):
                p.send_signal(signum)
                break
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-3000:]
    last = int(next(ln for ln in out.splitlines() if ln.startswith("PREEMPTED")).split()[1])
    assert last >= 2
    state, *_ = tp.setup()
    ck = checkpoint.Checkpointer(tmp_path, every=1000, keep=2)
    assert ck.all_steps() == [last]
    restored, pos = ck.restore(trainer.abstract_state(state), ref_params=state.ref_params)
    assert int(restored.step) == last and pos == {"next_batch": last + 1}
    ck.close()


WATCHED = """
import sys, time
from tempr1_jax import checkpoint

with checkpoint.PreemptionWatcher(armed=sys.argv[1] == "armed") as w:
    try:
        print("READY", flush=True)
        while not w.requested():
            time.sleep(0.01)
        print("FLAG", w.signum, flush=True)
        time.sleep(60)
        print("NOT STOPPED", flush=True)
    except checkpoint.Interrupted as e:
        print("INTERRUPTED", e.signum, e, flush=True)
"""


def _watched(mode: str, signals: list[int]) -> tuple[int, str, float]:
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WATCHED), mode], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO)
    out, t0 = [], time.monotonic()
    try:
        for line in p.stdout:
            out.append(line)
            if line.startswith(("READY", "FLAG")) and signals:
                t0 = time.monotonic()
                p.send_signal(signals.pop(0))
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, "".join(out), time.monotonic() - t0


def test_a_second_ctrl_c_stops_at_once():
    """The first SIGINT sets the flag (the loop would save); the second ends the process (unsaved) at once."""
    rc, out, seconds = _watched("armed", [signal.SIGINT, signal.SIGINT])
    assert f"FLAG {int(signal.SIGINT)}" in out and "NOT STOPPED" not in out
    assert rc == -signal.SIGINT and seconds < 10


def test_a_signal_before_the_watcher_is_armed_raises_interrupted():
    """Start-up (nothing to save yet): the signal raises Interrupted, a BaseException, at once."""
    rc, out, _ = _watched("startup", [signal.SIGTERM])
    assert rc == 0 and f"INTERRUPTED {int(signal.SIGTERM)} interrupted by SIGTERM" in out
    assert not issubclass(checkpoint.Interrupted, Exception)


def test_data_positions_round_trip_numpy_arrays(tmp_path):
    state, *_ = tp.setup(beta=0.0)
    pos = {"epoch": 1, "order": np.array([3, 1, 2], np.int64), "key": np.uint32(7), "seen": (1.5, "x")}
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=1)
    ck.save(state.replace(step=jnp.int32(1)), pos)
    ck.wait()
    _, got = ck.restore(trainer.abstract_state(state))
    ck.close()
    assert got["epoch"] == 1 and got["seen"] == [1.5, "x"]
    assert got["order"].dtype == np.int64 and got["order"].tolist() == [3, 1, 2]
    assert got["key"].dtype == np.uint32 and got["key"] == 7


def test_frozen_optimizer_state_round_trips(tmp_path):
    state, *_ = tp.setup(freeze="vision/.*", beta=0.0)
    state = state.replace(step=jnp.int32(1), opt_state=jax.tree.map(lambda x: x + 1, state.opt_state))
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=1)
    ck.save(state)
    ck.wait()
    got, _ = ck.restore(trainer.abstract_state(state))
    ck.close()
    assert jax.tree.structure(got.opt_state) == jax.tree.structure(state.opt_state)
    assert same(got.opt_state, state.opt_state) and same(got.params, state.params)
