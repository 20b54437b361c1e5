"""tempr1_jax.setup: the demo's data and the config fields it sets, batch-size checks, the model config from a
preset and a tokenizer, freezing patterns, and reward kernels compiled up front."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from tempr1_jax import configlib, rewards, setup
from tempr1_jax.train_log import CompileCounter

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def base_config() -> ml_collections.ConfigDict:
    """configs/demo.py's config (a tiny preset, the demo's synthetic data block)."""
    return configlib.sibling_config(str(CONFIGS / "base.py"), "demo.py").get_config()


def test_prepare_synthetic_generates_once_and_returns_the_fields_it_sets(tmp_path, caplog):
    cfg = base_config()
    cfg.synthetic.dir = str(tmp_path / "square")
    cfg.synthetic.num_train, cfg.synthetic.num_val = 3, 2
    overrides = setup.prepare_synthetic(cfg)
    root = tmp_path / "square"
    assert overrides == {
        "data.samples": (str(root / "train.jsonl"),),
        "data.frames": str(root / "frames"),
        "data.tokenizer": str(root / "tokenizer"),
        "eval.samples": (str(root / "val.jsonl"),),
    }
    assert (root / "DONE").is_file() and cfg.data.frames != overrides["data.frames"]  # the config is untouched
    stamp = (root / "DONE").stat().st_mtime_ns
    assert setup.prepare_synthetic(cfg) == overrides and (root / "DONE").stat().st_mtime_ns == stamp  # cached
    with caplog.at_level(logging.INFO, logger="tempr1_jax"):
        setup.apply_overrides(cfg, overrides)
    assert cfg.data.frames == str(root / "frames") and tuple(cfg.eval.samples) == overrides["eval.samples"]
    assert "config.data.frames = " in caplog.text  # each field it sets is logged
    del cfg.synthetic
    assert setup.prepare_synthetic(cfg) == {}


def test_batch_sizes_must_split_over_shards_and_processes():
    cfg = base_config()
    mesh = types.SimpleNamespace(shape={"data": 2, "fsdp": 2, "tp": 1})  # 4 batch shards
    cfg.train.prompts_per_step, cfg.eval.batch_size, cfg.warmup.batch_size = 8, 4, 12
    cfg.eval.samples = ("val.jsonl",)
    setup.check_batch_sizes(cfg, mesh)
    cfg.eval.batch_size = 6
    with pytest.raises(ValueError, match=r"config.eval.batch_size=6: must be a positive multiple of the 4 batch"):
        setup.check_batch_sizes(cfg, mesh)
    cfg.eval.samples = ()  # no evaluation: its batch size does not matter
    setup.check_batch_sizes(cfg, mesh)
    cfg.train.prompts_per_step = 2
    with pytest.raises(ValueError, match="config.train.prompts_per_step=2"):
        setup.check_batch_sizes(cfg, mesh)


def test_model_config_of_a_preset_fits_the_tokenizer(tokenizer):
    cfg = base_config()
    mcfg = setup.model_config(cfg, tokenizer)
    assert mcfg.text.vocab_size >= len(tokenizer) and mcfg.text.hidden_size == 64
    assert mcfg.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert mcfg.vision.out_hidden_size == 64 and sum(mcfg.text.mrope_section) == 64 // 4 // 2
    cfg.model.attention_impl = "cudnn"
    with pytest.raises(ValueError, match="attention_impl='cudnn'.*left-padded"):
        setup.model_config(cfg, tokenizer)
    cfg.model.attention_impl, cfg.model.path = None, "/some/dir"
    with pytest.raises(ValueError, match="give one of them"):
        setup.model_config(cfg, tokenizer)
    cfg.model.path, cfg.model.preset = None, ""
    with pytest.raises(ValueError, match="give model.path"):
        setup.model_config(cfg, tokenizer)
    cfg.model.preset = "tiny"
    cfg.model.text.unknown_field = 1
    with pytest.raises(ValueError, match="config.model.text / config.model.vision"):
        setup.model_config(cfg, tokenizer)


def test_a_tokenizer_that_does_not_belong_to_the_model_is_refused(tokenizer):
    mcfg = setup.model_config(base_config(), tokenizer)
    fake = type("Tok", (), {"__len__": lambda self: mcfg.text.vocab_size + 1})()
    with pytest.raises(ValueError, match="do not belong together"):
        setup.check_tokenizer(mcfg, fake)
    plain = type("Tok", (), {"convert_tokens_to_ids": lambda self, t: None, "unk_token_id": 0})()
    with pytest.raises(ValueError, match="no <|image_pad|> token"):
        setup.special_ids(plain)


def test_missing_tokenizer_is_named():
    cfg = base_config()
    cfg.data.tokenizer, cfg.model.path = "", None
    with pytest.raises(ValueError, match="both empty"):
        setup.load_tokenizer(cfg)
    cfg.data.tokenizer = "/no/such/tokenizer"
    with pytest.raises(FileNotFoundError, match="/no/such/tokenizer"):
        setup.load_tokenizer(cfg)


def test_freeze_pattern_joins_the_optimizer_regex_and_the_vision_switch():
    cfg = base_config()
    assert setup.freeze_pattern(cfg) == ""
    cfg.model.freeze_vision = True
    assert setup.freeze_pattern(cfg) == "(?:visual/.*)"
    cfg.optimizer.freeze = "text/embed.*"
    assert setup.freeze_pattern(cfg) == "(?:text/embed.*)|(?:visual/.*)"


def test_prime_rewards_compiles_every_task_kernel_up_front():
    samples = [
        {"task": "tg", "duration": 10.0, "segments": [[1.0, 4.0]]},
        {"task": "vhd", "duration": 10.0, "segments": [[1.0, 4.0], [6.0, 7.0]]},
        {"task": "tal", "duration": 10.0, "segments": [[2.0, 3.0]]},
    ]
    kw = setup.reward_kwargs(base_config())
    assert kw == {"think": "optional", "weights": {"format": 1.0, "localization": 1.0, "answer": 1.0}, "sigma": 1.0}
    setup.prime_rewards(samples, 16, kw)
    batch = [samples[i % 3] for i in range(16)]
    texts = [f"<answer>{i % 5} to {i % 5 + 2}</answer>" for i in range(16)]
    with CompileCounter() as c:
        r = rewards.compute_rewards(texts, batch, **kw)
    assert c.count == 0 and np.all(np.isfinite(r["total"]))
