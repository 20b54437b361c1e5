"""Property tests: the reward library against the plain per-sample formulas (tempr1_jax.rewards_reference)."""

import math
import re

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempr1_jax import rewards as R
from tempr1_jax import rewards_reference as ref

P, M, B = 8, 8, 16  # one fixed bucket for the array-level properties: compiled once per function

# ---------------------------------------------------------------- strategies

times = st.integers(0, 2000).map(lambda k: k / 10)  # 0.0 .. 200.0 s with one decimal


@st.composite
def interval(draw, duration=200.0):
    a, b = draw(times), draw(times)
    return (min(a, b, duration), min(max(a, b), duration))


@st.composite
def padded_batch(draw):
    """Random [B, P, 2] / [B, M, 2] float32 batches with packed masks and their ragged lists."""
    preds, gts = [], []
    for _ in range(B):
        preds.append(draw(st.lists(interval(), max_size=P)))
        gts.append(draw(st.lists(interval(), max_size=M)))
    pred, pred_mask = R.pack_intervals([np.array(p, np.float32).reshape(-1, 2) for p in preds], P, B)
    gt, gt_mask = R.pack_intervals([np.array(g, np.float32).reshape(-1, 2) for g in gts], M, B)
    # the reference sees exactly the float32 values the arrays hold
    preds = [[tuple(map(float, x)) for x in pred[b, : len(p)]] for b, p in enumerate(preds)]
    gts = [[tuple(map(float, x)) for x in gt[b, : len(g)]] for b, g in enumerate(gts)]
    return (pred, pred_mask, gt, gt_mask), preds, gts


def fmt_time(t: float) -> str:
    return np.format_float_positional(t, trim="-")


@st.composite
def sample_and_perfect_completion(draw):
    task = draw(st.sampled_from(sorted(R.TASKS)))
    duration = draw(st.integers(1, 3000).map(lambda k: k / 10))
    n = {"tg": 1, "mcq": 0}.get(task, None)
    n = draw(st.integers(0 if task == "tal" else 1, 12)) if n is None else n
    segs = []
    for _ in range(n):  # segments of positive length, inside the video
        a = draw(st.integers(0, round(duration * 100) - 1))
        b = draw(st.integers(a + 1, round(duration * 100)))
        segs.append([a / 100, b / 100])
    sample = {"task": task, "duration": duration, "segments": segs}
    sep = draw(st.sampled_from([", ", ",", "; ", " ;\n"]))
    word = draw(st.sampled_from([" to ", "-", " - ", "to"]))
    payload = sep.join(f"{fmt_time(a)}{word}{fmt_time(b)}" for a, b in segs)
    think = draw(st.sampled_from(["", "<think>reasoning 1 to 2 </think>\n"]))
    if task == "gvqa":
        sample["answer"] = draw(st.sampled_from(list("ABCDEFGH")))
        letter = draw(st.sampled_from(["{}", "({})", "{}."])).format(sample["answer"])
        text = f"{think}<answer>{letter}</answer> <evidence>{payload}</evidence>"
    elif task == "mcq":
        sample["answer"] = draw(st.sampled_from(list("ABCDEFGH")))
        form = draw(st.sampled_from(["{}", "({})", "{}.", "{})", "{}. the option", "({}) the option", "{})x"]))
        text = f"{think}<answer>{form.format(sample['answer'])}</answer>"
    else:
        text = f"{think}<answer>{payload}</answer>"
    return sample, text


FRAGMENTS = [*R.TAGS, "<answer", "answer>", "</", "<think>x", "1 to 2", "3.5-7", "0 to 100", "9 to 3", ".5 to 12.",
             ", ", ";", " ", "\n", "to", "-", "A", "(B)", "C.", "b", "junk", "12s", "[1, 2]", "1e3", "\u00a0", "é",
             "٣"]


@st.composite
def messy_completion(draw):
    parts = draw(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=24))
    return "".join(parts)


@st.composite
def messy_sample(draw):
    task = draw(st.sampled_from(sorted(R.TASKS)))
    n = {"tg": 1, "mcq": 0}.get(task, None)
    n = draw(st.integers(0 if task == "tal" else 1, 4)) if n is None else n
    segs = [list(draw(interval(duration=100.0))) for _ in range(n)]
    sample = {"task": task, "duration": 100.0, "segments": segs}
    if task in ("gvqa", "mcq"):
        sample["answer"] = draw(st.sampled_from("ABC"))
    return sample


MUTATIONS = ["drop_think", "add_think", "duplicate_block", "swap_blocks", "unclose", "junk_glue", "tag_in_body",
             "bad_word", "reverse_item", "units", "trailing_sep", "double_sep", "space_sep", "bad_letter",
             "drop_evidence", "add_evidence", "extra_item", "drop_item", "and_word"]


@st.composite
def near_valid_case(draw):
    """A sample and the canonical completion of its task, then 0-2 small breaks drawn from MUTATIONS."""
    sample = draw(messy_sample())
    task = sample["task"]
    times = [str(x) for x in ("0", "5", "12.5", "12.", ".5", "7", "13", "20.25", "60", "120.", "99")]
    items = [[draw(st.sampled_from(times)), draw(st.sampled_from([" to ", "-", "to", " - ", "  to\n"]))]
             for _ in range(len(sample["segments"]) if task in ("tg", "dtg") else draw(st.integers(0, 4)))]
    items = [[min(a, b, key=float), w, max(a, b, key=float)] for (a, w), b in
             zip(items, [draw(st.sampled_from(times)) for _ in items], strict=True)]
    seps = [draw(st.sampled_from([", ", ";", ",", " ; ", "\n,"])) for _ in items]
    letter = draw(st.sampled_from(["A", "B", "(C)", "B.", " A ", "B)", "C. the third", "(A) first", "A dog"]))
    blocks = [["think", "reasoning"]] if draw(st.booleans()) else []
    blocks.append(["answer", letter if task in ("gvqa", "mcq") else items])
    if task == "gvqa":
        blocks.append(["evidence", items])
    glue = ["", " ", "\n", " \n "]
    glues = [draw(st.sampled_from(glue)) for _ in range(len(blocks) + 3)]
    closes = [True] * (len(blocks) + 2)
    trailing = ""
    for m in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2)):
        if m == "drop_think" and blocks[0][0] == "think":
            blocks.pop(0)
        elif m == "add_think" and blocks[0][0] != "think":
            blocks.insert(0, ["think", "let me see"])
        elif m == "duplicate_block":
            blocks.insert(draw(st.integers(0, len(blocks))), list(draw(st.sampled_from(blocks))))
        elif m == "swap_blocks" and len(blocks) > 1:
            i = draw(st.integers(0, len(blocks) - 2))
            blocks[i], blocks[i + 1] = blocks[i + 1], blocks[i]
        elif m == "unclose":
            closes[draw(st.integers(0, len(closes) - 1))] = False
        elif m == "junk_glue":
            glues[draw(st.integers(0, len(glues) - 1))] = draw(st.sampled_from([" junk ", "<answer>", "</think>"]))
        elif m == "tag_in_body":
            body = draw(st.sampled_from(["<think>", "x</evidence>", "<evidence>"]))
            blocks[draw(st.integers(0, len(blocks) - 1))][1] = body
        elif m in ("bad_word", "and_word") and items:
            items[draw(st.integers(0, len(items) - 1))][1] = " and " if m == "and_word" else draw(
                st.sampled_from([" TO ", "~", "", " until "]))
        elif m == "reverse_item" and items:
            it = items[draw(st.integers(0, len(items) - 1))]
            it[0], it[2] = it[2], it[0]
        elif m == "units" and items:
            items[0][2] += "s"
        elif m == "trailing_sep":
            trailing = draw(st.sampled_from([",", ";", " , "]))
        elif m in ("double_sep", "space_sep") and items:
            seps[draw(st.integers(0, len(items) - 1))] = ",," if m == "double_sep" else " "
        elif m == "bad_letter":
            letter = draw(st.sampled_from(["b", "B)", "The answer is B", "", "AB", "I"]))
            for blk in blocks:
                if blk[0] == "answer" and isinstance(blk[1], str):
                    blk[1] = letter
        elif m == "drop_evidence":
            blocks = [b for b in blocks if b[0] != "evidence"]
        elif m == "add_evidence":
            blocks.append(["evidence", items])
        elif m == "extra_item":
            items.append(["1", " to ", "2"])
            seps.append(", ")
        elif m == "drop_item" and items:
            items.pop()
            seps.pop()

    def render(body):
        if isinstance(body, str):
            return body
        return "".join("".join(it) + (sep if k < len(items) - 1 else "")
                       for k, (it, sep) in enumerate(zip(items, seps, strict=True))) + trailing

    text = glues[0]
    for k, (tag, body) in enumerate(blocks):
        text += f"<{tag}>{render(body)}" + (f"</{tag}>" if closes[k] else "") + glues[k + 1]
    return sample, text


# ---------------------------------------------------------------- array level


@given(st.lists(st.tuples(interval(), interval()), min_size=1, max_size=64))
def test_iou_symmetric_and_in_unit_range(pairs):
    a = np.array([p[0] for p in pairs], np.float32)
    b = np.array([p[1] for p in pairs], np.float32)
    ab, ba = np.asarray(R.interval_iou(a, b)), np.asarray(R.interval_iou(b, a))
    np.testing.assert_array_equal(ab, ba)
    assert np.all((ab >= 0) & (ab <= 1))
    np.testing.assert_allclose(ab, [ref.iou(*p) for p in pairs], atol=1e-6)


@settings(max_examples=60)
@given(padded_batch())
def test_array_api_equals_reference(data):
    arrays, preds, gts = data
    got = {
        "one_to_one": np.asarray(R.one_to_one(*arrays)),
        "many_to_one": np.asarray(R.many_to_one(*arrays)),
        "many_to_many": np.asarray(R.many_to_many(*arrays, 1.0)),
        "many_to_many_sigma": np.asarray(R.many_to_many(*arrays, 0.5)),
    }
    want = {
        "one_to_one": [ref.one_to_one(p, g) for p, g in zip(preds, gts, strict=True)],
        "many_to_one": [ref.many_to_one(p, g) for p, g in zip(preds, gts, strict=True)],
        "many_to_many": [ref.many_to_many(p, g) for p, g in zip(preds, gts, strict=True)],
        "many_to_many_sigma": [ref.many_to_many(p, g, 0.5) for p, g in zip(preds, gts, strict=True)],
    }
    for key in got:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, rtol=0, err_msg=key)
    assert np.all((got["one_to_one"] >= 0) & (got["one_to_one"] <= 1 + 1e-6))
    assert np.all((got["many_to_one"] >= 0) & (got["many_to_one"] <= 1 + 1e-6))
    assert np.all((got["many_to_many"] >= 0) & (got["many_to_many"] <= 2 + 1e-6))


@settings(max_examples=40)
@given(padded_batch(), st.randoms(use_true_random=False))
def test_many_to_one_and_many_to_many_ignore_prediction_order(data, rnd):
    (pred, pred_mask, gt, gt_mask), preds, _ = data
    shuffled = pred.copy()
    for b, p in enumerate(preds):
        perm = list(range(len(p)))
        rnd.shuffle(perm)
        shuffled[b, : len(p)] = pred[b, perm]
    for fn in (R.many_to_one, R.many_to_many):
        np.testing.assert_allclose(fn(pred, pred_mask, gt, gt_mask), fn(shuffled, pred_mask, gt, gt_mask),
                                   atol=1e-6)


@settings(max_examples=15)
@given(padded_batch())
def test_jit_and_vmap_equal_eager(data):
    arrays, _, _ = data
    for fn in (R.one_to_one, R.many_to_one, R.many_to_many):
        batched = np.asarray(fn(*arrays))
        with jax.disable_jit():
            eager = np.asarray(fn(*arrays))
        np.testing.assert_allclose(batched, eager, atol=1e-6)
        for b in (0, B - 1):  # one row alone gives the row of the batch
            row = np.asarray(fn(*(x[b: b + 1] for x in arrays)))
            np.testing.assert_allclose(row, batched[b: b + 1], atol=1e-6)


# ---------------------------------------------------------------- string level


@settings(max_examples=150)
@given(sample_and_perfect_completion())
def test_perfect_prediction_scores_the_maximum(case):
    sample, text = case
    out = R.compute_rewards([text], [sample])
    best = {"tg": 2.0, "dtg": 2.0, "vhd": 2.0, "gvqa": 3.0, "tal": 3.0, "mcq": 2.0}[sample["task"]]
    assert out["format"][0] == 1.0
    assert out["total"][0] == pytest.approx(best, abs=1e-5)


@settings(max_examples=300)
@given(messy_completion(), messy_sample(), st.sampled_from(R.THINK_MODES))
def test_string_api_equals_reference_on_messy_text(text, sample, think):
    check_against_reference(text, sample, think)


@settings(max_examples=600)
@given(near_valid_case(), st.sampled_from(R.THINK_MODES))
def test_string_api_equals_reference_on_near_valid_text(case, think):
    sample, text = case
    check_against_reference(text, sample, think)


def check_against_reference(text, sample, think):
    got = R.compute_rewards([text], [sample], think=think)
    want = ref.reward(text, sample, think=think)
    for key, value in want.items():
        assert got[key][0] == pytest.approx(value, abs=1e-5), (key, text)
    p = R.parse_completion(text, sample, think=think)
    if sample["task"] == "mcq":  # no intervals; the letter of the last answer block by the mcq rule
        block = ref.last_block(text, "answer")
        assert p.intervals is None and p.letter == (None if block is None else ref.parse_option(block))
        return
    block = ref.last_block(text, "evidence" if sample["task"] == "gvqa" else "answer")
    assert (p.intervals is None) == (block is None or ref.parse_intervals(block, 100.0) is None)


@settings(max_examples=200)
@given(st.text(max_size=300), messy_sample(), st.sampled_from(R.THINK_MODES))
def test_string_api_never_raises_and_stays_in_range(text, sample, think):
    out = R.compute_rewards([text], [sample], think=think)
    hi = 2.0 if sample["task"] == "tal" else 1.0
    assert out["format"][0] in (0.0, 1.0) and out["answer"][0] in (0.0, 1.0)
    assert 0.0 <= out["localization"][0] <= hi + 1e-6
    assert 0.0 <= out["total"][0] <= 2.0 + hi + 1e-6


@pytest.mark.parametrize("text", [
    "<answer>" * 100_000,
    "</answer>" * 100_000,
    "<answer></answer>" * 100_000,
    "<answer>1 to 2</answer>" * 50_000 + "<answer>",
    "<think>" * 50_000 + "</think>" * 50_000 + "<answer>1 to 2</answer>",
    "<answer>" + "1 to 2, " * 100_000 + "</answer>",
    "<answer>" + "9" * 100_000 + " to " + "9" * 100_000 + "</answer>",
    "<answer>" + " " * 1_000_000 + "x</answer>",
    "\U0001f600" * 200_000,
    "",
])
def test_adversarial_text_is_fast_and_safe(text):
    samples = [{"task": t, "duration": 100.0, "segments": [] if t == "mcq" else [[1, 2]], "answer": "A"}
               for t in R.TASKS]
    out = R.compute_rewards([text] * len(samples), samples)
    assert all(np.all(np.isfinite(v)) for v in out.values())


def test_last_block_matches_regex_findall():
    rng = np.random.default_rng(0)
    pieces = ["<answer>", "</answer>", "a", "<answer", "</answer", ">", "\n"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces, size=rng.integers(0, 12)))
        found = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
        assert R._last_block(text, "answer") == (found[-1] if found else None), text


def test_reference_math_sanity():
    # the oracle itself on a hand-computed case: F1 with P = 2/3, R = 1
    assert ref.many_to_many([(0, 2), (5, 10), (20, 30)], [(5, 10), (20, 30)]) == pytest.approx(
        math.exp(-0.5) + 0.8)
