"""LoRA adapters on Qwen2.5-VL's projection kernels: ``y = W x + (alpha / r) B A x`` with A [d_in, r], B [r, out].

The adapters are ``nnx.LoRAParam`` variables next to the kernel they adapt, named ``<kernel>_lora_a`` /
``<kernel>_lora_b``, stacked over layers like the kernels (``text/layers/q_kernel`` [L, D, H] gets
``q_kernel_lora_a`` [L, D, r] and ``q_kernel_lora_b`` [L, r, H]), so the model's one ``lax.scan`` over the blocks
carries them and the low-rank path runs inside each layer: ``(x A) B``, never a full-size ``W + B A`` (whose
gradient would be a full-size matrix per layer). A is he-uniform, B zero: a fresh adapter leaves the model's
outputs exactly those of its base. ``targets`` is a regex over the kernels' param paths (``ELIGIBLE``).

Why not a library: flax's ``nnx.LoRA`` is a module wrapping one 2-D ``Linear`` (no scale, no stacked layers);
qwix (Tunix's LoRA) intercepts ``dot_general`` / ``einsum`` calls and finds the weight among the current
module's own ``nnx.Param`` attributes, which a per-layer slice taken inside ``lax.scan`` is not. We keep flax's
variable type (``nnx.LoRAParam``: ``nnx.split(model, nnx.LoRAParam, ...)`` separates the adapters) and write
the few lines of arithmetic here.

    cfg = LoraConfig(rank=16, alpha=32.0)              # Qwen25VLConfig(..., lora=cfg) builds the adapters
    adapter_shapes(model_cfg)                          # {path: (A shape, B shape)}
    param_split(model_cfg)                             # trainable (adapter) / frozen (base) parameter counts
    merged_kernels(flat_params, model_cfg)             # {kernel path: W + scale B A} for export
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tempr1_jax.models.qwen25vl.config import LoraConfig, Qwen25VLConfig

# Every projection kernel an adapter can sit on (path -> stacked over layers); the embedding, the head and the
# vision patch embedding are left out (not projections of a hidden state between blocks).
ELIGIBLE = {
    **{f"text/layers/{n}_kernel": True for n in ("q", "k", "v", "o", "gate", "up", "down")},
    **{f"visual/blocks/{n}_kernel": True for n in ("qkv", "proj", "gate", "up", "down")},
    **{f"visual/merger/{n}_kernel": False for n in ("fc1", "fc2")},
}
SUFFIXES = ("_lora_a", "_lora_b")
FREEZE_BASE = r"(?!.*_lora_[ab](/value)?$).*"  # the optimizer.freeze regex that leaves only the adapters trainable


def targeted(lora: LoraConfig) -> list[str]:
    """The eligible kernel paths that ``lora.targets`` fully matches (empty when LoRA is off)."""
    if not lora.rank:
        return []
    rx = re.compile(lora.targets)
    return [p for p in ELIGIBLE if rx.fullmatch(p)]


def is_adapter(path: str) -> bool:
    """Whether a param path (``.../q_kernel_lora_a``, with or without the state's trailing ``/value``) is an
    adapter's."""
    return path.removesuffix("/value").endswith(SUFFIXES)


def shapes_of(kernel_shape: tuple[int, ...], stacked: bool, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(A, B) shapes of a kernel [L, d_in, *out] (stacked) or [d_in, *out]."""
    lead = kernel_shape[:1] if stacked else ()
    d_in, *out = kernel_shape[1:] if stacked else kernel_shape
    return (*lead, d_in, rank), (*lead, rank, *out)


def delta(x: jax.Array, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """The low-rank path ``scale * (x A) B`` of one layer: x [..., d_in], a [d_in, r], b [r, *out] -> [..., *out]
    (compute dtype of x)."""
    xa = jnp.matmul(x, a.astype(x.dtype))
    return jnp.tensordot(xa, b.astype(x.dtype), axes=1) * jnp.asarray(scale, x.dtype)


def merged(kernel: Any, a: Any, b: Any, scale: float, stacked: bool) -> np.ndarray:
    """``W + scale * A B`` in float32 (numpy), the kernel an exported model carries."""
    k, a, b = (np.asarray(jax.device_get(t), np.float32) for t in (kernel, a, b))
    if stacked:
        ab = np.einsum("lir,lr...->li...", a, b)
    else:
        ab = np.tensordot(a, b, axes=1)
    return k + np.float32(scale) * ab


def merged_kernels(flat: Mapping[str, Any], cfg: Qwen25VLConfig) -> dict[str, np.ndarray]:
    """{kernel path: merged kernel} for every adapted kernel of ``flat`` (path -> array, adapters included)."""
    out = {}
    for path in targeted(cfg.lora):
        out[path] = merged(flat[path], flat[path + "_lora_a"], flat[path + "_lora_b"], cfg.lora.scale, ELIGIBLE[path])
    return out


def adapter_shapes(cfg: Qwen25VLConfig) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """{kernel path: (A shape, B shape)} of the model's adapters (nothing allocated; for the memory planner)."""
    from tempr1_jax.models.qwen25vl import params as qparams  # the model's param shapes

    flat = flat_shapes(qparams.abstract_model(cfg.replace(lora=LoraConfig())))
    return {p: shapes_of(flat[p], ELIGIBLE[p], cfg.lora.rank) for p in targeted(cfg.lora)}


def flat_shapes(model_or_state: Any) -> dict[str, tuple[int, ...]]:
    """{param path: shape} of a model (or its param state, abstract or not)."""
    from flax import nnx

    state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state
    return {p: tuple(x.shape) for p, x in flat(state).items()}


def flat(state: Any) -> dict[str, Any]:
    """{param path: leaf} of a param state (paths without the trailing ``/value`` of nnx variables)."""
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return {"/".join(_key(k) for k in path).removesuffix("/value"): x for path, x in leaves}


def _key(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def param_split(cfg: Qwen25VLConfig) -> dict[str, Any]:
    """What a LoRA run trains and what it keeps frozen, as parameter counts (the planner's inputs):
    ``{"trainable": n, "frozen": n, "adapters": adapter_shapes(cfg)}``. Without LoRA everything is trainable."""
    from tempr1_jax.models.qwen25vl import params as qparams

    base = sum(int(np.prod(s)) for s in flat_shapes(qparams.abstract_model(cfg.replace(lora=LoraConfig()))).values())
    shapes = adapter_shapes(cfg) if cfg.lora.rank else {}
    adapters = sum(int(np.prod(a)) + int(np.prod(b)) for a, b in shapes.values())
    if not cfg.lora.rank:
        return {"trainable": base, "frozen": 0, "adapters": {}}
    return {"trainable": adapters, "frozen": base, "adapters": shapes}


def without_adapters(params: Any) -> Any:
    """The params with every B zeroed: the model then computes exactly its base (the LoRA run's KL reference,
    without a second copy of the weights)."""

    def off(path: tuple, x: Any) -> Any:
        return (
            jnp.zeros_like(x)
            if _key(path[-1]).endswith("_lora_b") or (len(path) > 1 and _key(path[-2]).endswith("_lora_b"))
            else x
        )

    return jax.tree_util.tree_map_with_path(off, params)


def attach(base_params: Any, cfg: Qwen25VLConfig, mesh: Any = None, seed: int = 0) -> tuple[Any, Any]:
    """(graphdef, params) of the model of ``cfg`` (with adapters) whose base params are ``base_params`` (the param
    state of the same model without adapters, kept as it is) and whose adapters are fresh (B = 0, so the outputs
    are exactly the base's). With ``mesh`` the adapters are born sharded by their partition specs."""
    from flax import nnx

    from tempr1_jax.models.qwen25vl.model import Qwen25VL
    from tempr1_jax.models.qwen25vl.sharding import param_partition_specs

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: Qwen25VL(cfg, rngs=nnx.Rngs(seed))))
    make = lambda: nnx.state(Qwen25VL(cfg, rngs=nnx.Rngs(seed)), nnx.LoRAParam)  # noqa: E731 (base init: dead code)
    if mesh is None:
        adapters = jax.jit(make)()
    else:
        specs = param_partition_specs(nnx.eval_shape(make), mesh)
        shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs)
        adapters = jax.jit(make, out_shardings=shardings)()
    return graphdef, nnx.split(nnx.merge(graphdef, base_params, adapters))[1]
