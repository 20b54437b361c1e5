"""Checkpoints under faults: corrupt or truncated files, broken latest steps, non-finite arrays, unwritable
or full disks (each write failure in a subprocess with a time bound), and the fallback on two processes."""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import toy_policy as tp

from tempr1_jax import checkpoint, trainer

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent / "_support"  # toy_policy
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}"}


def same(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


def shifted(state, i: int):
    """The state at step i with params distinct per step."""
    return state.replace(step=jnp.int32(i), params=jax.tree.map(lambda x: x + float(i), state.params))


def save_steps(directory, state, steps, keep=10):
    ck = checkpoint.Checkpointer(directory, every=1, keep=keep)
    for i in steps:
        assert ck.save(shifted(state, i), {"next_batch": i})
    ck.close()


def array_files(step_dir: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(f"{step_dir}/state/**/d/*", recursive=True))


def tamper_checksum(step_dir: Path, path: str = "params/embed") -> None:
    """Changes one recorded checksum of the step's data item (the arrays stay as they were)."""
    meta = step_dir / "data" / "metadata"
    data = json.loads(meta.read_text())
    h = data["checksums"]["arrays"][path]["hash"]
    data["checksums"]["arrays"][path]["hash"] = ("0" if h[0] != "0" else "1") + h[1:]
    meta.write_text(json.dumps(data))


# ----------------------------------------------------------------------------------------------------------
# Corruption and fallback
# ----------------------------------------------------------------------------------------------------------


def test_flipped_bytes_in_array_files_never_restore_as_garbage(tmp_path):
    """Same file size, 8 bytes XOR-ed in the middle of each array data file in turn: restore either refuses
    the step (naming its directory) or returns exactly what was saved (bytes nothing reads); and at least one
    flip is one orbax decodes without error (the silent case only the checksums catch)."""
    state, *_ = tp.setup(beta=0.0)
    pristine = tmp_path / "pristine"
    save_steps(pristine, state, [1])
    outcomes = []
    for k, f in enumerate(array_files(pristine / "1")):
        d = tmp_path / f"flip{k}"
        shutil.copytree(pristine, d)
        target = d / f.relative_to(pristine)
        raw = bytearray(target.read_bytes())
        mid = len(raw) // 2
        raw[mid : mid + 8] = bytes(b ^ 0x5A for b in raw[mid : mid + 8])
        target.write_bytes(bytes(raw))
        assert target.stat().st_size == f.stat().st_size
        ck = checkpoint.Checkpointer(d, every=1, keep=3, read_only=True)
        try:
            got, _ = ck.restore(trainer.abstract_state(state), step=1)
            assert same(got, shifted(state, 1)), f"{target}: restored values differ from the saved ones"
            outcomes.append("intact")
        except checkpoint.CheckpointReadError as e:
            assert str(e).startswith(f"checkpoint: cannot restore step directory {d / '1'}: "), e
            assert "\n" not in str(e)
            outcomes.append("mismatch" if "checksum mismatch" in str(e) else "unreadable")
        ck.close()
    assert "mismatch" in outcomes, outcomes


def test_a_tampered_checksum_is_refused_and_names_the_array(tmp_path):
    state, *_ = tp.setup(beta=0.0)
    save_steps(tmp_path, state, [1])
    tamper_checksum(tmp_path / "1", "params/mlp/w1")
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=3)
    with pytest.raises(checkpoint.CheckpointReadError, match=r"step directory .*/1: params/mlp/w1: checksum mismatch"):
        ck.restore(trainer.abstract_state(state), step=1)
    with pytest.raises(checkpoint.CheckpointReadError, match="none of the 1 step directories"):
        ck.restore_params(trainer.abstract_state(state).params)
    ck.close()


def test_restore_falls_back_past_broken_steps_with_one_warning_each(tmp_path, caplog):
    state, *_ = tp.setup(beta=0.0)
    save_steps(tmp_path, state, [1, 2, 3, 4, 5, 6])
    for p in (tmp_path / "6").iterdir():  # 6: an empty step directory
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(tmp_path / "5" / "data")  # 5: no data item
    for f in array_files(tmp_path / "4"):  # 4: array files cut short
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    for f in (tmp_path / "3").rglob("*"):  # 3: every file cut short
        if f.is_file():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    tamper_checksum(tmp_path / "2")  # 2: fails verification
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=10)
    with caplog.at_level(logging.WARNING, logger="tempr1_jax.checkpoint"):
        got, pos = ck.restore(trainer.abstract_state(state))
    skips = [r.getMessage() for r in caplog.records if "skipping step directory" in r.getMessage()]
    assert [m.split()[4] for m in skips] == [f"{tmp_path / str(s)}:" for s in (6, 5, 4, 3, 2)], skips
    assert "data item does not restore" in skips[0] and "data item does not restore" in skips[1], skips
    assert "checksum mismatch" in skips[4] and "params/embed" in skips[4], skips
    assert int(got.step) == 1 and pos == {"next_batch": 1} and same(got.params, shifted(state, 1).params)
    params, step = ck.restore_params(trainer.abstract_state(state).params)
    assert step == 1 and same(params, shifted(state, 1).params)

    # The next save sets the unreadable steps aside: they neither block a new save of their step nor count
    # as kept checkpoints; a good step that exists is still not saved again.
    assert not ck.save(shifted(state, 1), {"next_batch": 1}, force=True)
    assert ck.save(shifted(state, 2), {"next_batch": 2})
    ck.wait()
    assert ck.all_steps() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir() if "unreadable" in p.name) == [
        f"{s}.unreadable" for s in (2, 3, 4, 5, 6)
    ]
    got, _ = ck.restore(trainer.abstract_state(state))
    assert int(got.step) == 2 and same(got.params, shifted(state, 2).params)
    ck.close()


def test_no_step_that_restores_raises_instead_of_starting_over(tmp_path):
    state, *_ = tp.setup(beta=0.0)
    save_steps(tmp_path, state, [1, 2])
    shutil.rmtree(tmp_path / "2" / "data")
    tamper_checksum(tmp_path / "1")
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=3)
    with pytest.raises(checkpoint.CheckpointReadError) as e:
        ck.restore(trainer.abstract_state(state))
    msg = str(e.value)
    assert msg.startswith(f"checkpoint: none of the 2 step directories in {tmp_path} restores and verifies")
    assert "\n" not in msg and "step 2: its data item does not restore" in msg
    with pytest.raises(checkpoint.CheckpointReadError, match="none of the 2 step directories"):
        ck.restore_params(trainer.abstract_state(state).params)
    ck.close()


def write_unchecked(directory, state, step: int) -> None:
    """A checkpoint as the Checkpointer wrote them before checksums (no "checksums" in the data item)."""
    mgr = ocp.CheckpointManager(directory, item_names=("state", "data"))
    data = {"positions": [{"next_batch": step}], "process_count": 1, "has_ref_params": False}
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data))
    mgr.save(step, args=args, force=True)
    mgr.wait_until_finished()
    mgr.close()


def test_non_finite_params_are_refused_and_old_checkpoints_still_restore(tmp_path, caplog):
    state, *_ = tp.setup(beta=0.0)
    write_unchecked(tmp_path, shifted(state, 1), 1)
    nan = jax.tree.map(lambda x: x * np.nan, state.params)
    write_unchecked(tmp_path, state.replace(step=jnp.int32(2), params=nan), 2)
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=3)
    with pytest.raises(checkpoint.CheckpointReadError, match=r"step directory .*/2: params/\w+ is not finite"):
        ck.restore(trainer.abstract_state(state), step=2)
    with caplog.at_level(logging.WARNING, logger="tempr1_jax.checkpoint"):
        got, pos = ck.restore(trainer.abstract_state(state))
    assert int(got.step) == 1 and pos == {"next_batch": 1} and same(got.params, shifted(state, 1).params)
    assert any("has no checksums" in r.getMessage() for r in caplog.records)
    ck.close()


def test_restore_into_another_dtype_checks_the_saved_bits_then_casts(tmp_path):
    state, *_ = tp.setup(beta=0.0)
    save_steps(tmp_path, state, [1])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16, sharding=x.sharding),
                          trainer.abstract_state(state).params)  # fmt: skip
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=3, read_only=True)
    params, step = ck.restore_params(target)
    ck.close()
    assert step == 1 and all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
    want = jax.tree.map(lambda x: np.asarray(x.astype(jnp.bfloat16)), shifted(state, 1).params)
    assert same(params, want)


OTHER_MESH = """
import json, sys
import jax, numpy as np
import toy_policy as tp
from tempr1_jax import checkpoint, sharding, trainer

d = sys.argv[1]
params = tp.init_params(0)
sums = [checkpoint.array_checksums(jax.device_put(params, s)) for s in [
    sharding.named(sharding.make_mesh(m), tp.SPECS) for m in ({"fsdp": 8}, {"fsdp": 2, "tp": 4}, {"tp": 8})]]
state, _, _, _, _ = tp.setup(mesh=sharding.make_mesh({"fsdp": 4, "tp": 2}), beta=0.0)
ck = checkpoint.Checkpointer(d, every=1, keep=1)
ck.save(state.replace(step=state.step + 1))
ck.close()
_, _, other, _, _ = tp.setup(mesh=sharding.make_mesh({"fsdp": 2, "tp": 4}), beta=0.0)
ck = checkpoint.Checkpointer(d, every=1, keep=1)
got, _ = ck.restore(trainer.abstract_state(state, other))
ck.close()
print(json.dumps({"sums_equal": sums[0] == sums[1] == sums[2] == checkpoint.array_checksums(params),
                  "resharded": got.params["embed"].sharding == other.params["embed"],
                  "same": all(np.array_equal(np.asarray(a), np.asarray(b))
                              for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(params)))}))
"""


def test_checksums_do_not_depend_on_the_mesh(tmp_path):
    """Checksums of one tree placed on 3 meshes of 8 devices agree, and a checkpoint saved on one mesh
    verifies when restored onto another."""
    env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(OTHER_MESH), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=240, cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    assert out == {"sums_equal": True, "resharded": True, "same": True}


def test_one_changed_or_moved_value_changes_the_checksum():
    params = tp.init_params(0)
    a = checkpoint.array_checksums(params)
    assert set(a) == {"embed", "head", "mlp/w1", "mlp/w2", "vision/proj"}
    assert a["head"] == {"dtype": "float32", "shape": [16, 32], "hash": a["head"]["hash"], "finite": True}
    flipped = dict(params, head=params["head"].at[3, 5].set(-params["head"][3, 5]))
    c = checkpoint.array_checksums(flipped)
    assert c["head"]["hash"] != a["head"]["hash"] and c["embed"] == a["embed"]
    swapped = dict(params, head=params["head"][::-1])  # the same values in other places
    assert checkpoint.array_checksums(swapped)["head"]["hash"] != a["head"]["hash"]
    bits = jax.lax.bitcast_convert_type(params["embed"], jnp.uint32)
    sign = checkpoint.array_checksums({"a": bits, "b": bits ^ jnp.uint32(1 << 31)})  # every sign bit flipped
    assert sign["a"]["hash"] != sign["b"]["hash"]
    nan = checkpoint.array_checksums({"x": jnp.array([1.0, jnp.inf], jnp.bfloat16), "i": jnp.arange(3)})
    assert nan["x"]["finite"] is False and nan["i"]["finite"] is True and nan["x"]["dtype"] == "bfloat16"


# ----------------------------------------------------------------------------------------------------------
# Write failures: each in a subprocess that must exit within 60 s with one line
# ----------------------------------------------------------------------------------------------------------

WRITE_FAILURE = """
import errno, os, sys
import jax
import orbax.checkpoint as ocp
import toy_policy as tp
from tempr1_jax import checkpoint

d, fault, mode = sys.argv[1], sys.argv[2], sys.argv[3]
state, *_ = tp.setup(beta=0.0)
ck = checkpoint.Checkpointer(d, every=1, keep=3, async_save=mode == "async")
ck.save(state.replace(step=state.step + 1), {"next_batch": 1})
ck.wait()
if fault == "chmod":  # (run by root, the parent dropped its right to ignore permission bits)
    os.chmod(d, 0o555)
elif fault.startswith("disk-full-"):  # d is on a small tmpfs: fill it but for disk-full-<bytes>
    st = os.statvfs(d)
    with open(os.path.join(os.path.dirname(d), "filler"), "wb") as f:
        try:
            f.write(bytes(st.f_bavail * st.f_frsize - int(fault.split("-")[-1])))
        except OSError:
            pass
elif fault == "enospc-at-commit":  # the arrays are written, the commit fails
    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    ocp.path.atomicity.AtomicRenameTemporaryPath.finalize = full
print("FAULT", flush=True)
ck.save(state.replace(step=state.step + 2), {"next_batch": 2})
ck.close()
print("NO ERROR", flush=True)
"""


def run_write_failure(d: Path, fault: str, mode: str, prefix: tuple = ()) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    cmd = [*prefix, sys.executable, "-c", textwrap.dedent(WRITE_FAILURE), str(d), fault, mode]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120, cwd=REPO)
    return r, time.monotonic() - t0


def check_write_failure(d: Path, r: subprocess.CompletedProcess, elapsed: float, why: str) -> str:
    """The child failed fast with one line naming the directory, removed the partial step, kept step 1."""
    assert "FAULT" in r.stdout and "NO ERROR" not in r.stdout, (r.stdout, r.stderr[-3000:])
    assert r.returncode != 0 and elapsed < 60, (r.returncode, elapsed)
    last = r.stderr.strip().splitlines()[-1]
    prefix = f"tempr1_jax.checkpoint.CheckpointWriteError: checkpoint: cannot write step 2 to {d}: "
    assert last.startswith(prefix) and why in last, last
    assert last.endswith("the latest checkpoint is step 1"), last
    assert sorted(os.listdir(d)) == ["1"], os.listdir(d)
    state, *_ = tp.setup(beta=0.0)
    ck = checkpoint.Checkpointer(d, every=1, keep=3, read_only=True)
    got, pos = ck.restore(trainer.abstract_state(state))
    ck.close()
    assert int(got.step) == 1 and pos == {"next_batch": 1} and same(got.params, state.params)
    return last


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_unwritable_directory_fails_fast_in_one_line(tmp_path, mode):
    """chmod a-w between two saves (the code before this test hung here for 20 minutes)."""
    prefix = ()
    if os.geteuid() == 0:  # root ignores permission bits unless it drops CAP_DAC_OVERRIDE
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a directory unwritable for this process")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")
    d = tmp_path / "ckpt"
    try:
        r, elapsed = run_write_failure(d, "chmod", mode, prefix)
    finally:
        if d.exists():
            os.chmod(d, 0o755)
    check_write_failure(d, r, elapsed, "PermissionError: [Errno 13] Permission denied")


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_enospc_at_commit_removes_the_partial_step(tmp_path, mode):
    d = tmp_path / "ckpt"
    r, elapsed = run_write_failure(d, "enospc-at-commit", mode)
    last = check_write_failure(d, r, elapsed, "OSError: [Errno 28] No space left on device")
    assert "removed the partial 2.orbax-checkpoint-tmp" in last, last


@pytest.mark.parametrize("spare", [0, 4096, 16384])
def test_full_tmpfs_removes_the_partial_step(tmp_path, spare):
    """A real full disk (a 1 MB tmpfs filled to ``spare`` free bytes): 0 fails the write probe, the others
    fail in orbax's writes (its own OSError, or tensorstore's RESOURCE_EXHAUSTED) after the partial step was
    made."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): the disk-full case runs through enospc-at-commit")
    try:
        r, elapsed = run_write_failure(mnt / "ckpt", f"disk-full-{spare}", "async")
        last = check_write_failure(mnt / "ckpt", r, elapsed, "")
        assert "No space left on device" in last or "RESOURCE_EXHAUSTED" in last, last
        assert spare == 0 or "removed the partial 2.orbax-checkpoint-tmp" in last, last
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_path_through_a_regular_file_fails_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(checkpoint.CheckpointWriteError) as e:
        checkpoint.Checkpointer(tmp_path / "file" / "ckpt", every=1, keep=1)
    assert str(e.value) == (
        f"checkpoint: cannot use {tmp_path / 'file' / 'ckpt'}: NotADirectoryError: [Errno {errno.ENOTDIR}] "
        f"Not a directory: '{tmp_path / 'file' / 'ckpt'}'"
    )


def test_after_a_write_failure_save_and_wait_raise_again_and_close_returns(tmp_path, monkeypatch):
    state, *_ = tp.setup(beta=0.0)
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=3, async_save=False)
    assert ck.save(state.replace(step=jnp.int32(1)))

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.path.atomicity.AtomicRenameTemporaryPath, "finalize", full)
    with pytest.raises(checkpoint.CheckpointWriteError, match="cannot write step 2") as first:
        ck.save(state.replace(step=jnp.int32(2)))
    for call in (lambda: ck.save(state.replace(step=jnp.int32(3))), ck.wait):
        with pytest.raises(checkpoint.CheckpointWriteError) as again:
            call()
        assert str(again.value) == str(first.value)
    ck.close()
    assert sorted(os.listdir(tmp_path)) == ["1"]


def test_read_only_checkpointer_refuses_to_save(tmp_path):
    state, *_ = tp.setup(beta=0.0)
    save_steps(tmp_path, state, [1])
    ck = checkpoint.Checkpointer(tmp_path, every=1, keep=3, read_only=True)
    with pytest.raises(ValueError, match="opened read-only"):
        ck.save(shifted(state, 2))
    ck.close()


# ----------------------------------------------------------------------------------------------------------
# Two processes: both fall back to the same step
# ----------------------------------------------------------------------------------------------------------

TWO_PROCESSES = """
import errno, json, os, sys
pid, port, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
from tempr1_jax import sharding
assert sharding.maybe_initialize_distributed(
    "auto", coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
import jax, numpy as np
from jax.experimental import multihost_utils
import toy_policy as tp
from tempr1_jax import checkpoint, trainer

mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tp": 1})  # the params are split across the processes
state, _, shardings, _, _ = tp.setup(mesh=mesh, beta=0.0)
ck = checkpoint.Checkpointer(d, every=1, keep=3)
for i in (1, 2, 3):
    ck.save(state.replace(step=state.step + i, params=jax.tree.map(lambda x: x + float(i), state.params)),
            {"host": pid, "i": i})  # (global arrays: jnp.int32(i) would be local to each process)
ck.close()
multihost_utils.sync_global_devices("saved")
if pid == 0:  # step 2: a recorded checksum changed (read by both processes)
    meta = os.path.join(d, "2", "data", "metadata")
    data = json.load(open(meta))
    data["checksums"]["arrays"]["params/embed"]["hash"] = "0" * 16
    json.dump(data, open(meta, "w"))
if pid == 1:  # step 3: an I/O error on process 1 only (a host-local fault the other process does not see)
    read = checkpoint.Checkpointer._read_data
    def failing(self, step):
        if step == 3:
            raise OSError(errno.EIO, "Input/output error")
        return read(self, step)
    checkpoint.Checkpointer._read_data = failing
multihost_utils.sync_global_devices("broken")
ck = checkpoint.Checkpointer(d, every=1, keep=3)
restored, pos = ck.restore(trainer.abstract_state(state, shardings))
got = multihost_utils.process_allgather(restored.params, tiled=True)
want = jax.tree.map(lambda x: np.asarray(x) + 1.0, tp.init_params(0))
ck.close()
print(json.dumps({"pid": pid, "step": int(np.asarray(restored.step.addressable_data(0))), "pos": pos,
                  "same": all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_fall_back_to_the_same_step(tmp_path):
    """Step 3 fails on one process only, step 2's checksum on both: both restore step 1."""
    port = free_port()
    env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    for k in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        env.pop(k, None)
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(TWO_PROCESSES), str(i), str(port),
                               str(tmp_path / "ckpt")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=REPO) for i in range(2)]  # fmt: skip
    outs, errs = [], []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-4000:]
            outs.append(json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1]))
            errs.append(err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    a, b = outs
    assert a["step"] == b["step"] == 1 and a["same"] and b["same"]
    assert f"{tmp_path / 'ckpt' / '3'}: another process could not restore it" in errs[0], errs[0][-3000:]
    assert f"{tmp_path / 'ckpt' / '3'}: its data item does not restore: OSError: [Errno 5]" in errs[1], errs[1][-3000:]
    for err in errs:
        assert f"{tmp_path / 'ckpt' / '2'}: params/embed: checksum mismatch" in err, err[-3000:]
    assert a["pos"] == {"host": 0, "i": 1} and b["pos"] == {"host": 1, "i": 1}
