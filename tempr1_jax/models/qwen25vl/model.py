"""Qwen2.5-VL in Flax NNX: vision tower, Qwen2.5 decoder with M-RoPE, KV cache, chunked log-probs.

Layout of the parameters (all stacked over layers so that one ``lax.scan`` runs the blocks):

    visual.patch_embed [1176, Dv]                           visual.blocks.* [depth, ...]
    visual.merger.{ln_q, fc1_kernel, fc1_bias, fc2_kernel, fc2_bias}
    text.embed [V, D]   text.layers.* [L, ...]   text.norm [D]   text.lm_head [D, V] (absent when tied)

Every parameter is an ``nnx.Param`` carrying ``out_sharding`` (a tuple of mesh axis names among ``fsdp`` and
``tp``, or None); ``sharding.param_partition_specs`` turns them into ``PartitionSpec``s.

Numerics follow the HF reference: RMSNorm normalizes in fp32, casts back and multiplies by the weight; the LM
rope tables are computed in fp32 and cast to the compute dtype; the ViT rope is applied in fp32; attention
softmax is fp32 (``jax.nn.dot_product_attention``); the merger GELU is exact (erf).

Static shapes: the text is [B, L] with a mask; the vision input is a packed patch sequence of static size with
gather tables (``rope.pack_vision``): window attention and per-frame-pair ("full") attention are each one
batched attention call over fixed-size blocks, so nothing loops over windows or frames and nothing recompiles
per video.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from tempr1_jax.models.qwen25vl import lora
from tempr1_jax.models.qwen25vl.config import Qwen25VLConfig
from tempr1_jax.sharding import BATCH_AXES

Array = jax.Array


# ----------------------------------------------------------------------------------------------------
# Parameter helpers


def _param(rngs: nnx.Rngs | None, kind: str, shape: tuple[int, ...], spec: tuple, dtype: Any) -> nnx.Param:
    """kind: 'normal' (std 0.02), 'zeros' or 'ones'."""
    if len(spec) != len(shape):
        raise ValueError(f"partition spec {spec} does not match shape {shape}")
    if kind == "normal":
        value = 0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)
        value = value.astype(dtype)
    elif kind == "zeros":
        value = jnp.zeros(shape, dtype)
    elif kind == "ones":
        value = jnp.ones(shape, dtype)
    else:
        raise ValueError(kind)
    return nnx.Param(value, out_sharding=spec, eager_sharding=False)


def _rms_norm(x: Array, weight: Array, eps: float) -> Array:
    """HF rounding order: normalize in fp32, cast to the input dtype, multiply by the weight."""
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * xf.astype(x.dtype)


def _rotate_half(x: Array) -> Array:
    h = x.shape[-1] // 2
    return jnp.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def _dense(x: Array, kernel: Array, bias: Array | None = None) -> Array:
    y = jnp.matmul(x, kernel.astype(x.dtype))
    return y if bias is None else y + bias.astype(x.dtype)


def _add_adapters(module: nnx.Module, cfg: Qwen25VLConfig, prefix: str, rngs: nnx.Rngs | None) -> None:
    """``<kernel>_lora_a`` (he-uniform) and ``<kernel>_lora_b`` (zeros) float32 ``nnx.LoRAParam``s beside every
    kernel of ``module`` (param paths ``prefix/<kernel>``) that ``cfg.lora.targets`` selects."""
    for path in lora.targeted(cfg.lora):
        if not path.startswith(prefix + "/"):
            continue
        name, stacked = path[len(prefix) + 1:], lora.ELIGIBLE[path]
        kernel = getattr(module, name)
        a_shape, b_shape = lora.shapes_of(tuple(kernel.shape), stacked, cfg.lora.rank)
        spec = tuple(kernel.get_metadata().get("out_sharding") or (None,) * kernel.ndim)
        lead = spec[:1] if stacked else ()
        a_spec, b_spec = (*lead, spec[len(lead)], None), (*lead, None, *spec[len(lead) + 1:])
        bound = np.sqrt(6.0 / a_shape[-2])  # he-uniform over the fan-in (nnx.LoRA's default for A)
        a = jax.random.uniform(rngs.params(), a_shape, jnp.float32, -bound, bound)
        setattr(module, f"{name}_lora_a", nnx.LoRAParam(a, out_sharding=a_spec, eager_sharding=False))
        setattr(module, f"{name}_lora_b", nnx.LoRAParam(jnp.zeros(b_shape, jnp.float32), out_sharding=b_spec,
                                                        eager_sharding=False))


def _proj(p: dict, name: str, x: Array, bias: Array | None, scale: float) -> Array:
    """``x @ p[name] (+ bias)``, plus the low-rank path when ``p`` holds the kernel's adapters."""
    y = _dense(x, p[name], bias)
    if name + "_lora_a" in p:
        y = y + lora.delta(x, p[name + "_lora_a"], p[name + "_lora_b"], scale)
    return y


def shard_batch(x: Array) -> Array:
    """Constrain activations [B, ...] to be split over the batch axes of the current mesh (``jax.set_mesh``).

    FSDP semantics: activations stay batch-sharded and parameters are gathered per layer. A no-op without a
    mesh context or when B does not divide.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = tuple(a for a in BATCH_AXES if a in mesh.shape)
    size = 1
    for a in axes:
        size *= mesh.shape[a]
    if not axes or x.shape[0] % size:
        return x
    return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(axes, *([None] * (x.ndim - 1))))


def replicate(x: Array) -> Array:
    """Constrain ``x`` to be replicated over the current mesh (no-op without ``jax.set_mesh``)."""
    if jax.sharding.get_abstract_mesh().empty:
        return x
    return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec())


def _remat(fn, policy: str):
    if policy == "none":
        return fn
    if policy == "full":
        return jax.checkpoint(fn)
    if policy == "dots":
        return jax.checkpoint(fn, policy=jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims)
    raise ValueError(f"unknown remat policy {policy!r}")


# ----------------------------------------------------------------------------------------------------
# Vision tower


class VisionBlocks(nnx.Module):
    """``depth`` pre-norm ViT blocks stacked on axis 0: RMSNorm, fused qkv (+bias), 2-D rope, proj, SwiGLU."""

    def __init__(self, cfg: Qwen25VLConfig, rngs: nnx.Rngs | None):
        v, dt = cfg.vision, jnp.dtype(cfg.param_dtype)
        n, d, i = v.depth, v.hidden_size, v.intermediate_size
        self.norm1 = _param(rngs, "ones", (n, d), (None, None), dt)
        self.norm2 = _param(rngs, "ones", (n, d), (None, None), dt)
        self.qkv_kernel = _param(rngs, "normal", (n, d, 3, d), (None, "fsdp", None, "tp"), dt)
        self.qkv_bias = _param(rngs, "zeros", (n, 3, d), (None, None, "tp"), dt)
        self.proj_kernel = _param(rngs, "normal", (n, d, d), (None, "tp", "fsdp"), dt)
        self.proj_bias = _param(rngs, "zeros", (n, d), (None, None), dt)
        self.gate_kernel = _param(rngs, "normal", (n, d, i), (None, "fsdp", "tp"), dt)
        self.gate_bias = _param(rngs, "zeros", (n, i), (None, "tp"), dt)
        self.up_kernel = _param(rngs, "normal", (n, d, i), (None, "fsdp", "tp"), dt)
        self.up_bias = _param(rngs, "zeros", (n, i), (None, "tp"), dt)
        self.down_kernel = _param(rngs, "normal", (n, i, d), (None, "tp", "fsdp"), dt)
        self.down_bias = _param(rngs, "zeros", (n, d), (None, None), dt)
        _add_adapters(self, cfg, "visual/blocks", rngs)

    def arrays(self) -> dict[str, Array]:
        return {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}


class PatchMerger(nnx.Module):
    """RMSNorm, group 4 consecutive patches (one 2x2 unit), Linear -> exact GELU -> Linear to the LM width."""

    def __init__(self, cfg: Qwen25VLConfig, rngs: nnx.Rngs | None):
        v, dt = cfg.vision, jnp.dtype(cfg.param_dtype)
        d4 = v.hidden_size * v.merge_unit
        self.ln_q = _param(rngs, "ones", (v.hidden_size,), (None,), dt)
        self.fc1_kernel = _param(rngs, "normal", (d4, d4), ("fsdp", "tp"), dt)
        self.fc1_bias = _param(rngs, "zeros", (d4,), ("tp",), dt)
        self.fc2_kernel = _param(rngs, "normal", (d4, v.out_hidden_size), ("tp", "fsdp"), dt)
        self.fc2_bias = _param(rngs, "zeros", (v.out_hidden_size,), (None,), dt)
        self.lora_scale = cfg.lora.scale
        _add_adapters(self, cfg, "visual/merger", rngs)

    def __call__(self, x: Array, eps: float, merge_unit: int) -> Array:
        p = {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}
        x = _rms_norm(x, p["ln_q"], eps)
        x = x.reshape(x.shape[0] // merge_unit, -1)
        x = _proj(p, "fc1_kernel", x, p["fc1_bias"], self.lora_scale)
        x = jax.nn.gelu(x, approximate=False)
        return _proj(p, "fc2_kernel", x, p["fc2_bias"], self.lora_scale)


def _vision_rope(pos: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
    """pos int [P, 2] (row, col) -> cos, sin fp32 [P, head_dim]: [r*f, c*f] twice, f = theta^(-2i/(hd/2))."""
    spatial = head_dim // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(0, spatial, 2, dtype=jnp.float32) / spatial))
    freqs = pos.astype(jnp.float32)[..., None] * inv_freq  # [P, 2, hd/4]
    freqs = freqs.reshape(pos.shape[0], -1)  # [P, hd/2] = [row freqs, col freqs]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def _block_attention(
    q: Array, k: Array, v: Array, index: Array, lengths: Array, inverse: Array, impl: str | None
) -> Array:
    """Attention within blocks: gather [P, H, hd] rows into [NB, S, H, hd] by ``index`` (valid slots first,
    ``lengths`` of them), attend with padding masks in one call, and gather back through ``inverse``."""
    nb, s = index.shape
    qb, kb, vb = (jnp.take(t, index, axis=0) for t in (q, k, v))
    out = jax.nn.dot_product_attention(
        qb, kb, vb, key_value_seq_lengths=lengths, implementation=impl
    )  # [NB, S, H, hd]
    out = out.reshape(nb * s, *out.shape[2:])
    return jnp.take(out, inverse, axis=0)


class VisionTower(nnx.Module):
    def __init__(self, cfg: Qwen25VLConfig, rngs: nnx.Rngs | None):
        v, dt = cfg.vision, jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.patch_embed = _param(rngs, "normal", (v.patch_dim, v.hidden_size), (None, "tp"), dt)
        self.blocks = VisionBlocks(cfg, rngs)
        self.merger = PatchMerger(cfg, rngs)

    def __call__(self, vision: dict[str, Array]) -> Array:
        """vision: ``rope.pack_vision`` output -> merged features [P/4, out_hidden] (compute dtype)."""
        cfg, v = self.cfg, self.cfg.vision
        dtype = jnp.dtype(cfg.dtype)
        x = _dense(vision["pixel_values"].astype(dtype), self.patch_embed[...])
        cos, sin = _vision_rope(vision["pos"], v.head_dim, v.rope_theta)
        full = jnp.asarray(np.isin(np.arange(v.depth), v.fullatt_block_indexes))  # per-layer attention kind
        heads, hd = v.num_heads, v.head_dim
        impl, scale = cfg.attention_impl, cfg.lora.scale

        def block(x, p_and_full):
            p, is_full = p_and_full
            h = _rms_norm(x, p["norm1"], v.rms_norm_eps)
            qkv = jnp.einsum("pd,dtk->ptk", h, p["qkv_kernel"].astype(h.dtype))
            qkv = qkv + p["qkv_bias"].astype(h.dtype)
            if "qkv_kernel_lora_a" in p:
                qkv = qkv + lora.delta(h, p["qkv_kernel_lora_a"], p["qkv_kernel_lora_b"], scale)
            qkv = qkv.reshape(qkv.shape[0], 3, heads, hd)
            q, k, val = qkv[:, 0], qkv[:, 1], qkv[:, 2]
            c, s = cos[:, None, :], sin[:, None, :]
            qf, kf = q.astype(jnp.float32), k.astype(jnp.float32)
            q = (qf * c + _rotate_half(qf) * s).astype(h.dtype)
            k = (kf * c + _rotate_half(kf) * s).astype(h.dtype)
            attn = jax.lax.cond(
                is_full,
                lambda q, k, val: _block_attention(
                    q, k, val, vision["frame_index"], vision["frame_len"], vision["frame_inverse"], impl
                ),
                lambda q, k, val: _block_attention(
                    q, k, val, vision["win_index"], vision["win_len"], vision["win_inverse"], impl
                ),
                q,
                k,
                val,
            )
            x = x + _proj(p, "proj_kernel", attn.reshape(attn.shape[0], -1), p["proj_bias"], scale)
            h = _rms_norm(x, p["norm2"], v.rms_norm_eps)
            g = jax.nn.silu(_proj(p, "gate_kernel", h, p["gate_bias"], scale))
            x = x + _proj(p, "down_kernel", g * _proj(p, "up_kernel", h, p["up_bias"], scale), p["down_bias"], scale)
            return x, None

        x, _ = jax.lax.scan(
            _remat(block, cfg.remat), x, (self.blocks.arrays(), full), unroll=not cfg.scan_layers
        )
        return self.merger(x, v.rms_norm_eps, v.merge_unit)


# ----------------------------------------------------------------------------------------------------
# Language model


class TextLayers(nnx.Module):
    """``num_hidden_layers`` Qwen2.5 decoder layers stacked on axis 0."""

    def __init__(self, cfg: Qwen25VLConfig, rngs: nnx.Rngs | None):
        t, dt = cfg.text, jnp.dtype(cfg.param_dtype)
        n, d, i = t.num_hidden_layers, t.hidden_size, t.intermediate_size
        hq, hkv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
        self.input_norm = _param(rngs, "ones", (n, d), (None, None), dt)
        self.post_norm = _param(rngs, "ones", (n, d), (None, None), dt)
        self.q_kernel = _param(rngs, "normal", (n, d, hq), (None, "fsdp", "tp"), dt)
        self.q_bias = _param(rngs, "zeros", (n, hq), (None, "tp"), dt)
        self.k_kernel = _param(rngs, "normal", (n, d, hkv), (None, "fsdp", "tp"), dt)
        self.k_bias = _param(rngs, "zeros", (n, hkv), (None, "tp"), dt)
        self.v_kernel = _param(rngs, "normal", (n, d, hkv), (None, "fsdp", "tp"), dt)
        self.v_bias = _param(rngs, "zeros", (n, hkv), (None, "tp"), dt)
        self.o_kernel = _param(rngs, "normal", (n, hq, d), (None, "tp", "fsdp"), dt)
        self.gate_kernel = _param(rngs, "normal", (n, d, i), (None, "fsdp", "tp"), dt)
        self.up_kernel = _param(rngs, "normal", (n, d, i), (None, "fsdp", "tp"), dt)
        self.down_kernel = _param(rngs, "normal", (n, i, d), (None, "tp", "fsdp"), dt)
        _add_adapters(self, cfg, "text/layers", rngs)

    def arrays(self) -> dict[str, Array]:
        return {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}


def mrope_cos_sin(
    position_ids: Array, head_dim: int, theta: float, section: tuple[int, ...], dtype: Any
) -> tuple[Array, Array]:
    """position_ids int [3, B, L] -> cos, sin [B, L, head_dim] in ``dtype`` (computed in fp32).

    Frequency slot j of the head_dim/2 slots takes its position from axis 0 (t), 1 (h) or 2 (w) according to
    ``mrope_section``; the table is then repeated twice (rotate-half layout, not interleaved).
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = position_ids.astype(jnp.float32)[..., None] * inv_freq  # [3, B, L, hd/2]
    parts, start = [], 0
    for a, n in enumerate(section):
        parts.append(freqs[a, ..., start : start + n])
        start += n
    freqs = jnp.concatenate(parts, axis=-1)  # [B, L, hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


@struct.dataclass
class KVCache:
    """Static-size KV cache for all layers.

    k, v: [layers, B, C, KV, head_dim] (compute dtype); valid: bool [B, C] (slot holds a real token);
    index: int32 scalar, the next slot to write (the same for every row); next_pos: int32 [B], the M-RoPE
    position of the next token (all three axes), i.e. rope_delta + number of real tokens so far.
    Size it for prompt + new tokens: under jit a write past the end cannot raise and lands on the last slot.
    """

    k: Array
    v: Array
    valid: Array
    index: Array
    next_pos: Array

    @property
    def max_length(self) -> int:
        return self.k.shape[2]

    def repeat_rows(self, n: int) -> KVCache:
        """Each row repeated ``n`` times (row b -> rows b*n .. b*n+n-1): prefill a prompt once, then sample a
        GRPO group of ``n`` completions from it."""
        return self.replace(
            k=jnp.repeat(self.k, n, axis=1),
            v=jnp.repeat(self.v, n, axis=1),
            valid=jnp.repeat(self.valid, n, axis=0),
            next_pos=jnp.repeat(self.next_pos, n, axis=0),
        )


class TextModel(nnx.Module):
    def __init__(self, cfg: Qwen25VLConfig, rngs: nnx.Rngs | None):
        t, dt = cfg.text, jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        # Vocab split over tp and fsdp, hidden replicated: the lookup is a masked local gather plus an
        # all-reduce, and its output can be split over the batch without another exchange.
        self.embed = _param(rngs, "normal", (t.vocab_size, t.hidden_size), (("tp", "fsdp"), None), dt)
        self.layers = TextLayers(cfg, rngs)
        self.norm = _param(rngs, "ones", (t.hidden_size,), (None,), dt)
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(rngs, "normal", (t.hidden_size, t.vocab_size), ("fsdp", "tp"), dt)

    def head_weight(self) -> Array:
        """Output head as a [D, V] matrix (the transposed embedding when tied)."""
        if self.cfg.tie_word_embeddings:
            return self.embed[...].T
        return self.lm_head[...]

    # -- one decoder layer, split so the cached and uncached paths share code
    def _qkv(self, p: dict, x: Array, cos: Array, sin: Array) -> tuple[Array, Array, Array]:
        t = self.cfg.text
        h = _rms_norm(x, p["input_norm"], t.rms_norm_eps)
        b, seq = h.shape[:2]
        s = self.cfg.lora.scale
        q = _proj(p, "q_kernel", h, p["q_bias"], s).reshape(b, seq, t.num_attention_heads, t.head_dim)
        k = _proj(p, "k_kernel", h, p["k_bias"], s).reshape(b, seq, t.num_key_value_heads, t.head_dim)
        v = _proj(p, "v_kernel", h, p["v_bias"], s).reshape(b, seq, t.num_key_value_heads, t.head_dim)
        c, s = cos[:, :, None, :], sin[:, :, None, :]
        q = q * c + _rotate_half(q) * s
        k = k * c + _rotate_half(k) * s
        return q, k, v

    def _finish(self, p: dict, x: Array, attn: Array) -> Array:
        t = self.cfg.text
        b, seq = attn.shape[:2]
        s = self.cfg.lora.scale
        x = x + _proj(p, "o_kernel", attn.reshape(b, seq, -1), None, s)
        h = _rms_norm(x, p["post_norm"], t.rms_norm_eps)
        g = jax.nn.silu(_proj(p, "gate_kernel", h, None, s))
        return x + _proj(p, "down_kernel", g * _proj(p, "up_kernel", h, None, s), None, s)

    def _attend(self, q: Array, k: Array, v: Array, attention_mask: Array, q_offset: int = 0) -> Array:
        """Causal attention of queries q [B, Lq] at positions ``q_offset + i`` over keys [B, Lk] with a key padding
        mask [B, Lk] (1 = token): query i sees the keys at positions <= q_offset + i. Self-attention is
        ``q_offset = 0``, Lq = Lk; a group's completions over their prompt's keys and their own use Lq = T,
        Lk = prompt + T, ``q_offset`` = prompt length."""
        impl = self.cfg.attention_impl
        if impl == "cudnn" and q_offset == 0:  # cuDNN flash attention: causal + per-row lengths (right padding)
            lengths = jnp.sum(attention_mask.astype(jnp.int32), axis=-1)
            return jax.nn.dot_product_attention(
                q,
                k,
                v,
                is_causal=True,
                query_seq_lengths=lengths,
                key_value_seq_lengths=lengths,
                implementation="cudnn",
            )
        impl = "xla" if impl == "cudnn" else impl
        b, seq = q.shape[:2]
        keys = k.shape[1]
        key_ok = attention_mask.astype(bool)[:, None, None, :]
        chunk = self.cfg.attention_chunk
        if not chunk or seq <= chunk:
            causal = (q_offset + jnp.arange(seq))[:, None] >= jnp.arange(keys)[None, :]
            return jax.nn.dot_product_attention(
                q, k, v, mask=causal[None, None] & key_ok, implementation=impl
            )
        # Query blocks of ``chunk`` rows, each rematerialized: the [B, H, chunk, Lk] fp32 scores of one block
        # exist at a time instead of [B, H, Lq, Lk].
        n = -(-seq // chunk)
        qp = jnp.pad(q, ((0, 0), (0, n * chunk - seq), (0, 0), (0, 0)))
        qp = qp.reshape(b, n, chunk, *q.shape[2:]).swapaxes(0, 1)

        @jax.checkpoint
        def block(args):
            qi, i = args
            rows = q_offset + i * chunk + jnp.arange(chunk)
            causal = rows[:, None] >= jnp.arange(keys)[None, :]
            return jax.nn.dot_product_attention(
                qi, k, v, mask=causal[None, None] & key_ok, implementation=impl
            )

        out = jax.lax.map(block, (qp, jnp.arange(n)))
        return out.swapaxes(0, 1).reshape(b, n * chunk, *q.shape[2:])[:, :seq]

    def cos_sin(self, position_ids: Array, dtype: Any) -> tuple[Array, Array]:
        t = self.cfg.text
        return mrope_cos_sin(position_ids, t.head_dim, t.rope_theta, t.mrope_section, dtype)

    def __call__(self, x: Array, position_ids: Array, attention_mask: Array) -> Array:
        """x [B, L, D] embeddings -> final-normed hidden states [B, L, D] (no cache)."""
        cos, sin = self.cos_sin(position_ids, x.dtype)

        def layer(x, p):
            x = shard_batch(x)
            q, k, v = self._qkv(p, x, cos, sin)
            return shard_batch(self._finish(p, x, self._attend(q, k, v, attention_mask))), None

        x, _ = jax.lax.scan(
            _remat(layer, self.cfg.remat), x, self.layers.arrays(), unroll=not self.cfg.scan_layers
        )
        return _rms_norm(x, self.norm[...], self.cfg.text.rms_norm_eps)

    def grouped(
        self, xp: Array, pos_p: Array, mask_p: Array, xc: Array, pos_c: Array, mask_c: Array
    ) -> tuple[Array, Array]:
        """A GRPO batch with each prompt computed once: prompts xp [Bp, Lp, D] (positions [3, Bp, Lp], mask
        [Bp, Lp]) and their completions xc [Bp * G, T, D] (G contiguous rows per prompt; positions
        [3, Bp * G, T], mask [Bp * G, T]). Each completion attends to its prompt's keys and causally to its own,
        exactly as the concatenated row [prompt, completion] would, while the prompt's layers run on Bp rows
        instead of Bp * G. Returns the final-normed hidden states (prompts [Bp, Lp, D], completions [B, T, D])."""
        g = xc.shape[0] // xp.shape[0]
        lp = xp.shape[1]
        cos_p, sin_p = self.cos_sin(pos_p, xp.dtype)
        cos_c, sin_c = self.cos_sin(pos_c, xc.dtype)
        mask_all = jnp.concatenate([jnp.repeat(mask_p, g, axis=0), mask_c], axis=1)

        def layer(carry, p):
            xp, xc = shard_batch(carry[0]), shard_batch(carry[1])
            qp, kp, vp = self._qkv(p, xp, cos_p, sin_p)
            qc, kc, vc = self._qkv(p, xc, cos_c, sin_c)
            xp_new = self._finish(p, xp, self._attend(qp, kp, vp, mask_p))
            k = jnp.concatenate([jnp.repeat(kp, g, axis=0), kc], axis=1)
            v = jnp.concatenate([jnp.repeat(vp, g, axis=0), vc], axis=1)
            xc_new = self._finish(p, xc, self._attend(qc, k, v, mask_all, q_offset=lp))
            return (shard_batch(xp_new), shard_batch(xc_new)), None

        (xp, xc), _ = jax.lax.scan(
            _remat(layer, self.cfg.remat), (xp, xc), self.layers.arrays(), unroll=not self.cfg.scan_layers
        )
        eps = self.cfg.text.rms_norm_eps
        return _rms_norm(xp, self.norm[...], eps), _rms_norm(xc, self.norm[...], eps)

    def prefill(
        self, x: Array, position_ids: Array, attention_mask: Array, cache: KVCache
    ) -> tuple[Array, KVCache]:
        """Run the prompt [B, Lp] (Lp <= cache length), writing its keys/values to cache slots [0, Lp)."""
        cos, sin = self.cos_sin(position_ids, x.dtype)
        seq = x.shape[1]
        if seq > cache.max_length:
            raise ValueError(f"prompt length {seq} exceeds the KV cache length {cache.max_length}")

        def layer(carry, p_i):
            x, ck, cv = carry
            p, i = p_i
            q, k, v = self._qkv(p, x, cos, sin)
            ck = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), (i, 0, 0, 0, 0))
            cv = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), (i, 0, 0, 0, 0))
            return (self._finish(p, x, self._attend(q, k, v, attention_mask)), ck, cv), None

        n = self.cfg.text.num_hidden_layers
        (x, ck, cv), _ = jax.lax.scan(
            layer,
            (x, cache.k, cache.v),
            (self.layers.arrays(), jnp.arange(n)),
            unroll=not self.cfg.scan_layers,
        )
        mask = attention_mask.astype(bool)
        valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, 0))
        next_pos = jnp.max(jnp.where(mask[None], position_ids, -1), axis=(0, 2)).astype(jnp.int32) + 1
        cache = cache.replace(k=ck, v=cv, valid=valid, index=jnp.asarray(seq, jnp.int32), next_pos=next_pos)
        return _rms_norm(x, self.norm[...], self.cfg.text.rms_norm_eps), cache

    def decode(self, x: Array, cache: KVCache, token_valid: Array | None = None) -> tuple[Array, KVCache]:
        """One token per row: x [B, 1, D] at slot ``cache.index`` with position ``cache.next_pos``."""
        b = x.shape[0]
        pos = jnp.broadcast_to(cache.next_pos[None, :, None], (3, b, 1))
        cos, sin = self.cos_sin(pos, x.dtype)
        tv = jnp.ones((b,), bool) if token_valid is None else token_valid.astype(bool)
        valid = jax.lax.dynamic_update_slice(cache.valid, tv[:, None], (0, cache.index))
        kv_mask = valid[:, None, None, :]
        impl = "xla" if self.cfg.attention_impl == "cudnn" else self.cfg.attention_impl

        def layer(carry, p_i):
            x, ck, cv = carry
            p, i = p_i
            q, k, v = self._qkv(p, x, cos, sin)
            ck = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), (i, 0, cache.index, 0, 0))
            cv = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), (i, 0, cache.index, 0, 0))
            kl = jax.lax.dynamic_index_in_dim(ck, i, 0, keepdims=False).astype(q.dtype)
            vl = jax.lax.dynamic_index_in_dim(cv, i, 0, keepdims=False).astype(q.dtype)
            attn = jax.nn.dot_product_attention(q, kl, vl, mask=kv_mask, implementation=impl)
            return (self._finish(p, x, attn), ck, cv), None

        n = self.cfg.text.num_hidden_layers
        (x, ck, cv), _ = jax.lax.scan(
            layer,
            (x, cache.k, cache.v),
            (self.layers.arrays(), jnp.arange(n)),
            unroll=not self.cfg.scan_layers,
        )
        cache = cache.replace(
            k=ck, v=cv, valid=valid, index=cache.index + 1, next_pos=cache.next_pos + tv.astype(jnp.int32)
        )
        return _rms_norm(x, self.norm[...], self.cfg.text.rms_norm_eps), cache


# ----------------------------------------------------------------------------------------------------
# The full model

VISION_KEYS = ("pixel_values", "pos", "win_index", "win_len", "win_inverse", "frame_index", "frame_len",
               "frame_inverse")  # fmt: skip


def _check_text(input_ids: Array, position_ids: Array, attention_mask: Array) -> None:
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {input_ids.shape}")
    if position_ids.shape != (3, *input_ids.shape):
        raise ValueError(
            f"position_ids must be [3, B, L] = {(3, *input_ids.shape)} (rope.get_rope_index), "
            f"got {position_ids.shape}"
        )
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {attention_mask.shape} != input_ids shape {input_ids.shape}")


def _check_vision(cfg: Qwen25VLConfig, vision: dict[str, Array]) -> None:
    missing = [k for k in VISION_KEYS if k not in vision]
    if missing:
        raise ValueError(f"vision batch lacks {missing}; build it with rope.pack_vision")
    p = vision["pixel_values"].shape
    if len(p) != 2 or p[1] != cfg.vision.patch_dim or p[0] % cfg.vision.merge_unit:
        raise ValueError(f"vision pixel_values shape {p}: want [P, {cfg.vision.patch_dim}] with P % 4 == 0")


class Qwen25VL(nnx.Module):
    """Qwen2.5-VL. Build with ``Qwen25VL(cfg, rngs=nnx.Rngs(0))`` (random init) or
    ``params.load_hf_checkpoint``.

    Inputs shared by the methods: input_ids int32 [B, L]; position_ids int32 [3, B, L] (from
    ``rope.get_rope_index``); attention_mask [B, L] (1 = token); vision: ``rope.pack_vision`` dict or None.
    Visual pad tokens (image and video ids) are replaced, in row-major order, by the merged vision features of
    the packed inputs in order. Shapes are checked when tracing (a clear ValueError, no cost per step).
    """

    def __init__(self, cfg: Qwen25VLConfig, *, rngs: nnx.Rngs | None):
        cfg.validate()
        self.cfg = cfg
        self.visual = VisionTower(cfg, rngs)
        self.text = TextModel(cfg, rngs)

    # -- pieces
    def vision_features(self, vision: dict[str, Array]) -> Array:
        """Merged vision features [P/4, D] for the packed patches (padding rows at the end are junk)."""
        _check_vision(self.cfg, vision)
        return self.visual(vision)

    def embed(
        self,
        input_ids: Array,
        vision: dict[str, Array] | None = None,
        vision_features: Array | None = None,
        vision_mask: Array | None = None,
    ) -> Array:
        """Token embeddings [B, L, D] (compute dtype) with vision features at the image/video pad positions.

        Pass ``vision_features`` (from ``vision_features``) to reuse them, e.g. across a GRPO group: either
        [K, D], consumed in row-major order by all rows' visual pads, or [B, F, D], row b's k-th visual pad
        taking ``vision_features[b, k]`` (one packed vision batch per row, e.g. a prompt's features repeated
        for its G completions). ``vision_mask`` bool [B, L] says which positions take vision features (default:
        every image/video pad id). A sampled completion can contain a pad id as text: a prompt-only mask then
        embeds it as the text token it was when it was sampled.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {input_ids.shape}")
        dtype = jnp.dtype(self.cfg.dtype)
        x = shard_batch(jnp.take(self.text.embed[...], input_ids, axis=0).astype(dtype))
        if vision_features is None and vision is not None:
            vision_features = self.vision_features(vision)
        if vision_features is None:
            return x
        is_vis = (input_ids == self.cfg.image_token_id) | (input_ids == self.cfg.video_token_id)
        if vision_mask is not None:
            if vision_mask.shape != input_ids.shape:
                raise ValueError(f"vision_mask {vision_mask.shape} must have input_ids' shape {input_ids.shape}")
            is_vis = is_vis & vision_mask
        if vision_features.ndim == 3:
            if vision_features.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"per-row vision_features {vision_features.shape} need one row per input row "
                    f"({input_ids.shape[0]})"
                )
            k = jnp.clip(jnp.cumsum(is_vis.astype(jnp.int32), axis=1) - 1, 0, vision_features.shape[1] - 1)
            feats = jnp.take_along_axis(vision_features.astype(dtype), k[..., None], axis=1)
            return jnp.where(is_vis[..., None], shard_batch(feats), x)
        flat = is_vis.reshape(-1)
        idx = jnp.clip(jnp.cumsum(flat.astype(jnp.int32)) - 1, 0, vision_features.shape[0] - 1)
        feats = jnp.take(replicate(vision_features.astype(dtype)), idx, axis=0)
        feats = shard_batch(feats.reshape(x.shape))
        return jnp.where(is_vis[..., None], feats, x)

    def head_weight(self) -> Array:
        """[D, V] output head (tied embedding transposed for the 3B)."""
        return self.text.head_weight()

    # -- forward
    def __call__(
        self,
        input_ids: Array,
        position_ids: Array,
        attention_mask: Array,
        vision: dict[str, Array] | None = None,
        vision_features: Array | None = None,
        vision_mask: Array | None = None,
    ) -> Array:
        """Final hidden states [B, L, D] (after the last RMSNorm, before the head). ``vision_mask``: see embed."""
        _check_text(input_ids, position_ids, attention_mask)
        x = self.embed(input_ids, vision, vision_features, vision_mask)
        return self.text(x, position_ids, attention_mask)

    def grouped(
        self,
        prompt_ids: Array,
        prompt_positions: Array,
        prompt_mask: Array,
        completion_ids: Array,
        completion_positions: Array,
        completion_mask: Array,
        vision_features: Array | None = None,
    ) -> tuple[Array, Array]:
        """Final hidden states of prompts [Bp, Lp] and their G completions each [Bp * G, T], each prompt computed
        once (``TextModel.grouped``): the same values as the forward of the concatenated rows. Positions are
        [3, rows, length]; ``vision_features`` [Bp, F, D] go to the prompts' visual pads only (a completion
        that sampled a pad id embeds it as the text token it was when it was sampled)."""
        _check_text(prompt_ids, prompt_positions, prompt_mask)
        _check_text(completion_ids, completion_positions, completion_mask)
        if completion_ids.shape[0] % prompt_ids.shape[0]:
            raise ValueError(f"{completion_ids.shape[0]} completion rows are not a multiple of "
                             f"{prompt_ids.shape[0]} prompts")
        xp = self.embed(prompt_ids, vision_features=vision_features)
        xc = self.embed(completion_ids)
        return self.text.grouped(xp, prompt_positions, prompt_mask, xc, completion_positions, completion_mask)

    def logits(
        self,
        input_ids: Array,
        position_ids: Array,
        attention_mask: Array,
        vision: dict[str, Array] | None = None,
    ) -> Array:
        """Full fp32 logits [B, L, V] (tests and small batches; GRPO should use
        ``token_logprobs_and_entropy``)."""
        h = self(input_ids, position_ids, attention_mask, vision)
        return jnp.einsum(
            "bld,dv->blv", h, self.head_weight().astype(h.dtype), preferred_element_type=jnp.float32
        )

    # -- generation
    def init_cache(self, batch: int, max_length: int, dtype: Any = None) -> KVCache:
        t = self.cfg.text
        if batch <= 0 or max_length <= 0:
            raise ValueError(f"init_cache: batch {batch} and max_length {max_length} must be positive")
        dtype = jnp.dtype(dtype or self.cfg.dtype)
        shape = (t.num_hidden_layers, batch, max_length, t.num_key_value_heads, t.head_dim)
        return KVCache(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            valid=jnp.zeros((batch, max_length), bool),
            index=jnp.zeros((), jnp.int32),
            next_pos=jnp.zeros((batch,), jnp.int32),
        )

    def _head(self, h: Array) -> Array:
        return jnp.einsum(
            "...d,dv->...v", h, self.head_weight().astype(h.dtype), preferred_element_type=jnp.float32
        )

    def prefill(
        self,
        input_ids: Array,
        position_ids: Array,
        attention_mask: Array,
        cache: KVCache,
        vision: dict[str, Array] | None = None,
        vision_features: Array | None = None,
    ) -> tuple[Array, KVCache]:
        """Prompt pass. Returns (fp32 logits [B, V] at each row's last real token, filled cache).

        Works with left or right padding; decoding continues at slot L for every row (gaps are masked).
        """
        _check_text(input_ids, position_ids, attention_mask)
        if cache.k.shape[1] != input_ids.shape[0]:
            raise ValueError(f"cache batch {cache.k.shape[1]} != input_ids batch {input_ids.shape[0]}")
        x = self.embed(input_ids, vision, vision_features)
        h, cache = self.text.prefill(x, position_ids, attention_mask, cache)
        seq = input_ids.shape[1]
        last = jnp.max(jnp.where(attention_mask.astype(bool), jnp.arange(seq)[None], 0), axis=1)
        h_last = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
        return self._head(h_last), cache

    def decode_step(
        self,
        tokens: Array,
        cache: KVCache,
        token_valid: Array | None = None,
    ) -> tuple[Array, KVCache]:
        """One decoding step: tokens int32 [B] -> (fp32 logits [B, V], cache advanced by one slot).

        token_valid bool [B] (default all True): rows marked False (finished sequences) write a masked slot
        and do not advance their position.
        """
        x = jnp.take(self.text.embed[...], tokens[:, None], axis=0).astype(jnp.dtype(self.cfg.dtype))
        h, cache = self.text.decode(x, cache, token_valid)
        return self._head(h[:, 0]), cache


# ----------------------------------------------------------------------------------------------------
# Log-probs and entropy without materializing [B, L, V] fp32 logits


def token_logprobs_and_entropy(
    hidden: Array,
    head: Array | Qwen25VL,
    targets: Array,
    *,
    chunk_size: int = 256,
    temperature: float = 1.0,
) -> tuple[Array, Array]:
    """Per-token log p(target) and entropy of the softmax, computed ``chunk_size`` positions at a time.

    hidden [B, L, D] (final hidden states, e.g. ``model(...)`` shifted so position l predicts targets[:, l]);
    head: [D, V] matrix or the model (its possibly tied head); targets int [B, L].
    Returns (logp [B, L] fp32, entropy [B, L] fp32). Logits are divided by ``temperature``. Each chunk is
    rematerialized in the backward pass, so peak memory holds one [B, chunk, V] fp32 block, not [B, L, V].
    """
    w = head.head_weight() if isinstance(head, Qwen25VL) else head
    b, seq, d = hidden.shape
    if targets.shape != (b, seq):
        raise ValueError(f"targets shape {targets.shape} != hidden [B, L] {(b, seq)}")
    c = max(1, min(chunk_size, seq))
    n = -(-seq // c)
    pad = n * c - seq
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    t = jnp.pad(targets.astype(jnp.int32), ((0, 0), (0, pad)))
    h = h.reshape(b, n, c, d).transpose(1, 0, 2, 3)
    t = t.reshape(b, n, c).transpose(1, 0, 2)
    w = w.astype(hidden.dtype)

    @jax.checkpoint
    def chunk(args):
        hc, tc = args
        logits = jnp.einsum("bcd,dv->bcv", hc, w, preferred_element_type=jnp.float32)
        if temperature != 1.0:
            logits = logits / temperature
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0]
        probs = jnp.exp(logits - lse[..., None])
        ent = lse - jnp.sum(probs * logits, axis=-1)
        return picked - lse, ent

    logp, ent = jax.lax.map(chunk, (h, t))
    logp = logp.transpose(1, 0, 2).reshape(b, n * c)[:, :seq]
    ent = ent.transpose(1, 0, 2).reshape(b, n * c)[:, :seq]
    return logp, ent
