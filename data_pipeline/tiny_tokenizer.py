"""A tiny, offline, Qwen2.5-VL-shaped tokenizer for tests and the CPU demo.

``build_tiny_tokenizer(directory)`` trains (deterministically, in milliseconds) a byte-level BPE with the
``tokenizers`` library on a fixed built-in corpus (English words, the task prompts, the chat template's text
and the demo world's phrases), adds Qwen2.5-VL's special tokens after the
BPE vocabulary (in Qwen's order) and the Qwen2.5-VL-shaped chat template, and saves a directory that
``transformers.AutoTokenizer.from_pretrained(directory)`` loads. Being byte-level, it encodes any text.

Ids: the first 256 are the byte tokens, then 512 learned merges (``BPE_SIZE`` = 768 in all), then the special
tokens from 768 on, in Qwen's order (``TINY_SPECIAL_IDS``)::

    768 <|endoftext|> (pad)   769 <|im_start|>   770 <|im_end|> (eos)   771 <|object_ref_start|>
    772 <|object_ref_end|>    773 <|box_start|>  774 <|box_end|>        775 <|quad_start|>
    776 <|quad_end|>          777 <|vision_start|> 778 <|vision_end|>   779 <|vision_pad|>
    780 <|image_pad|>         781 <|video_pad|>  782 <tool_call>  783 </tool_call>  784 <|fim_prefix|>
    785 <|fim_middle|>  786 <|fim_suffix|>  787 <|fim_pad|>  788 <|repo_name|>  789 <|file_sep|>

``TINY_VOCAB_SIZE`` = 790 = ``len(tokenizer)``: a tiny model's embedding needs at least that many rows.
"""

from __future__ import annotations

import json
import os

from data_pipeline import synthetic
from data_pipeline.prompts import QWEN25VL_CHAT_TEMPLATE, THINK_MODES, task_text

BPE_SIZE = 768
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
TINY_SPECIAL_IDS = {t: BPE_SIZE + i for i, t in enumerate(SPECIAL_TOKENS + ADDED_TOKENS)}
TINY_VOCAB_SIZE = BPE_SIZE + len(SPECIAL_TOKENS) + len(ADDED_TOKENS)

# Same pre-tokenization regex as Qwen2's tokenizer (digits are split one by one).
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_WORDS = """
the a an of to in and is are was were be been it its this that these those with for on at by from as or not
person man woman people child boy girl dog cat he she they his her their them you your we our i me my
video moment event events query question answer option options evidence time times second seconds start end
find give each every all one two three first then after before during while when where what why how which
segment segments interval intervals highlight action occurrence occurrences reasoning think format output
order same separated inside example letter correct support plain numbers long from its only no never occurs
walks runs opens closes door light switch turns on off holds picks up puts down takes sits stands looks
laughs smiles talks eats drinks cooks washes plays ball guitar piano dances jumps throws catches swims
kitchen room table chair bed window phone book cup bottle water food car bike street park beach camera
playing playing cooking cleaning running walking sitting standing holding watching reading writing pouring
basketball soccer tennis golf swimming diving skiing surfing climbing cutting mixing adding frying
red green blue yellow cyan magenta white square screen colour comes right flash shows happens
""".split()

# The chat template's fixed text and the demo world's phrases (data_pipeline.synthetic): learned as whole words,
# they keep the demo's prompts short (every prompt token is computed at every step of the CPU demo).
_PHRASES = [
    "system\nYou are a helpful assistant.",
    "user\n",
    "assistant\n",
    synthetic.SQUARE_QUERY,
    ", ".join(synthetic.colour_query(c) for c in ("green", "blue", "cyan")),
    ", ".join(synthetic.colour_query(c) for c in ("yellow", "magenta")),
    synthetic.GVQA_QUESTION,
    # the tal instruction's sentence, as prompts.task_text writes it
    next(x for x in task_text({"task": "tal", "action": synthetic.TAL_ACTION, "duration": 1.0}).splitlines()
         if synthetic.TAL_ACTION in x),
]


def _corpus() -> list[str]:
    """A fixed corpus: words, numbers in answer formats, the task prompts of a few samples."""
    lines = [" ".join(_WORDS[i : i + 12]) for i in range(0, len(_WORDS), 12)] + _PHRASES * 20
    lines += [
        f"{a}.{b} to {a + b}.{(a * b) % 10}, {b}.{a} to {a + b + 3}.5" for a in range(40) for b in range(10)
    ]
    lines += [
        "<think> </think> <answer> </answer> <evidence> </evidence> (A) (B) (C) (D) (E) A. B. C. D. E."
    ] * 20
    samples = [
        {"task": "tg", "duration": 30.5, "query": "a person opens the door and turns on the light."},
        {"task": "dtg", "duration": 120.0, "queries": ["a man talks to the camera.", "he plays the guitar."]},
        {"task": "vhd", "duration": 150.0, "query": "a woman cooks food in the kitchen."},
        {
            "task": "gvqa",
            "duration": 40.0,
            "question": "why did the boy pick up the ball?",
            "options": ["to throw it", "to eat it", "to hold it", "to read it", "to play"],
        },
        {"task": "tal", "duration": 90.0, "action": "Playing basketball"},
    ]
    for s in samples:
        for think in THINK_MODES:
            lines += [task_text(s, think=think)] * 3
    return lines


def _train():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if tok.get_vocab_size() != BPE_SIZE:
        raise RuntimeError(f"tiny BPE has {tok.get_vocab_size()} tokens, expected {BPE_SIZE}")
    return tok


def build_tiny_tokenizer(directory: str) -> str:
    """Write the tiny tokenizer into ``directory`` (created if needed); returns the directory path."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = _train()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    for t, i in TINY_SPECIAL_IDS.items():
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"tiny tokenizer: {t} got id {tok.token_to_id(t)}, expected {i}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=131072,
        chat_template=QWEN25VL_CHAT_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    os.makedirs(directory, exist_ok=True)
    fast.save_pretrained(directory)
    with open(os.path.join(directory, "tiny_tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(
            {"bpe_size": BPE_SIZE, "vocab_size": TINY_VOCAB_SIZE, "special_ids": TINY_SPECIAL_IDS},
            f,
            indent=1,
        )
    return directory
