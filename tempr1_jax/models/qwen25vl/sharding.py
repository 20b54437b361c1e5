"""Partition specs for the Qwen2.5-VL parameters over mesh axes ``fsdp`` and ``tp`` (``data`` is pure DP).

Each ``nnx.Param`` carries its spec as ``out_sharding`` metadata (set in ``model.py``): kernels shard their
input dimension over ``fsdp`` and their output (heads / MLP width / vocab) over ``tp``; norms and small biases
are replicated; the layer axis of stacked parameters is never sharded.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def _state(model_or_state: Any) -> Any:
    if isinstance(model_or_state, nnx.Module):
        return nnx.state(model_or_state, nnx.Param)
    return model_or_state


def fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh | None) -> PartitionSpec:
    """Drop mesh axes that the mesh lacks or that do not divide the dimension (e.g. tiny test models)."""
    if mesh is None:
        return spec
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        names = tuple(a for a in names if a in mesh.shape)
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        if not names or dim % size:
            out.append(None)
        else:
            out.append(names[0] if len(names) == 1 else names)
    return PartitionSpec(*out)


def param_partition_specs(model_or_state: Any, mesh: Mesh | None = None) -> Any:
    """A pytree of ``PartitionSpec`` with the structure of ``nnx.state(model, nnx.Param)``.

    With ``mesh``, axes that do not divide a dimension (or are absent from the mesh) are dropped, so the
    result is always valid for ``NamedSharding(mesh, spec)``. Accepts the model, its param state, or an
    abstract state from ``nnx.eval_shape``.
    """
    state = _state(model_or_state)
    specs = nnx.get_partition_spec(state)
    if mesh is None:
        return specs
    return jax.tree.map(lambda s, x: fit_spec(s, tuple(x.shape), mesh), specs, state)


def param_shardings(model_or_state: Any, mesh: Mesh) -> Any:
    """``NamedSharding`` per parameter (same structure as the param state)."""
    specs = param_partition_specs(model_or_state, mesh)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs)


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Place every parameter of ``model`` on ``mesh`` according to its spec (in place; returns the model)."""
    state = nnx.state(model, nnx.Param)
    shardings = param_shardings(state, mesh)
    nnx.update(model, jax.device_put(state, shardings))
    return model
