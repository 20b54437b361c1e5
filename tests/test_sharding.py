"""Mesh and spec checks in-process; the sharded step on 8 fake CPU devices and two jax.distributed processes
in subprocesses (XLA_FLAGS must be set before jax is imported there)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
import toy_policy as tp
from jax.sharding import PartitionSpec as P

from tempr1_jax import sharding, trainer

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent / "_support"  # toy_policy and the other support modules


def run_script(code: str, env_extra: dict[str, str], args: list[str] | None = None, timeout: int = 240):
    env = {**os.environ, **env_extra, "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *(args or [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def last_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    assert lines, stdout
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------------------------------------
# In-process
# ----------------------------------------------------------------------------------------------------------


def test_mesh_shape_resolution_and_errors():
    assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tp": 2}, 8) == (2, 2, 2)
    assert sharding.mesh_shape({"data": -1}, 4) == (4, 1, 1)
    assert sharding.mesh_shape({"fsdp": -1, "tp": 1}, 6) == (1, 6, 1)
    with pytest.raises(ValueError, match="unknown axis"):
        sharding.mesh_shape({"dp": 2}, 2)
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        sharding.mesh_shape({"data": -1, "fsdp": -1}, 4)
    with pytest.raises(ValueError, match="needs 8 devices, but there are 4"):
        sharding.mesh_shape({"data": 2, "fsdp": 2, "tp": 2}, 4)
    with pytest.raises(ValueError, match="not divisible by 3"):
        sharding.mesh_shape({"data": -1, "tp": 3}, 8)
    with pytest.raises(ValueError, match="mesh.tp=0"):
        sharding.mesh_shape({"tp": 0}, 8)
    mesh = sharding.make_mesh({"data": -1})
    assert mesh.axis_names == sharding.MESH_AXES and mesh.devices.size == jax.device_count()


def test_validate_specs_names_the_param():
    mesh = jax.make_mesh((1, 1, 1), sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
    params = tp.init_params(0)
    sharding.validate_specs(params, tp.SPECS, mesh)
    bad = {**tp.SPECS, "head": P(None, "model")}
    with pytest.raises(ValueError, match=r"param \['head'\].*'model'"):
        sharding.validate_specs(params, bad, mesh)
    bad = {**tp.SPECS, "head": P(None, None, "tp")}
    with pytest.raises(ValueError, match=r"\['head'\].*more entries than dims"):
        sharding.validate_specs(params, bad, mesh)
    with pytest.raises(ValueError, match="leaves"):
        sharding.validate_specs(params, {k: v for k, v in tp.SPECS.items() if k != "head"}, mesh)
    two = jax.sharding.AbstractMesh((1, 2, 2), sharding.MESH_AXES)
    sharding.validate_specs(params, tp.SPECS, two)
    odd = {**params, "head": np.zeros((DIM := params["head"].shape[0], 33), np.float32)}
    with pytest.raises(ValueError, match=rf"\['head'\]: dim 33 of shape \({DIM}, 33\) is not divisible by 2"):
        sharding.validate_specs(odd, tp.SPECS, two)


def test_optimizer_state_specs_follow_params_through_masking():
    params = tp.init_params(0)
    mask = trainer.trainable_mask(params, "vision/.*")
    tx, _ = trainer.make_optimizer({"learning_rate": 1.0, "max_grad_norm": 1.0}, 10, mask)
    specs = sharding.optimizer_state_specs(tx, jax.eval_shape(tx.init, params), tp.SPECS)
    flat = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]
    found = {jax.tree_util.keystr(p): s for p, s in flat}
    embed = [s for k, s in found.items() if k.endswith("['embed']")]
    assert embed and all(s == tp.SPECS["embed"] for s in embed)  # mu and nu
    assert not any("vision" in k for k in found)  # frozen: no moments at all
    assert [s for k, s in found.items() if k.endswith(".count")] == [P(), P()]  # adam + schedule counts


def test_host_data_shard_single_process():
    mesh = sharding.make_mesh({"data": -1})
    assert sharding.host_data_shard(sharding.batch_sharding(mesh), 8) == (0, 1)
    with pytest.raises(ValueError, match="scalar"):
        sharding.shard_batch({"x": np.float32(1)}, sharding.batch_sharding(mesh))


def test_distributed_auto_does_nothing_on_one_process(monkeypatch):
    for k in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert sharding.maybe_initialize_distributed("auto") is False
    assert sharding.maybe_initialize_distributed("off") is False
    with pytest.raises(ValueError, match="distributed.mode='maybe'"):
        sharding.maybe_initialize_distributed("maybe")


def test_distributed_auto_starts_on_a_multi_worker_cloud_tpu_vm(monkeypatch):
    """A Cloud TPU VM names its slice's workers only through the metadata server (no TPU_WORKER_HOSTNAMES):
    "auto" asks JAX's own TPU cluster detection. Simulated here (no TPU VM to try it on): a detected 4-worker
    slice initializes jax.distributed, a 1-worker one (v4-8) does not, and off a TPU VM nothing is queried."""
    from jax._src import cloud_tpu_init
    from jax._src.clusters import cloud_tpu_cluster

    for k in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(cloud_tpu_cluster.GceTpuCluster, "is_env_present", classmethod(lambda cls: True))
    monkeypatch.setattr(cloud_tpu_cluster.GkeTpuCluster, "is_env_present", classmethod(lambda cls: False))
    assert sharding.cloud_tpu_process_count() == 1  # not on a TPU VM: the cluster is not even asked
    monkeypatch.setattr(cloud_tpu_init, "running_in_cloud_tpu_vm", True)
    for workers, started in ((1, False), (4, True)):
        monkeypatch.setattr(cloud_tpu_cluster.GceTpuCluster, "get_process_count", classmethod(lambda cls, n=workers: n))
        assert sharding.cloud_tpu_process_count() == workers
        assert sharding.maybe_initialize_distributed("auto") is started
    assert calls == [{"coordinator_address": None, "num_processes": None, "process_id": None}]

    def unreachable(cls):
        raise ConnectionError("metadata.google.internal")

    monkeypatch.setattr(cloud_tpu_cluster.GceTpuCluster, "is_env_present", classmethod(unreachable))
    assert sharding.cloud_tpu_process_count() == 1


# ----------------------------------------------------------------------------------------------------------
# 8 fake devices
# ----------------------------------------------------------------------------------------------------------

EIGHT_DEVICES = """
import json
import jax, numpy as np
import toy_policy as tp
from jax.sharding import PartitionSpec as P
from tempr1_jax import sharding, trainer
from tempr1_jax.train_log import CompileCounter

assert jax.device_count() == 8, jax.devices()
mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tp": 2})
s1, step1, *_ = tp.setup(micro_batches=2)
sm, stepm, shardings, bsh, _ = tp.setup(micro_batches=2, mesh=mesh)
specs_ok = all(
    sm.params[k].sharding.spec == tp.SPECS[k] for k in ("embed", "head")
) and sm.params["mlp"]["w1"].sharding.spec == tp.SPECS["mlp"]["w1"]
mu_specs = [x.sharding.spec for x in jax.tree.leaves(sm.opt_state) if x.ndim == 2]
old = sm
with CompileCounter() as c:
    for i in range(3):
        b = tp.make_batch(i)
        s1, m1 = step1(s1, b)
        sb = sharding.shard_batch(b, bsh)
        sm, mm = stepm(sm, sb)
        jax.block_until_ready(mm)
        if i == 0:
            first = c.count
pd = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
         for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(sm.params)))
od = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
         for a, b in zip(jax.tree.leaves(s1.opt_state), jax.tree.leaves(sm.opt_state)))
md = {k: abs(float(m1[k]) - float(mm[k])) for k in m1}
mesh8 = sharding.make_mesh({"data": 8})
s8, step8, _, bsh8, _ = tp.setup(micro_batches=2, mesh=mesh8)
try:
    step8(s8, sharding.shard_batch(tp.make_batch(0, prompts=2), bsh8))
    split_error = ""
except ValueError as e:
    split_error = str(e)
print(json.dumps({
    "split_error": split_error,
    "param_diff": pd, "opt_diff": od, "metric_diff": max(md.values()), "worst": max(md, key=md.get),
    "specs_ok": bool(specs_ok),
    "mu_specs_ok": set(mu_specs) == set(jax.tree.leaves(tp.SPECS, is_leaf=lambda x: isinstance(x, P))),
    "batch_spec_ok": sb.inputs["tokens"].sharding.spec == P(("data", "fsdp")),
    "shards": len(sb.inputs["tokens"].addressable_shards),
    "donated": bool(old.params["embed"].is_deleted()),
    "compiles_after_first": c.count - first, "first": first,
    "loss": float(mm["loss"]), "skipped": float(mm["skipped_total"]),
}))
"""


def test_sharded_step_on_8_devices_equals_single_device():
    r = run_script(EIGHT_DEVICES, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert r.returncode == 0, r.stderr[-4000:]
    out = last_json(r.stdout)
    assert out["param_diff"] <= 1e-5 and out["opt_diff"] <= 1e-5, out
    assert out["metric_diff"] <= 1e-5, out
    assert out["specs_ok"] and out["mu_specs_ok"], out
    assert out["batch_spec_ok"] and out["shards"] == 8, out
    assert out["donated"] and out["first"] >= 2 and out["compiles_after_first"] == 0, out
    assert np.isfinite(out["loss"]) and out["skipped"] == 0
    assert "micro-batches of 4 rows (batch 8 / micro_batches 2) do not split over the 8" in out["split_error"]


# ----------------------------------------------------------------------------------------------------------
# Two processes with jax.distributed on localhost
# ----------------------------------------------------------------------------------------------------------

TWO_PROCESSES = """
import json, sys
pid, port, ckdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
from tempr1_jax import sharding
assert sharding.maybe_initialize_distributed(
    "auto", coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
import jax, numpy as np
from jax.experimental import multihost_utils
import toy_policy as tp
from tempr1_jax import checkpoint, trainer

assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tp": 1})  # params and batch split across the processes
state, step, shardings, bsh, _ = tp.setup(micro_batches=2, mesh=mesh)
B = 16
idx, cnt = sharding.host_data_shard(bsh, B)
losses = []
for i in range(2):
    b = tp.make_batch(i)
    local = jax.tree.map(lambda v: v[idx * B // cnt:(idx + 1) * B // cnt], b)
    state, m = step(state, sharding.shard_batch(local, bsh))
    losses.append(float(np.asarray(m["loss"].addressable_data(0))))
params = multihost_utils.process_allgather(state.params, tiled=True)
np.savez(f"{ckdir}/params{pid}.npz", **{k: v for k, v in zip(
    ["embed", "head", "w1", "w2", "proj"],
    [params["embed"], params["head"], params["mlp"]["w1"], params["mlp"]["w2"], params["vision"]["proj"]])})
ck = checkpoint.Checkpointer(f"{ckdir}/ckpt", every=1, keep=2)
saved = ck.save(state, {"host": pid, "next_batch": 2})
ck.wait()
restored, pos = ck.restore(trainer.abstract_state(state, shardings), ref_params=state.ref_params)
again = multihost_utils.process_allgather(restored.params, tiled=True)
same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)))
ck.close()
print(json.dumps({"pid": pid, "shard": [idx, cnt], "losses": losses, "saved": saved, "pos": pos,
                  "restored_same": same, "step": int(np.asarray(restored.step.addressable_data(0)))}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_with_jax_distributed_agree(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}",
    }
    for k in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        env.pop(k, None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(TWO_PROCESSES), str(i), str(port), str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            assert p.returncode == 0, stderr[-4000:]
            outs.append(last_json(stdout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    a, b = outs
    assert a["shard"] == [0, 2] and b["shard"] == [1, 2]
    assert a["losses"] == b["losses"] and a["saved"] and b["saved"]
    assert a["pos"] == {"host": 0, "next_batch": 2} and b["pos"] == {"host": 1, "next_batch": 2}
    assert a["restored_same"] and b["restored_same"] and a["step"] == b["step"] == 2
    pa, pb = np.load(tmp_path / "params0.npz"), np.load(tmp_path / "params1.npz")
    for k in pa.files:
        assert np.array_equal(pa[k], pb[k]), k
    # ... and both equal the same two steps on one device.
    state, step, *_ = tp.setup(micro_batches=2)
    for i in range(2):
        state, m = step(state, tp.make_batch(i))
    np.testing.assert_allclose(float(m["loss"]), a["losses"][-1], rtol=1e-5, atol=1e-6)
    ref = {"embed": state.params["embed"], "head": state.params["head"], "w1": state.params["mlp"]["w1"],
           "w2": state.params["mlp"]["w2"], "proj": state.params["vision"]["proj"]}  # fmt: skip
    for k, v in ref.items():
        np.testing.assert_allclose(pa[k], np.asarray(v), atol=1e-5, err_msg=k)


def test_state_specs_of_the_reference_follow_the_params():
    params = tp.init_params(0)
    tx, _ = trainer.make_optimizer({"learning_rate": 1.0}, 4)
    shape = jax.eval_shape(lambda p: trainer.init_state(p, tx, jax.random.PRNGKey(0), beta=0.04), params)
    specs = trainer.state_specs(shape, tp.SPECS, tx)
    assert specs.ref_params == tp.SPECS and specs.step == P() and specs.rng == P()
    shape0 = jax.eval_shape(lambda p: trainer.init_state(p, tx, jax.random.PRNGKey(0), beta=0.0), params)
    assert trainer.state_specs(shape0, tp.SPECS, tx).ref_params is None
