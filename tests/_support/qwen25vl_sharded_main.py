"""Run in a subprocess by test_qwen25vl_sharding.py with 8 fake CPU devices (XLA_FLAGS set before jax loads).

Checks on a (data 2, fsdp 2, tp 2) mesh: the sharded forward (hidden states and logits), the checkpoint loaded
straight onto the mesh, and prefill + decode all equal the single-device results.
"""

from __future__ import annotations

import os
import sys
import tempfile

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", ""), "set XLA_FLAGS first"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from tempr1_jax.models.qwen25vl import config as qconfig  # noqa: E402
from tempr1_jax.models.qwen25vl import params, rope  # noqa: E402
from tempr1_jax.models.qwen25vl.model import Qwen25VL  # noqa: E402
from tempr1_jax.models.qwen25vl.sharding import param_shardings, shard_model  # noqa: E402
from tempr1_jax.sharding import BATCH_AXES, make_mesh  # noqa: E402


def main() -> int:
    assert jax.device_count() == 8, jax.devices()
    cfg = qconfig.preset("tiny", dtype="float32")
    model = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    # Randomize norms and biases too so that a mis-sharded or mis-mapped parameter shows.
    state = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(state))))
    nnx.update(
        model, jax.tree.map(lambda x: x + 0.05 * jax.random.normal(next(keys), x.shape, x.dtype), state)
    )

    rng = np.random.default_rng(0)
    grids = [(2, 4, 6), (1, 6, 4)]
    seqs = []
    for g in grids:
        n = g[0] * g[1] * g[2] // 4
        seqs.append(
            [3, cfg.vision_start_token_id] + [cfg.video_token_id] * n + [cfg.vision_end_token_id, 4, 5]
        )
    seqs += [list(rng.integers(0, 200, size=9)), list(rng.integers(0, 200, size=14))]
    length = max(map(len, seqs)) + 1
    ids = np.full((4, length), cfg.pad_token_id)
    mask = np.zeros((4, length), np.int32)
    for b, s in enumerate(seqs):
        ids[b, : len(s)], mask[b, : len(s)] = s, 1
    pos, _ = rope.get_rope_index(cfg, ids, mask, video_grid_thw=grids, second_per_grid_ts=[1.0, 0.5])
    items = [(rng.standard_normal((t * h * w, 1176)).astype(np.float32), (t, h, w)) for t, h, w in grids]
    vis = rope.pack_vision(
        cfg, items, rope.bucket_vision_sizes(rope.required_vision_sizes(cfg.vision, grids))
    )

    graphdef = nnx.graphdef(model)

    @jax.jit
    def fwd(state, ids, pos, mask, vis):
        m = nnx.merge(graphdef, state)
        h = m(ids, pos, mask, vis)
        cache = m.init_cache(ids.shape[0], ids.shape[1] + 2)
        last, cache = m.prefill(ids, pos, mask, cache, vis)
        nxt, cache = m.decode_step(jnp.argmax(last, -1).astype(jnp.int32), cache)
        return h, m.logits(ids, pos, mask, vis), last, nxt

    def run(model, ids, pos, mask, vis):
        return [np.asarray(x) for x in fwd(nnx.state(model), ids, pos, mask, vis)]

    single = run(
        model,
        jnp.asarray(ids),
        jnp.asarray(pos),
        jnp.asarray(mask),
        {k: jnp.asarray(v) for k, v in vis.items()},
    )

    mesh = make_mesh({"data": 2, "fsdp": 2, "tp": 2})
    with tempfile.TemporaryDirectory() as d:
        params.export_hf_checkpoint(model, d, dtype="float32")
        loaded = params.load_hf_checkpoint(d, mesh=mesh, dtype="float32")
    shard_model(model, mesh)
    for m in (model, loaded):
        want = param_shardings(m, mesh)
        arrays = jax.tree.leaves(nnx.state(m, nnx.Param))
        for w, x in zip(jax.tree.leaves(want), arrays, strict=True):
            assert w.is_equivalent_to(x.sharding, x.ndim), (w, x.sharding)
    q = loaded.text.layers.q_kernel[...]
    assert q.sharding.spec == PartitionSpec(None, "fsdp", "tp"), q.sharding
    assert len({str(s.index) for s in q.addressable_shards}) == 4  # fsdp x tp blocks

    batch = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    batch3 = NamedSharding(mesh, PartitionSpec(None, BATCH_AXES))
    repl = NamedSharding(mesh, PartitionSpec())
    args = (
        jax.device_put(ids, batch),
        jax.device_put(pos, batch3),
        jax.device_put(mask, batch),
        {k: jax.device_put(v, repl) for k, v in vis.items()},
    )
    for m in (model, loaded):
        with jax.set_mesh(mesh):  # with a mesh context the model also constrains activations to the batch
            sharded = run(m, *args)
        for name, a, b in zip(("hidden", "logits", "prefill", "decode"), single, sharded, strict=True):
            err = float(np.abs(a - b).max())
            assert err < 1e-5, (name, err)
    print("SHARDED_OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
