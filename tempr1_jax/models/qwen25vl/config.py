"""Qwen2.5-VL configuration: frozen dataclasses with every field explicit, presets, HF config.json reader.

Never rely on the HF class defaults (they describe a 72B-like text model with rms_norm_eps 1e-5 and
tokens_per_second 4; the checkpoints use 1e-6 and 2). Pure Python: importing this module pulls no JAX.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The ViT: patch embed (Linear 1176 -> hidden), RMSNorm blocks, 2-D rope, window attention, merger."""

    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    fullatt_block_indexes: tuple[int, ...]
    tokens_per_second: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    in_channels: int = 3
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6  # hard-coded 1e-6 in the reference for blocks and merger

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size**2

    @property
    def window_merged(self) -> int:
        """Window side in merged units (112 px / 14 / 2 = 4)."""
        return self.window_size // self.spatial_merge_size // self.patch_size

    @property
    def window_patches(self) -> int:
        """Patches in one full window (8 x 8 = 64)."""
        return (self.window_merged * self.spatial_merge_size) ** 2

    def validate(self) -> None:
        _positive(
            self,
            (
                "depth",
                "hidden_size",
                "intermediate_size",
                "num_heads",
                "out_hidden_size",
                "tokens_per_second",
                "patch_size",
                "temporal_patch_size",
                "spatial_merge_size",
                "window_size",
                "in_channels",
            ),
        )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"vision hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}"
            )
        if self.head_dim % 4:
            raise ValueError(f"vision head_dim {self.head_dim} must be divisible by 4 (2-D rope)")
        bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"vision fullatt_block_indexes {bad} outside range(depth={self.depth})")
        if self.window_merged <= 0 or self.window_size % (self.spatial_merge_size * self.patch_size):
            raise ValueError(f"vision window_size {self.window_size} must be a multiple of merge*patch")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The Qwen2.5 decoder: GQA with q/k/v bias, RMSNorm, SwiGLU, sectioned M-RoPE."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, ...]
    max_position_embeddings: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        _positive(
            self,
            (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "max_position_embeddings",
            ),
        )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"text hidden_size {self.hidden_size} not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"text num_attention_heads {self.num_attention_heads} not a multiple of num_key_value_heads "
                f"{self.num_key_value_heads}"
            )
        if len(self.mrope_section) != 3 or sum(self.mrope_section) * 2 != self.head_dim:
            raise ValueError(
                f"text mrope_section {list(self.mrope_section)} must have 3 entries summing to head_dim/2 "
                f"= {self.head_dim // 2}"
            )
        if not self.rms_norm_eps > 0 or not self.rope_theta > 0:
            raise ValueError(
                f"text rms_norm_eps {self.rms_norm_eps} and rope_theta {self.rope_theta} must be > 0"
            )


ATTENTION_IMPLS = (None, "xla", "cudnn")
REMAT_POLICIES = ("none", "full", "dots")
DTYPES = ("float32", "bfloat16", "float16")  # compute and parameter dtypes
PRESETS = ("tiny", "3b", "7b")  # ``preset(name)``


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (``tempr1_jax.models.qwen25vl.lora``) on the projection kernels whose param path fully
    matches ``targets``: ``W x + (alpha / rank) B A x``. rank 0: no adapters (the default)."""

    rank: int = 0
    alpha: float = 16.0
    targets: str = r"text/layers/(q|k|v|o|gate|up|down)_kernel"
    dropout: float = 0.0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.rank else 0.0

    def validate(self) -> LoraConfig:
        import re

        from tempr1_jax.models.qwen25vl import lora  # the eligible kernels

        if not (isinstance(self.rank, int) and self.rank >= 0):
            raise ValueError(f"lora.rank={self.rank!r}: must be an integer >= 0 (0: no adapters)")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha={self.alpha!r}: must be > 0")
        if self.dropout != 0:
            raise ValueError(f"lora.dropout={self.dropout!r}: only 0 is supported (no dropout RNG reaches the "
                             "policy's forward pass)")
        try:
            re.compile(self.targets)
        except re.error as e:
            raise ValueError(f"lora.targets={self.targets!r}: not a valid regex: {e}") from None
        if self.rank and not lora.targeted(self):
            raise ValueError(f"lora.targets={self.targets!r}: matches no projection kernel; they are "
                             f"{', '.join(lora.ELIGIBLE)}")
        return self


@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig:
    """Full model config. ``dtype`` is the compute dtype, ``param_dtype`` the storage dtype of parameters.

    attention_impl: passed to ``jax.nn.dot_product_attention`` (None/"xla" everywhere, "cudnn" for cuDNN flash
      attention on GPU with bf16/fp16 compute; the text prefill then assumes right padding).
    remat: "none", "full" (recompute each block in the backward pass) or "dots" (save matmul outputs only).
    attention_chunk: with the XLA attention, split the text queries into blocks of this many rows (0 = off)
      so that long sequences never hold [B, H, L, L] fp32 scores at once (TPU / CPU memory).
    scan_layers: run the stacked blocks with one ``lax.scan`` (fast compiles for deep models); False unrolls
      them (longer compiles, usually faster steps, markedly so on CPU).
    lora: low-rank adapters (``LoraConfig``; rank 0, the default, builds none).
    """

    text: TextConfig
    vision: VisionConfig
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    tie_word_embeddings: bool
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    attention_impl: str | None = None
    remat: str = "none"
    attention_chunk: int = 0
    scan_layers: bool = True
    lora: LoraConfig = LoraConfig()

    def validate(self) -> Qwen25VLConfig:
        self.text.validate()
        self.lora.validate()
        self.vision.validate()
        if self.vision.out_hidden_size != self.text.hidden_size:
            raise ValueError(
                f"vision out_hidden_size {self.vision.out_hidden_size} != "
                f"text hidden_size {self.text.hidden_size}"
            )
        for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            v = getattr(self, name)
            if not 0 <= v < self.text.vocab_size:
                raise ValueError(f"{name} {v} outside the vocabulary [0, {self.text.vocab_size})")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl {self.attention_impl!r} not in {ATTENTION_IMPLS}")
        if not isinstance(self.attention_chunk, int) or self.attention_chunk < 0:
            raise ValueError(f"attention_chunk must be an int >= 0, got {self.attention_chunk!r}")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers must be a bool, got {self.scan_layers!r}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat {self.remat!r} not in {REMAT_POLICIES}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} {getattr(self, name)!r} not one of {', '.join(DTYPES)}")
        return self

    def replace(self, **kw: Any) -> Qwen25VLConfig:
        return dataclasses.replace(self, **kw).validate()


def _positive(obj: Any, names: tuple[str, ...]) -> None:
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{type(obj).__name__}.{n} must be a positive int, got {v!r}")


# ----------------------------------------------------------------------------------------------------
# Presets (values from the released checkpoints' config.json; see notes/qwen25vl.md section 4)

_QWEN_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    fullatt_block_indexes=(7, 15, 23, 31),
    tokens_per_second=2,
)
_QWEN_IDS = dict(
    image_token_id=151655,
    video_token_id=151656,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    bos_token_id=151643,
    eos_token_id=(151645, 151643),
    pad_token_id=151643,
)


def preset(name: str, **overrides: Any) -> Qwen25VLConfig:
    """``tiny`` (tests, demos), ``3b`` or ``7b`` (Qwen2.5-VL-{3B,7B}-Instruct); overrides replace fields."""
    if name == "tiny":
        cfg = Qwen25VLConfig(
            text=TextConfig(
                vocab_size=256,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                rms_norm_eps=1e-6,
                rope_theta=1e6,
                mrope_section=(2, 3, 3),
                max_position_embeddings=4096,
            ),
            vision=VisionConfig(
                depth=2,
                hidden_size=32,
                intermediate_size=48,
                num_heads=2,
                out_hidden_size=64,
                fullatt_block_indexes=(1,),
                tokens_per_second=2,
            ),
            image_token_id=251,
            video_token_id=252,
            vision_start_token_id=249,
            vision_end_token_id=250,
            tie_word_embeddings=False,
            bos_token_id=253,
            eos_token_id=(254,),
            pad_token_id=255,
        )
    elif name == "3b":
        cfg = Qwen25VLConfig(
            text=TextConfig(
                vocab_size=151936,
                hidden_size=2048,
                intermediate_size=11008,
                num_hidden_layers=36,
                num_attention_heads=16,
                num_key_value_heads=2,
                rms_norm_eps=1e-6,
                rope_theta=1e6,
                mrope_section=(16, 24, 24),
                max_position_embeddings=128000,
            ),
            vision=VisionConfig(out_hidden_size=2048, **_QWEN_VISION),
            tie_word_embeddings=True,
            **_QWEN_IDS,
        )
    elif name == "7b":
        cfg = Qwen25VLConfig(
            text=TextConfig(
                vocab_size=152064,
                hidden_size=3584,
                intermediate_size=18944,
                num_hidden_layers=28,
                num_attention_heads=28,
                num_key_value_heads=4,
                rms_norm_eps=1e-6,
                rope_theta=1e6,
                mrope_section=(16, 24, 24),
                max_position_embeddings=128000,
            ),
            vision=VisionConfig(out_hidden_size=3584, **_QWEN_VISION),
            tie_word_embeddings=False,
            **_QWEN_IDS,
        )
    else:
        raise ValueError(f"unknown Qwen2.5-VL preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(cfg, **overrides).validate()


# ----------------------------------------------------------------------------------------------------
# HF config.json reader (flat hub layout and nested transformers-5 layout)


def _need(d: dict, key: str, where: str, src: str) -> Any:
    if key not in d or d[key] is None:
        raise ValueError(f"{src}: required field {where}{key!r} is missing")
    return d[key]


def from_hf_dict(raw: dict, *, source: str = "config.json", **overrides: Any) -> Qwen25VLConfig:
    """Build a config from a parsed HF ``config.json`` (either layout). Overrides replace top-level fields."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    mt = raw.get("model_type")
    if mt is not None and mt != "qwen2_5_vl":
        raise ValueError(f"{source}: model_type {mt!r} is not 'qwen2_5_vl'")
    nested = isinstance(raw.get("text_config"), dict)
    text = dict(raw["text_config"]) if nested else dict(raw)
    where = "text_config." if nested else ""
    if not isinstance(raw.get("vision_config"), dict):
        raise ValueError(f"{source}: required object 'vision_config' is missing")
    vis = raw["vision_config"]

    rope = text.get("rope_parameters") or text.get("rope_scaling") or raw.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ValueError(f"{source}: {where}rope_parameters/rope_scaling must be an object, got {rope!r}")
    theta = rope.get("rope_theta", text.get("rope_theta", raw.get("rope_theta")))
    if theta is None:
        raise ValueError(f"{source}: rope_theta is missing (neither {where}rope_parameters nor top level)")
    section = rope.get("mrope_section")
    if section is None:
        raise ValueError(f"{source}: mrope_section is missing from {where}rope_parameters / rope_scaling")
    if text.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: {where}hidden_act {text['hidden_act']!r} unsupported (only silu)")
    if text.get("use_sliding_window", False):
        raise ValueError(f"{source}: {where}use_sliding_window=true is not supported (Qwen2.5-VL uses none)")

    n_heads = _need(text, "num_attention_heads", where, source)
    tcfg = TextConfig(
        vocab_size=_need(text, "vocab_size", where, source),
        hidden_size=_need(text, "hidden_size", where, source),
        intermediate_size=_need(text, "intermediate_size", where, source),
        num_hidden_layers=_need(text, "num_hidden_layers", where, source),
        num_attention_heads=n_heads,
        num_key_value_heads=text.get("num_key_value_heads") or n_heads,
        rms_norm_eps=float(_need(text, "rms_norm_eps", where, source)),
        rope_theta=float(theta),
        mrope_section=tuple(int(s) for s in section),
        max_position_embeddings=_need(text, "max_position_embeddings", where, source),
    )
    vw = "vision_config."
    if vis.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: vision_config.hidden_act {vis['hidden_act']!r} unsupported (only silu)")
    vrope = vis.get("rope_parameters") or {}
    vcfg = VisionConfig(
        depth=_need(vis, "depth", vw, source),
        hidden_size=_need(vis, "hidden_size", vw, source),
        intermediate_size=_need(vis, "intermediate_size", vw, source),
        num_heads=_need(vis, "num_heads", vw, source),
        out_hidden_size=_need(vis, "out_hidden_size", vw, source),
        fullatt_block_indexes=tuple(int(i) for i in _need(vis, "fullatt_block_indexes", vw, source)),
        tokens_per_second=_need(vis, "tokens_per_second", vw, source),
        patch_size=vis.get("patch_size", vis.get("spatial_patch_size", 14)),
        temporal_patch_size=vis.get("temporal_patch_size", 2),
        spatial_merge_size=vis.get("spatial_merge_size", 2),
        window_size=vis.get("window_size", 112),
        in_channels=vis.get("in_channels", vis.get("in_chans", 3)),
        rope_theta=float(vrope.get("rope_theta", 10000.0)),
    )
    tie = bool(raw.get("tie_word_embeddings", False) or text.get("tie_word_embeddings", False))
    eos = text.get("eos_token_id", raw.get("eos_token_id"))
    eos = () if eos is None else tuple(eos) if isinstance(eos, list | tuple) else (int(eos),)
    cfg = Qwen25VLConfig(
        text=tcfg,
        vision=vcfg,
        image_token_id=_need(raw, "image_token_id", "", source),
        video_token_id=_need(raw, "video_token_id", "", source),
        vision_start_token_id=_need(raw, "vision_start_token_id", "", source),
        vision_end_token_id=_need(raw, "vision_end_token_id", "", source),
        tie_word_embeddings=tie,
        bos_token_id=text.get("bos_token_id", raw.get("bos_token_id")),
        eos_token_id=eos,
        pad_token_id=text.get("pad_token_id", raw.get("pad_token_id")),
    )
    try:
        return dataclasses.replace(cfg, **overrides).validate()
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def from_hf_config(path: str | Path, **overrides: Any) -> Qwen25VLConfig:
    """Read ``config.json`` (or the directory holding it) of a local Qwen2.5-VL checkpoint."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"no Qwen2.5-VL config.json at {p}")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: invalid JSON ({e})") from None
    return from_hf_dict(raw, source=str(p), **overrides)


def to_hf_dict(cfg: Qwen25VLConfig, *, torch_dtype: str = "bfloat16") -> dict:
    """An HF config.json (nested transformers-5 layout) that ``Qwen2_5_VLForConditionalGeneration`` loads."""
    t, v = cfg.text, cfg.vision
    eos = list(cfg.eos_token_id)
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "dtype": torch_dtype,
        "image_token_id": cfg.image_token_id,
        "video_token_id": cfg.video_token_id,
        "vision_start_token_id": cfg.vision_start_token_id,
        "vision_end_token_id": cfg.vision_end_token_id,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "text_config": {
            "model_type": "qwen2_5_vl_text",
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "hidden_act": "silu",
            "max_position_embeddings": t.max_position_embeddings,
            "rms_norm_eps": t.rms_norm_eps,
            "use_sliding_window": False,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": t.rope_theta,
                "mrope_section": list(t.mrope_section),
            },
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
            "pad_token_id": cfg.pad_token_id,
            "tie_word_embeddings": cfg.tie_word_embeddings,
        },
        "vision_config": {
            "model_type": "qwen2_5_vl_vision",
            "depth": v.depth,
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_heads": v.num_heads,
            "out_hidden_size": v.out_hidden_size,
            "fullatt_block_indexes": list(v.fullatt_block_indexes),
            "tokens_per_second": v.tokens_per_second,
            "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "window_size": v.window_size,
            "in_channels": v.in_channels,
            "hidden_act": "silu",
            "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
        },
    }
