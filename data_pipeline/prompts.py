"""One prompt template per task, chat messages, and prompt token ids with the video placeholder expanded.

The policy is asked for exactly the completion format of docs/rewards.md::

    [<think> reasoning </think>] <answer> PAYLOAD </answer> [<evidence> INTERVALS </evidence>]

with intervals written ``START to END`` in seconds and separated by ``,`` (gvqa: the option letter in
``<answer>`` and the evidence intervals in ``<evidence>``; mcq: only the option letter in ``<answer>``, no
times, so its prompt does not state the video's length). The think mode decides whether the ``<think>``
block is allowed (``optional``), required (``required``) or forbidden (``forbidden``).

A prompt is one user turn holding the video and the task text, rendered by the tokenizer's chat template
(Qwen2.5-VL's: the video part becomes ``<|vision_start|><|video_pad|><|vision_end|>``), then tokenized; the
single ``<|video_pad|>`` is expanded to the video's token count (``t * h/2 * w/2`` for its grid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data_pipeline.schema import OPTION_LETTERS, THINK_MODES

VIDEO_PAD = "<|video_pad|>"

# Qwen2.5-VL-shaped chat template (system default, <|im_start|>role ... <|im_end|>, video / image parts as
# vision_start + pad + vision_end, generation prompt). Used by the tiny tokenizer and as a fallback for a
# tokenizer directory without a chat template.
QWEN25VL_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_ANSWER = {
    "tg": (
        'Give the start and end time of that moment as "START to END" inside <answer> </answer>, '
        "for example <answer>12.5 to 17.8</answer>."
    ),
    "dtg": (
        'Give one interval "START to END" per event, in the same order as the events, separated by ", " '
        "inside <answer> </answer>, for example <answer>0.0 to 5.2, 4.8 to 11.0</answer> for two events."
    ),
    "vhd": (
        'Give every segment that belongs to the highlight as "START to END", separated by ", " inside '
        "<answer> </answer>, for example <answer>10.0 to 24.5, 40.0 to 52.0</answer>."
    ),
    "gvqa": (
        "Give the letter of the correct option inside <answer> </answer>, then the time intervals of the "
        'video that support the answer as "START to END", separated by ", " inside <evidence> '
        "</evidence>, for example <answer>B</answer> <evidence>12.0 to 18.5</evidence>."
    ),
    "tal": (
        'Give every occurrence as "START to END", separated by ", " inside <answer> </answer>, for '
        "example <answer>3.0 to 7.5, 20.0 to 26.0</answer>; write <answer></answer> if it never occurs."
    ),
    "mcq": "Give only the letter of the correct option inside <answer> </answer>, for example <answer>B</answer>.",
}

_FORMAT = {
    "optional": "Output format: optionally your reasoning inside <think> </think>, then {blocks}.",
    "required": "Output format: first your reasoning inside <think> </think>, then {blocks}.",
    "forbidden": "Output format: only {blocks}, with no reasoning and no <think> block.",
}


def _check_think(think: str) -> None:
    if think not in THINK_MODES:
        raise ValueError(f"think mode {think!r} is not one of {THINK_MODES}")


def task_text(sample: Mapping[str, Any], *, think: str = "optional") -> str:
    """The user instruction for one sample (the text after the video in the user turn)."""
    _check_think(think)
    task = sample["task"]
    head = "" if task == "mcq" else (  # mcq asks for no time (and its benchmarks may not give the duration)
        f"The video is {float(sample['duration']):.1f} seconds long; give times in seconds from its start, "
        "as plain numbers.\n"
    )
    if task == "tg":
        body = f'Find the moment in the video described by the query: "{sample["query"]}".'
    elif task == "dtg":
        queries = sample["queries"]
        lines = "\n".join(f"{i + 1}. {q}" for i, q in enumerate(queries))
        body = (
            f"The video shows these {len(queries)} events, in this order:\n{lines}\nFind when each happens."
        )
    elif task == "vhd":
        body = f'Find all the highlight moments of the video that match the query: "{sample["query"]}".'
    elif task in ("gvqa", "mcq"):
        opts = "\n".join(f"({OPTION_LETTERS[i]}) {o}" for i, o in enumerate(sample["options"]))
        body = f'Answer the question about the video: "{sample["question"]}"\nOptions:\n{opts}'
    elif task == "tal":
        body = f'Find every occurrence of the action "{sample["action"]}" in the video.'
    else:
        raise ValueError(f"unknown task {task!r}")
    blocks = "<answer> </answer> and <evidence> </evidence>" if task == "gvqa" else "<answer> </answer>"
    return f"{head}{body}\n{_ANSWER[task]}\n{_FORMAT[think].format(blocks=blocks)}"


def _seconds(x: float) -> str:
    """A time in seconds as the prompts' examples write it: at most 2 decimals, no trailing zeros."""
    text = f"{float(x):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def target_completion(sample: Mapping[str, Any]) -> str:
    """The ground truth written as the completion each task's prompt asks for (supervised warm-up targets).

    ``<answer>S to E, ...</answer>`` with the sample's segments in order (tal: an empty answer when it has
    none); gvqa: ``<answer>L</answer> <evidence>S to E, ...</evidence>``; mcq: ``<answer>L</answer>``. No
    ``<think>`` block, which every think mode but ``required`` accepts. ``tempr1_jax.rewards`` gives it full
    format and localization marks.
    """
    task = sample["task"]
    if task == "mcq":
        return f"<answer>{sample['answer']}</answer>"
    intervals = ", ".join(f"{_seconds(s)} to {_seconds(e)}" for s, e in sample["segments"])
    if task == "gvqa":
        return f"<answer>{sample['answer']}</answer> <evidence>{intervals}</evidence>"
    if task not in _ANSWER:
        raise ValueError(f"unknown task {task!r}")
    return f"<answer>{intervals}</answer>"


def build_messages(
    sample: Mapping[str, Any], *, think: str = "optional", system_prompt: str | None = None
) -> list[dict[str, Any]]:
    """Chat messages: an optional system turn, then one user turn ``[video, task text]``."""
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append(
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": task_text(sample, think=think)}],
        }
    )
    return messages


def special_tokens(tokenizer) -> list[str]:
    """Every special / added token string of a tokenizer (text must not smuggle these in)."""
    toks = set(getattr(tokenizer, "all_special_tokens", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    toks |= {str(t) for t in added.values()}
    return sorted(t for t in toks if t)


def text_fields(sample: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field name, text) of the sample's texts that go into the prompt."""
    out = []
    for f in ("query", "question", "action"):
        if isinstance(sample.get(f), str):
            out.append((f, sample[f]))
    for f in ("queries", "options"):
        for i, t in enumerate(sample.get(f) or []):
            out.append((f"{f}[{i}]", t))
    return out


class PromptEncoder:
    """Renders and tokenizes prompts for one tokenizer; ``encode`` returns int32 ids with one video pad.

    chat_template: overrides the tokenizer's own template (None: the tokenizer's, or Qwen2.5-VL's when the
    tokenizer has none).
    """

    def __init__(
        self,
        tokenizer,
        *,
        think: str = "optional",
        system_prompt: str | None = None,
        chat_template: str | None = None,
    ) -> None:
        _check_think(think)
        self.tokenizer = tokenizer
        self.think = think
        self.system_prompt = system_prompt
        self.chat_template = chat_template or (
            None if getattr(tokenizer, "chat_template", None) else QWEN25VL_CHAT_TEMPLATE
        )
        self.video_pad_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        if self.video_pad_id is None or self.video_pad_id == getattr(tokenizer, "unk_token_id", -1):
            raise ValueError(f"tokenizer has no {VIDEO_PAD} token (not a Qwen2.5-VL-style tokenizer)")
        self._specials = [t for t in special_tokens(tokenizer) if t.startswith("<") and len(t) > 2]

    def check_text(self, sample: Mapping[str, Any]) -> None:
        """Raise ValueError if a text field contains a special token (prompt injection / broken counts)."""
        for field, text in text_fields(sample):
            for tok in self._specials:
                if tok in text:
                    raise ValueError(
                        f"sample {sample.get('id')!r}: field {field!r} contains the special token {tok!r}"
                    )

    def render(self, sample: Mapping[str, Any]) -> str:
        """The prompt text (chat template applied, generation prompt added, one ``<|video_pad|>``)."""
        self.check_text(sample)
        messages = build_messages(sample, think=self.think, system_prompt=self.system_prompt)
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=self.chat_template
        )

    def encode_many(self, samples: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """int32 token ids per sample, each with exactly one ``<|video_pad|>`` (batch-tokenized)."""
        texts = [self.render(s) for s in samples]
        if not texts:
            return []
        enc = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out = []
        for s, ids in zip(samples, enc, strict=True):
            arr = np.asarray(ids, np.int32)
            n = int(np.count_nonzero(arr == self.video_pad_id))
            if n != 1:
                raise ValueError(
                    f"sample {s.get('id')!r}: the rendered prompt has {n} {VIDEO_PAD} tokens, "
                    "expected 1 (does the chat template render video parts?)"
                )
            out.append(arr)
        return out

    def encode(self, sample: Mapping[str, Any], num_video_tokens: int | None = None) -> np.ndarray:
        """int32 ids of one prompt; with ``num_video_tokens`` the pad is expanded to that many tokens."""
        ids = self.encode_many([sample])[0]
        return ids if num_video_tokens is None else expand_video_pad(ids, self.video_pad_id, num_video_tokens)


def expand_video_pad(ids: np.ndarray, video_pad_id: int, num_video_tokens: int) -> np.ndarray:
    """Replace the single ``video_pad_id`` in ``ids`` by ``num_video_tokens`` copies (int32)."""
    ids = np.asarray(ids, np.int32)
    pos = np.flatnonzero(ids == video_pad_id)
    if len(pos) != 1:
        raise ValueError(
            f"expected exactly one video pad token ({video_pad_id}) in the prompt, found {len(pos)}"
        )
    if num_video_tokens < 1:
        raise ValueError(f"num_video_tokens must be >= 1, got {num_video_tokens}")
    p = int(pos[0])
    return np.concatenate([ids[:p], np.full(num_video_tokens, video_pad_id, np.int32), ids[p + 1 :]])


def prompt_token_ids(
    tokenizer,
    sample: Mapping[str, Any],
    *,
    num_video_tokens: int,
    think: str = "optional",
    system_prompt: str | None = None,
) -> np.ndarray:
    """Convenience: int32 prompt ids of one sample with the video placeholder expanded."""
    return PromptEncoder(tokenizer, think=think, system_prompt=system_prompt).encode(sample, num_video_tokens)
