"""Shared fixtures for the Qwen2.5-VL tests: tiny random HF models built in-process (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Special token ids inside the tiny vocabulary.
VOCAB = 160
IMAGE_ID, VIDEO_ID, VSTART_ID, VEND_ID = 151, 152, 150, 153
BOS_ID, EOS_ID, PAD_ID = 154, 155, 156


def hf_config(
    *,
    tie: bool = False,
    text_layers: int = 2,
    vision_depth: int = 2,
    full=(1,),
    hidden: int = 64,
    vocab: int = VOCAB,
    heads: int = 4,
    kv_heads: int = 2,
    inter: int = 128,
    mrope=(2, 3, 3),
    v_hidden: int = 32,
    v_heads: int = 2,
    v_inter: int = 48,
):
    """A tiny ``Qwen2_5_VLConfig`` with every field explicit (fp32, eager attention)."""
    from transformers import Qwen2_5_VLConfig

    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=inter,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            rms_norm_eps=1e-6,
            max_position_embeddings=4096,
            hidden_act="silu",
            use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": list(mrope)},
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
            tie_word_embeddings=tie,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=v_hidden,
            intermediate_size=v_inter,
            num_heads=v_heads,
            out_hidden_size=hidden,
            fullatt_block_indexes=list(full),
            tokens_per_second=2,
            window_size=112,
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            in_channels=3,
            hidden_act="silu",
        ),
        image_token_id=IMAGE_ID,
        video_token_id=VIDEO_ID,
        vision_start_token_id=VSTART_ID,
        vision_end_token_id=VEND_ID,
        tie_word_embeddings=tie,
    )
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    return cfg


def hf_model(cfg, seed: int = 0):
    """Random HF model with every parameter (norms and biases included) randomized."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration._from_config(
        cfg, attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "norm" in name.split(".")[-2] or name.endswith("ln_q.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g))
    return model


def save_hf(model, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    return path


def flatten_hub_config(path: Path) -> None:
    """Rewrite a saved nested config.json into the flat hub layout (text fields at the top, rope_scaling)."""
    p = Path(path) / "config.json"
    nested = json.loads(p.read_text())
    text = nested.pop("text_config")
    rope = text.pop("rope_parameters")
    flat = {**nested, **{k: v for k, v in text.items() if k not in ("model_type", "dtype")}}
    flat["rope_theta"] = rope["rope_theta"]
    flat["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    vis = flat["vision_config"]
    vis.pop("rope_parameters", None)
    vis["in_chans"] = vis.pop("in_channels")
    vis["model_type"] = "qwen2_5_vl"  # what old hub configs say
    flat["model_type"] = "qwen2_5_vl"
    p.write_text(json.dumps(flat, indent=2))


def video_prompt(grid, *, before: int, after: int, rng, video_id: int = VIDEO_ID):
    """Token ids: ``before`` random text tokens, vision_start, video pads, vision_end, ``after`` text
    tokens."""
    t, h, w = grid
    n = t * (h // 2) * (w // 2)
    text = lambda k: list(rng.integers(0, 140, size=k))  # noqa: E731
    return text(before) + [VSTART_ID] + [video_id] * n + [VEND_ID] + text(after)


def random_patches(grid, rng) -> np.ndarray:
    t, h, w = grid
    return rng.standard_normal((t * h * w, 1176)).astype(np.float32)


CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_tokenizer(path: Path) -> None:
    """A word-level tokenizer over the tiny vocabulary with Qwen's special tokens and a Qwen-shaped chat
    template, saved so that ``AutoTokenizer.from_pretrained(path)`` loads it (no downloads, no BPE files)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(140)] + [
        "system",
        "You",
        "are",
        "a",
        "helpful",
        "assistant.",
        "user",
        "assistant",
    ]
    vocab = {w: i for i, w in enumerate(words)}
    specials = {
        "<|vision_start|>": VSTART_ID,
        "<|image_pad|>": IMAGE_ID,
        "<|video_pad|>": VIDEO_ID,
        "<|vision_end|>": VEND_ID,
        "<|im_end|>": EOS_ID,
        "<|endoftext|>": PAD_ID,
        "<|im_start|>": 157,
        "[UNK]": 158,
    }
    vocab.update(specials)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    tok.add_special_tokens({"additional_special_tokens": [k for k in specials if k != "[UNK]"]})
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)
