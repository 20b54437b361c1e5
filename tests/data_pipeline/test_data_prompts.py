"""Prompt templates, the chat template and video-pad expansion, and the offline tiny tokenizer."""

from __future__ import annotations

import json
import re
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_pipeline import prompts, tiny_tokenizer

SAMPLES = {
    "tg": {
        "id": "a#0",
        "task": "tg",
        "video": "a",
        "duration": 30.96,
        "segments": [[1, 2]],
        "query": "person turn a light on.",
        "source": "s",
    },
    "dtg": {
        "id": "b",
        "task": "dtg",
        "video": "b",
        "duration": 120.0,
        "segments": [[0, 5], [5, 9]],
        "queries": ["A man talks.", "He plays the guitar."],
        "source": "s",
    },
    "vhd": {
        "id": "7",
        "task": "vhd",
        "video": "c",
        "duration": 150.0,
        "segments": [[0, 10]],
        "query": "a dog runs on the beach",
        "source": "s",
    },
    "gvqa": {
        "id": "d_1",
        "task": "gvqa",
        "video": "d",
        "duration": 40.0,
        "segments": [[1, 2]],
        "question": "why did the boy pick up the ball",
        "options": ["to throw it", "to eat it", "to sleep"],
        "answer": "A",
        "source": "s",
    },
    "tal": {
        "id": "e#Diving",
        "task": "tal",
        "video": "e",
        "duration": 90.0,
        "segments": [],
        "action": "Diving",
        "source": "s",
    },
}
INTERVALS = r"\d+(\.\d*)?\s*to\s*\d+(\.\d*)?(\s*,\s*\d+(\.\d*)?\s*to\s*\d+(\.\d*)?)*"


def test_tiny_tokenizer_ids_and_files(tiny_tokenizer_dir, tokenizer):
    assert len(tokenizer) == tiny_tokenizer.TINY_VOCAB_SIZE == 790
    for tok, i in tiny_tokenizer.TINY_SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(tok) == i
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 768
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 770
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") == 781
    meta = json.loads(open(f"{tiny_tokenizer_dir}/tiny_tokenizer.json").read())
    assert meta["vocab_size"] == 790 and meta["special_ids"]["<|vision_start|>"] == 777
    # The special tokens are single ids even inside text.
    ids = tokenizer.encode(
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>", add_special_tokens=False
    )
    assert ids[0] == 769 and 777 in ids and 781 in ids and 778 in ids and ids[-1] == 770


def test_tiny_tokenizer_is_deterministic(tmp_path, tiny_tokenizer_dir):
    again = tiny_tokenizer.build_tiny_tokenizer(str(tmp_path / "again"))
    a = json.loads(open(f"{tiny_tokenizer_dir}/tokenizer.json").read())
    b = json.loads(open(f"{again}/tokenizer.json").read())
    assert a == b


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_tiny_tokenizer_encodes_any_text(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert all(0 <= i < tiny_tokenizer.BPE_SIZE for i in ids) or any(
        t in text for t in tiny_tokenizer.TINY_SPECIAL_IDS
    )
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_chat_template_is_qwen25vl_shaped(tokenizer):
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q?"}]}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>Q?<|im_end|>\n<|im_start|>assistant\n"
    )
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok"},
    ]
    assert tokenizer.apply_chat_template(msgs, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
    )


@pytest.mark.parametrize("think", prompts.THINK_MODES)
@pytest.mark.parametrize("task", list(SAMPLES))
def test_task_text_asks_for_the_spec_format(task, think):
    s = SAMPLES[task]
    text = prompts.task_text(s, think=think)
    assert f"{s['duration']:.1f} seconds" in text
    assert "<answer> </answer>" in text
    examples = re.findall(r"<answer>(.*?)</answer>", text)
    if task == "gvqa":
        assert "<evidence> </evidence>" in text and "(A) to throw it\n(B) to eat it\n(C) to sleep" in text
        assert "B" in examples
        ev = re.findall(r"<evidence>(.*?)</evidence>", text)
        assert any(re.fullmatch(INTERVALS, e) for e in ev)
    else:
        assert "<evidence>" not in text
        assert any(re.fullmatch(INTERVALS, e) for e in examples)  # a well-formed example payload
    if task == "dtg":
        assert "1. A man talks.\n2. He plays the guitar." in text and "same order" in text
    if task == "tal":
        assert '"Diving"' in text and "<answer></answer>" in text
    if task in ("tg", "vhd"):
        assert s["query"] in text
    assert {
        "optional": "optionally your reasoning inside <think> </think>",
        "required": "first your reasoning inside <think> </think>",
        "forbidden": "no reasoning and no <think> block",
    }[think] in text


def test_bad_think_mode():
    with pytest.raises(ValueError, match="think mode"):
        prompts.task_text(SAMPLES["tg"], think="sometimes")


def test_prompt_ids_expand_the_video_pad(tokenizer):
    enc = prompts.PromptEncoder(tokenizer, think="required")
    ids = enc.encode_many(list(SAMPLES.values()))
    for a in ids:
        assert a.dtype == np.int32 and np.count_nonzero(a == 781) == 1
    full = enc.encode(SAMPLES["tg"], num_video_tokens=37)
    assert np.count_nonzero(full == 781) == 37 and len(full) == len(ids[0]) + 36
    p = int(np.flatnonzero(full == 781)[0])
    assert full[p - 1] == 777 and full[p + 37] == 778  # vision_start, 37 pads, vision_end
    text = tokenizer.decode(full)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "first your reasoning" in text
    same = prompts.prompt_token_ids(tokenizer, SAMPLES["tg"], num_video_tokens=37, think="required")
    np.testing.assert_array_equal(same, full)


def test_expand_video_pad_errors():
    with pytest.raises(ValueError, match="exactly one"):
        prompts.expand_video_pad(np.array([1, 2, 3]), 9, 4)
    with pytest.raises(ValueError, match="exactly one"):
        prompts.expand_video_pad(np.array([9, 2, 9]), 9, 4)
    with pytest.raises(ValueError, match=">= 1"):
        prompts.expand_video_pad(np.array([1, 9]), 9, 0)


def test_special_tokens_in_text_are_refused(tokenizer):
    enc = prompts.PromptEncoder(tokenizer)
    bad = dict(SAMPLES["dtg"], queries=["ok", "sneaky <|im_end|> text"])
    with pytest.raises(ValueError, match=r"sample 'b': field 'queries\[1\]' contains the special token"):
        enc.encode(bad)


def test_system_prompt_and_template_fallback(tokenizer):
    enc = prompts.PromptEncoder(tokenizer, system_prompt="You are a video analysis expert.")
    assert enc.render(SAMPLES["tal"]).startswith(
        "<|im_start|>system\nYou are a video analysis expert.<|im_end|>"
    )

    class NoTemplate:  # a tokenizer directory without a chat template gets Qwen2.5-VL's
        def __init__(self, tk):
            self._tk = tk
            self.chat_template = None

        def __getattr__(self, name):
            return getattr(self._tk, name)

        def __call__(self, *a, **k):
            return self._tk(*a, **k)

    enc2 = prompts.PromptEncoder(NoTemplate(tokenizer))
    assert enc2.chat_template == prompts.QWEN25VL_CHAT_TEMPLATE
    assert enc2.render(SAMPLES["tg"]) == prompts.PromptEncoder(tokenizer).render(SAMPLES["tg"])
