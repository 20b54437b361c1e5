"""Model mechanics without torch: sharding on 8 fake devices, compile-once per bucket, remat, bf16 params."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tempr1_jax.models.qwen25vl import config as qconfig
from tempr1_jax.models.qwen25vl import rope
from tempr1_jax.models.qwen25vl.model import Qwen25VL, token_logprobs_and_entropy

REPO = Path(__file__).resolve().parents[1]


def test_sharded_forward_on_8_fake_devices_equals_single_device():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO),
    )
    r = subprocess.run(
        [sys.executable, str(REPO / "tests" / "_support" / "qwen25vl_sharded_main.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and "SHARDED_OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def _batch(cfg, grids, length, rng):
    seqs = []
    for t, h, w in grids:
        seqs.append(
            [7, cfg.vision_start_token_id]
            + [cfg.video_token_id] * (t * h * w // 4)
            + [cfg.vision_end_token_id, 8]
        )
    ids = np.full((len(grids), length), cfg.pad_token_id)
    mask = np.zeros_like(ids)
    for b, s in enumerate(seqs):
        ids[b, : len(s)], mask[b, : len(s)] = s, 1
    pos, _ = rope.get_rope_index(cfg, ids, mask, video_grid_thw=grids, second_per_grid_ts=[1.0] * len(grids))
    items = [(rng.standard_normal((t * h * w, 1176)).astype(np.float32), (t, h, w)) for t, h, w in grids]
    return ids, pos, mask, items


def test_compile_once_per_bucket():
    cfg = qconfig.preset("tiny", dtype="float32")
    model = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    traces = []

    @jax.jit
    def fwd(state, ids, pos, mask, vis):
        traces.append(1)
        return nnx.merge(graphdef, state).logits(ids, pos, mask, vis)

    rng = np.random.default_rng(0)
    bucket = rope.VisionSizes(num_patches=256, num_windows=16, num_frames=8, frame_patches=64)
    for grids in ([(2, 4, 6), (1, 6, 6)], [(1, 8, 8), (3, 2, 4)]):  # different videos, same bucket
        ids, pos, mask, items = _batch(cfg, grids, 40, rng)
        vis = rope.pack_vision(cfg, items, bucket)
        out = fwd(state, ids, pos, mask, vis)
        assert np.all(np.isfinite(np.asarray(out)))
    assert len(traces) == 1
    ids, pos, mask, items = _batch(cfg, [(2, 8, 8)], 40, rng)
    fwd(state, ids, pos, mask, rope.pack_vision(cfg, items, rope.VisionSizes(512, 16, 8, 64)))
    assert len(traces) == 2


def _loss(model, ids, pos, mask, vis):
    h = model(ids, pos, mask, vis)
    logp, ent = token_logprobs_and_entropy(h[:, :-1], model, ids[:, 1:], chunk_size=8)
    return jnp.sum(logp * mask[:, 1:]) + 0.01 * jnp.sum(ent)


@pytest.mark.slow  # three gradient compilations, ~25 s on 2 cores
def test_remat_gives_same_gradients():
    rng = np.random.default_rng(1)
    base = qconfig.preset("tiny", dtype="float32")
    ids, pos, mask, items = _batch(base, [(2, 4, 4)], 24, rng)
    vis = {k: jnp.asarray(v) for k, v in rope.pack_vision(base, items).items()}
    grad_fn = nnx.jit(nnx.grad(_loss))
    grads = []
    for policy in ("none", "full", "dots"):
        model = Qwen25VL(base.replace(remat=policy), rngs=nnx.Rngs(0))
        grads.append(grad_fn(model, jnp.asarray(ids), jnp.asarray(pos), jnp.asarray(mask), vis))
    for other in grads[1:]:
        for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(other), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(nnx.state(grads[0].visual)))


def test_bf16_params_and_compute():
    cfg = qconfig.preset("tiny", dtype="bfloat16", param_dtype="bfloat16")
    model = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    rng = np.random.default_rng(2)
    ids, pos, mask, items = _batch(cfg, [(2, 4, 4)], 20, rng)
    vis = rope.pack_vision(cfg, items)
    h = nnx.jit(lambda m, *a: m(*a))(model, ids, pos, mask, vis)
    assert h.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(h)))
    cache = model.init_cache(1, 24)
    assert cache.k.dtype == jnp.bfloat16 and cache.k.shape == (2, 1, 24, 2, 16)


def test_query_chunked_attention_equals_dense():
    base = qconfig.preset("tiny", dtype="float32")
    rng = np.random.default_rng(3)
    mask = np.ones((2, 30), np.int32)
    mask[1, :5] = 0  # left padding
    ids = jnp.asarray(rng.integers(0, 200, size=(2, 30)))
    pos = jnp.asarray(rope.text_positions(mask))
    w = jnp.asarray(rng.standard_normal((2, 30, 64)), jnp.float32)

    @nnx.jit
    @nnx.value_and_grad
    def loss(model):
        return jnp.sum(model(ids, pos, jnp.asarray(mask)) * w * jnp.asarray(mask)[..., None])

    dense = Qwen25VL(base, rngs=nnx.Rngs(0))
    chunked = Qwen25VL(base.replace(attention_chunk=8), rngs=nnx.Rngs(0))  # 30 rows: 4 blocks, last padded
    (l1, g1), (l2, g2) = loss(dense), loss(chunked)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(nnx.state(g1.text)), jax.tree.leaves(nnx.state(g2.text)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unrolled_layers_equal_scan():
    base = qconfig.preset("tiny", dtype="float32")
    rng = np.random.default_rng(4)
    ids, pos, mask, items = _batch(base, [(2, 4, 6)], 24, rng)
    vis = rope.pack_vision(base, items)
    fwd = nnx.jit(lambda m, *a: m.logits(*a))
    a = fwd(Qwen25VL(base, rngs=nnx.Rngs(0)), ids, pos, mask, vis)
    b = fwd(Qwen25VL(base.replace(scan_layers=False), rngs=nnx.Rngs(0)), ids, pos, mask, vis)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    cfg = qconfig.preset("tiny", dtype="float32")
    model = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    ids = jnp.zeros((2, 8), jnp.int32)
    mask = jnp.ones((2, 8), jnp.int32)
    with pytest.raises(ValueError, match="position_ids must be"):
        model(ids, jnp.zeros((2, 8), jnp.int32), mask)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(ids, jnp.zeros((3, 2, 8), jnp.int32), mask[:, :4])
    with pytest.raises(ValueError, match="lacks"):
        model.vision_features({"pixel_values": jnp.zeros((4, 1176))})
    with pytest.raises(ValueError, match="cache batch"):
        model.prefill(ids, jnp.zeros((3, 2, 8), jnp.int32), mask, model.init_cache(3, 16))


def test_prefill_once_repeat_rows_for_a_group():
    cfg = qconfig.preset("tiny", dtype="float32")
    model = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(5)
    ids, pos, mask, items = _batch(cfg, [(2, 4, 4)], 20, rng)
    vis = rope.pack_vision(cfg, items)
    prefill = nnx.jit(lambda m, *a: m.prefill(*a))
    decode = nnx.jit(lambda m, tok, cache: m.decode_step(tok, cache))
    last1, c1 = prefill(model, ids, pos, mask, model.init_cache(1, 24), vis)
    c1 = c1.repeat_rows(3)
    g = 3
    last3, c3 = prefill(
        model,
        np.repeat(ids, g, 0),
        np.repeat(pos, g, 1),
        np.repeat(mask, g, 0),
        model.init_cache(g, 24),
        rope.pack_vision(cfg, items * g),
    )
    np.testing.assert_allclose(np.repeat(last1, g, 0), last3, atol=1e-5)
    toks = jnp.asarray([5, 6, 7], jnp.int32)
    a, _ = decode(model, toks, c1)
    b, _ = decode(model, toks, c3)
    np.testing.assert_allclose(a, b, atol=1e-5)
