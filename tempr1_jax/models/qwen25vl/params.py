"""Load a local HF Qwen2.5-VL checkpoint into the NNX model, and export the model back to an HF directory.

Loading reads the safetensors files through memory maps (a small header parser, so bf16 works without torch)
and builds every parameter with ``jax.make_array_from_callback``: each device reads only its own shard of each
tensor straight from the file, converted to the requested dtype, so no full host copy of the model is held per
device. Accepted layouts: a single ``model.safetensors``, shards with ``model.safetensors.index.json`` (or
bare ``*.safetensors`` files), legacy keys (``visual.*``, ``model.*``, ``lm_head.weight``; what the hub and
``save_pretrained`` write) and the newer in-memory keys (``model.visual.*``, ``model.language_model.*``). A
tied checkpoint (3B) has no ``lm_head.weight``.

Export writes config.json (transformers-5 nested layout) and the legacy key layout in bf16 / fp32 safetensors,
sharded when larger than ``max_shard_bytes``; tokenizer / processor files can be copied from the source dir.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding

from tempr1_jax.models.qwen25vl import lora
from tempr1_jax.models.qwen25vl.config import Qwen25VLConfig, from_hf_config, to_hf_dict
from tempr1_jax.models.qwen25vl.model import Qwen25VL
from tempr1_jax.models.qwen25vl.sharding import param_partition_specs

# ----------------------------------------------------------------------------------------------------
# Minimal safetensors reader / writer (numpy memmap; handles BF16 through ml_dtypes)

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(jnp.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(bool),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsFile:
    """Lazy reader of one .safetensors file: ``tensor(name)`` is a read-only memmap view."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n <= 0 or n > 100_000_000:
                    raise ValueError(f"implausible header length {n}")
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error) as e:
            raise ValueError(f"{self.path}: not a readable safetensors file ({e})") from None
        self._base = 8 + n
        self.metadata = header.pop("__metadata__", {}) or {}
        self.entries: dict[str, dict] = header
        self._mm: np.memmap | None = None

    def keys(self) -> list[str]:
        return list(self.entries)

    def tensor(self, name: str) -> np.ndarray:
        e = self.entries[name]
        if e["dtype"] not in _DTYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {e['dtype']}")
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        start, end = e["data_offsets"]
        raw = self._mm[self._base + start : self._base + end]
        dt = _DTYPES[e["dtype"]]
        shape = tuple(e["shape"])
        if raw.size != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise ValueError(f"{self.path}: tensor {name!r} byte size does not match shape {shape}")
        return raw.view(dt).reshape(shape)


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write numpy arrays (bf16 via ml_dtypes allowed) as a .safetensors file."""
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    arrays = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype not in _NAMES:
            raise ValueError(f"write_safetensors: tensor {name!r} has unsupported dtype {arr.dtype}")
        header[name] = {
            "dtype": _NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays:
            f.write(arr.tobytes())


def normalize_key(key: str) -> str:
    """Newer in-memory names -> the legacy checkpoint names."""
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model.") :]
    if key.startswith("model.visual."):
        return key[len("model.") :]
    return key


class Checkpoint:
    """All tensors of a local HF checkpoint directory, by (legacy) key."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"checkpoint directory {self.path} does not exist")
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{index}: invalid index ({e!r})") from None
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (self.path / f).is_file()]
            if missing:
                raise FileNotFoundError(f"{index} lists shard(s) not present: {missing}")
        elif (self.path / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            files = sorted(p.name for p in self.path.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"{self.path}: no *.safetensors weights found")
        self.files = {f: SafetensorsFile(self.path / f) for f in files}
        self.where: dict[str, tuple[str, str]] = {}  # legacy key -> (file, raw key)
        for fname, sf in self.files.items():
            for raw in sf.keys():
                key = normalize_key(raw)
                if key in self.where:
                    raise ValueError(
                        f"{self.path}: tensor {key!r} appears twice ({self.where[key][0]}, {fname})"
                    )
                self.where[key] = (fname, raw)

    def has(self, key: str) -> bool:
        return key in self.where

    def get(self, key: str) -> np.ndarray:
        if key not in self.where:
            raise KeyError(f"{self.path}: tensor {key!r} not found in the checkpoint")
        fname, raw = self.where[key]
        return self.files[fname].tensor(raw)


# ----------------------------------------------------------------------------------------------------
# Key mapping


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one of our parameters comes from: ``keys`` (one per layer when stacked) and the two
    transforms."""

    keys: tuple[str, ...]
    stacked: bool
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _ident(a: np.ndarray) -> np.ndarray:
    return a


def _t(a: np.ndarray) -> np.ndarray:
    return a.T


def hf_sources(cfg: Qwen25VLConfig) -> dict[tuple[str, ...], Source]:
    """Our parameter path -> HF source tensors."""
    v, t = cfg.vision, cfg.text
    dv = v.hidden_size

    def vis(name: str, to_ours=_t, to_hf=_t) -> Source:
        return Source(tuple(f"visual.blocks.{i}.{name}" for i in range(v.depth)), True, to_ours, to_hf)

    def txt(name: str, to_ours=_t, to_hf=_t) -> Source:
        return Source(
            tuple(f"model.layers.{i}.{name}" for i in range(t.num_hidden_layers)), True, to_ours, to_hf
        )

    def one(key: str, to_ours=_ident, to_hf=_ident) -> Source:
        return Source((key,), False, to_ours, to_hf)

    shape5 = (dv, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    out: dict[tuple[str, ...], Source] = {
        ("visual", "patch_embed"): one(
            "visual.patch_embed.proj.weight",
            lambda a: a.reshape(a.shape[0], -1).T,
            lambda a: a.T.reshape(shape5),
        ),
        ("visual", "blocks", "norm1"): vis("norm1.weight", _ident, _ident),
        ("visual", "blocks", "norm2"): vis("norm2.weight", _ident, _ident),
        ("visual", "blocks", "qkv_kernel"): vis(
            "attn.qkv.weight", lambda a: a.T.reshape(a.shape[1], 3, -1), lambda a: a.reshape(a.shape[0], -1).T
        ),
        ("visual", "blocks", "qkv_bias"): vis(
            "attn.qkv.bias", lambda a: a.reshape(3, -1), lambda a: a.reshape(-1)
        ),
        ("visual", "blocks", "proj_kernel"): vis("attn.proj.weight"),
        ("visual", "blocks", "proj_bias"): vis("attn.proj.bias", _ident, _ident),
        ("visual", "blocks", "gate_kernel"): vis("mlp.gate_proj.weight"),
        ("visual", "blocks", "gate_bias"): vis("mlp.gate_proj.bias", _ident, _ident),
        ("visual", "blocks", "up_kernel"): vis("mlp.up_proj.weight"),
        ("visual", "blocks", "up_bias"): vis("mlp.up_proj.bias", _ident, _ident),
        ("visual", "blocks", "down_kernel"): vis("mlp.down_proj.weight"),
        ("visual", "blocks", "down_bias"): vis("mlp.down_proj.bias", _ident, _ident),
        ("visual", "merger", "ln_q"): one("visual.merger.ln_q.weight"),
        ("visual", "merger", "fc1_kernel"): one("visual.merger.mlp.0.weight", _t, _t),
        ("visual", "merger", "fc1_bias"): one("visual.merger.mlp.0.bias"),
        ("visual", "merger", "fc2_kernel"): one("visual.merger.mlp.2.weight", _t, _t),
        ("visual", "merger", "fc2_bias"): one("visual.merger.mlp.2.bias"),
        ("text", "embed"): one("model.embed_tokens.weight"),
        ("text", "layers", "input_norm"): txt("input_layernorm.weight", _ident, _ident),
        ("text", "layers", "post_norm"): txt("post_attention_layernorm.weight", _ident, _ident),
        ("text", "layers", "q_kernel"): txt("self_attn.q_proj.weight"),
        ("text", "layers", "q_bias"): txt("self_attn.q_proj.bias", _ident, _ident),
        ("text", "layers", "k_kernel"): txt("self_attn.k_proj.weight"),
        ("text", "layers", "k_bias"): txt("self_attn.k_proj.bias", _ident, _ident),
        ("text", "layers", "v_kernel"): txt("self_attn.v_proj.weight"),
        ("text", "layers", "v_bias"): txt("self_attn.v_proj.bias", _ident, _ident),
        ("text", "layers", "o_kernel"): txt("self_attn.o_proj.weight"),
        ("text", "layers", "gate_kernel"): txt("mlp.gate_proj.weight"),
        ("text", "layers", "up_kernel"): txt("mlp.up_proj.weight"),
        ("text", "layers", "down_kernel"): txt("mlp.down_proj.weight"),
        ("text", "norm"): one("model.norm.weight"),
    }
    if not cfg.tie_word_embeddings:
        out[("text", "lm_head")] = one("lm_head.weight", _t, _t)
    return out


def _path_names(path: tuple) -> tuple[str, ...]:
    names = []
    for p in path:
        for attr in ("key", "name", "idx"):
            if hasattr(p, attr):
                names.append(str(getattr(p, attr)))
                break
    return tuple(names)


def _map_params(state: Any, fn: Callable[[tuple[str, ...], nnx.Variable], Any]) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, var: fn(_path_names(path), var), state, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )


# ----------------------------------------------------------------------------------------------------
# Loading


def abstract_model(cfg: Qwen25VLConfig) -> Qwen25VL:
    """The model with ``ShapeDtypeStruct`` parameters (nothing allocated)."""
    return nnx.eval_shape(lambda: Qwen25VL(cfg, rngs=nnx.Rngs(0)))


def load_hf_checkpoint(
    path: str | Path,
    *,
    config: Qwen25VLConfig | None = None,
    mesh: Mesh | None = None,
    strict: bool = True,
    **config_overrides: Any,
) -> Qwen25VL:
    """Build a ``Qwen25VL`` from a local HF Qwen2.5-VL directory.

    config: defaults to ``from_hf_config(path, **config_overrides)`` (overrides such as ``dtype="bfloat16"``,
    ``param_dtype="float32"``, ``attention_impl``, ``remat``). Parameters are created in ``param_dtype`` and,
    with ``mesh``, sharded by ``sharding.param_partition_specs`` (else placed on the first device). ``strict``
    rejects checkpoint tensors that map to nothing (a tied checkpoint's ``lm_head.weight`` is always ignored).
    """
    cfg = config if config is not None else from_hf_config(path, **config_overrides)
    ckpt = Checkpoint(path)
    sources = hf_sources(cfg)
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    if mesh is not None:
        specs = param_partition_specs(abs_state, mesh)
        spec_of = {}
        _map_params(specs, lambda names, var: spec_of.__setitem__(names, var.get_value()))
    device = jax.devices()[0]
    used: set[str] = set()

    def load(names: tuple[str, ...], var: nnx.Variable) -> nnx.Variable:
        if names not in sources:
            raise KeyError(f"no HF source for parameter {'.'.join(names)}")
        src = sources[names]
        shape, dtype = tuple(var.shape), np.dtype(var.dtype)
        missing = [k for k in src.keys if not ckpt.has(k)]
        if missing:
            hint = (
                " (set tie_word_embeddings in config.json if the head is tied)" if "lm_head" in names else ""
            )
            raise KeyError(
                f"{ckpt.path}: missing tensor(s) {missing[:3]}{'...' if len(missing) > 3 else ''}{hint}"
            )
        views = [src.to_ours(ckpt.get(k)) for k in src.keys]
        got = (len(views), *views[0].shape) if src.stacked else views[0].shape
        if tuple(got) != shape:
            raise ValueError(
                f"{ckpt.path}: {src.keys[0]} gives shape {tuple(got)} for {'.'.join(names)}, "
                f"config expects {shape}"
            )
        used.update(src.keys)

        def callback(index: tuple[slice, ...]) -> np.ndarray:
            if src.stacked:
                layers = range(*index[0].indices(shape[0]))
                block = np.stack([np.asarray(views[i][index[1:]]) for i in layers])
            else:
                block = np.asarray(views[0][index])
            return block.astype(dtype)

        sharding = NamedSharding(mesh, spec_of[names]) if mesh is not None else SingleDeviceSharding(device)
        return var.replace(jax.make_array_from_callback(shape, sharding, callback))

    state = _map_params(abs_state, load)
    extra = sorted(set(ckpt.where) - used - ({"lm_head.weight"} if cfg.tie_word_embeddings else set()))
    if extra and strict:
        raise ValueError(
            f"{ckpt.path}: {len(extra)} checkpoint tensor(s) map to no parameter, e.g. {extra[:5]}"
        )
    return nnx.merge(graphdef, state)


# ----------------------------------------------------------------------------------------------------
# Export

_AUX_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)


def export_hf_checkpoint(
    model: Qwen25VL,
    out_dir: str | Path,
    *,
    dtype: str = "bfloat16",
    max_shard_bytes: int = 4 * 1024**3,
    copy_aux_from: str | Path | None = None,
) -> Path:
    """Write ``model`` as an HF Qwen2.5-VL directory that ``transformers`` loads (legacy key layout).

    dtype: "bfloat16" (as released) or "float32". Tensors are fetched one at a time. Tokenizer / processor
    files (tokenizer.json, chat template, preprocessor_config.json, ...) are copied from ``copy_aux_from``.
    A model with LoRA adapters is exported merged: each adapted kernel is written as ``W + (alpha / r) A B``
    (computed in float32), so the directory is a plain Qwen2.5-VL.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    np_dtype = np.dtype(jnp.dtype(dtype))
    sources = hf_sources(cfg)
    state = nnx.state(model, nnx.Param)
    tensors: dict[str, np.ndarray] = {}
    merged = lora.merged_kernels(lora.flat(state), cfg) if cfg.lora.rank else {}

    def collect(names: tuple[str, ...], var: nnx.Variable) -> None:
        if lora.is_adapter("/".join(names)):
            return
        src = sources[names]
        value = merged.get("/".join(names))
        arr = np.asarray(jax.device_get(var.get_value()) if value is None else value).astype(np_dtype)
        if src.stacked:
            for i, key in enumerate(src.keys):
                tensors[key] = np.ascontiguousarray(src.to_hf(arr[i]))
        else:
            tensors[src.keys[0]] = np.ascontiguousarray(src.to_hf(arr))

    _map_params(state, collect)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = tensors[key].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += nbytes
    for stale in list(out.glob("model*.safetensors")) + [out / "model.safetensors.index.json"]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        write_safetensors(out / "model.safetensors", shards[0])
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(out / fname, shard)
            weight_map.update({k: fname for k in shard})
        total = sum(a.nbytes for a in tensors.values())
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    (out / "config.json").write_text(json.dumps(to_hf_dict(cfg, torch_dtype=dtype), indent=2))
    if copy_aux_from is not None:
        src_dir = Path(copy_aux_from)
        for name in _AUX_FILES:
            if (src_dir / name).is_file():
                shutil.copy2(src_dir / name, out / name)
    return out
