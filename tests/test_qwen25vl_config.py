"""Config presets, HF config.json reading (flat hub and nested layouts), parameter counts, errors."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from tempr1_jax.models.qwen25vl import config as qconfig
from tempr1_jax.models.qwen25vl import params
from tempr1_jax.models.qwen25vl.sharding import param_partition_specs

# The released Qwen2.5-VL-7B-Instruct config.json (flat hub layout).
HUB_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}


def _count(cfg):
    abstract = params.abstract_model(cfg)
    vis = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract.visual, nnx.Param)))
    txt = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract.text, nnx.Param)))
    return txt, vis


@pytest.mark.parametrize("name,lm,vit", [("3b", 3.086e9, 0.669e9), ("7b", 7.616e9, 0.677e9)])
def test_presets_parameter_counts(name, lm, vit):
    cfg = qconfig.preset(name)
    txt, vis = _count(cfg)
    assert abs(txt - lm) / lm < 1e-3 and abs(vis - vit) / vit < 1e-3, (txt, vis)
    assert cfg.tie_word_embeddings == (name == "3b")
    assert cfg.text.rms_norm_eps == 1e-6 and cfg.vision.tokens_per_second == 2


def test_hub_7b_config_reads_as_preset(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HUB_7B))
    cfg = qconfig.from_hf_config(tmp_path)
    ref = qconfig.preset("7b")
    assert cfg.text == ref.text and cfg.vision == ref.vision
    for f in (
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
        "tie_word_embeddings",
        "bos_token_id",
    ):
        assert getattr(cfg, f) == getattr(ref, f)
    assert cfg.eos_token_id == (151645,)


def test_nested_roundtrip_and_transformers_reads_it():
    from transformers import Qwen2_5_VLConfig

    cfg = qconfig.preset("3b")
    d = qconfig.to_hf_dict(cfg)
    back = qconfig.from_hf_dict(json.loads(json.dumps(d)))
    assert back.text == cfg.text and back.vision == cfg.vision and back.tie_word_embeddings
    hf = Qwen2_5_VLConfig(**{k: v for k, v in d.items() if k != "architectures"})
    assert hf.text_config.rms_norm_eps == 1e-6 and hf.vision_config.tokens_per_second == 2
    assert hf.text_config.hidden_size == 2048 and hf.vision_config.out_hidden_size == 2048
    assert hf.tie_word_embeddings


def test_config_errors_name_the_field(tmp_path):
    bad = dict(HUB_7B)
    del bad["rms_norm_eps"]
    with pytest.raises(ValueError, match="rms_norm_eps"):
        qconfig.from_hf_dict(bad)
    with pytest.raises(ValueError, match="model_type"):
        qconfig.from_hf_dict({**HUB_7B, "model_type": "qwen2_vl"})
    with pytest.raises(ValueError, match="mrope_section"):
        qconfig.from_hf_dict({**HUB_7B, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 20]}})
    with pytest.raises(ValueError, match="use_sliding_window"):
        qconfig.from_hf_dict({**HUB_7B, "use_sliding_window": True})
    v = dict(HUB_7B["vision_config"])
    del v["tokens_per_second"]
    with pytest.raises(ValueError, match="tokens_per_second"):
        qconfig.from_hf_dict({**HUB_7B, "vision_config": v})
    with pytest.raises(ValueError, match="remat"):
        qconfig.preset("tiny", remat="sometimes")
    with pytest.raises(ValueError, match="unknown Qwen2.5-VL preset"):
        qconfig.preset("13b")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        qconfig.from_hf_config(tmp_path)


def test_every_param_has_a_spec_over_fsdp_tp():
    cfg = qconfig.preset("7b")
    state = nnx.state(params.abstract_model(cfg), nnx.Param)
    specs = param_partition_specs(state)
    leaves = jax.tree.leaves(specs)
    assert jax.tree.structure(specs) == jax.tree.structure(state)
    assert len(leaves) == len(jax.tree.leaves(state))
    names = {n for s in leaves for a in s if a is not None for n in ((a,) if isinstance(a, str) else a)}
    assert names == {"fsdp", "tp"}
    sharded = [s for s in leaves if any(a is not None for a in s)]
    assert len(sharded) >= 20
