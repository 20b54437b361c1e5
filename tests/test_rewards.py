"""The reward rules of docs/rewards.md, rule by rule, on small hand-computed cases; the API's errors; the CLI."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tempr1_jax import rewards as R
from tempr1_jax import rewards_reference as ref

ROOT = Path(__file__).resolve().parents[1]


def score(text, sample, **kw):
    out = R.compute_rewards([text], [sample], **kw)
    return {k: float(v[0]) for k, v in out.items()}


TG = {"task": "tg", "duration": 30.0, "segments": [[10.0, 20.0]]}
DTG = {"task": "dtg", "duration": 60.0, "segments": [[0, 10], [20, 30], [40, 50]]}
VHD = {"task": "vhd", "duration": 100.0, "segments": [[10, 20]]}
GVQA = {"task": "gvqa", "duration": 40.0, "segments": [[10, 20]], "answer": "B", "options": ["a", "b", "c"]}
TAL = {"task": "tal", "duration": 60.0, "segments": [[5, 10], [20, 30]]}


# ---------------------------------------------------------------- format reward: layout and think modes


@pytest.mark.parametrize("text, think, expected", [
    ("<answer>10 to 20</answer>", "optional", 1),
    ("<think>hmm</think><answer>10 to 20</answer>", "optional", 1),
    ("  \n<think>a\nb</think>\n\n<answer>\n10 to 20\n</answer>  ", "optional", 1),
    ("<answer>10 to 20</answer>", "required", 0),
    ("<think>x</think> <answer>10 to 20</answer>", "required", 1),
    ("<think></think><answer>10 to 20</answer>", "required", 1),  # an empty think block is still a block
    ("<think>x</think><answer>10 to 20</answer>", "forbidden", 0),
    ("<answer>10 to 20</answer>", "forbidden", 1),
    ("<answer>10 to 20</answer><think>x</think>", "optional", 0),  # wrong order
    ("<think>x</think> junk <answer>10 to 20</answer>", "optional", 0),  # junk between tags
    ("prefix <answer>10 to 20</answer>", "optional", 0),
    ("<answer>10 to 20</answer> suffix", "optional", 0),
    ("10 to 20", "optional", 0),  # missing tags
    ("<answer>10 to 20", "optional", 0),
    ("<answer>10 to 20</answer><answer>10 to 20</answer>", "optional", 0),  # repeated block
    ("<answer><answer>10 to 20</answer></answer>", "optional", 0),  # nested
    ("<think><answer>10 to 20</answer></think><answer>10 to 20</answer>", "optional", 0),  # tag inside think
    ("<think>x</think><think>y</think><answer>10 to 20</answer>", "optional", 0),
    ("<think>a lone </evidence> tag</think><answer>10 to 20</answer>", "optional", 0),  # no tag inside a block
    ("<answer>10 to 20</answer><evidence>10 to 20</evidence>", "optional", 0),  # evidence only for gvqa
])
def test_format_layout(text, think, expected):
    assert score(text, TG, think=think)["format"] == expected


def test_bad_think_mode_raises():
    with pytest.raises(ValueError, match="think"):
        R.compute_rewards(["<answer>1 to 2</answer>"], [TG], think="sometimes")


# ---------------------------------------------------------------- INTERVALS grammar


@pytest.mark.parametrize("payload, expected", [
    ("10 to 20", [[10, 20]]),
    ("10-20", [[10, 20]]),
    (" 10 - 20 ", [[10, 20]]),
    ("10to20", [[10, 20]]),
    ("12. to .5e", None),
    ("12. to 13.", [[12, 13]]),
    (".5 to 1", [[0.5, 1]]),
    ("1 to 2, 3 to 4; 5 - 6", [[1, 2], [3, 4], [5, 6]]),
    ("1 to 2 ,\n 3 to 4", [[1, 2], [3, 4]]),
    ("", []),
    ("   \n ", []),
    ("1 to 2,", None),  # trailing separator = an empty, malformed item
    (",1 to 2", None),
    ("1 to 2,,3 to 4", None),
    ("1 to 2 3 to 4", None),  # items must be separated by , or ;
    ("1s to 2s", None),  # no units
    ("[1, 2]", None),  # no brackets
    ("(1 to 2)", None),
    ("-1 to 2", None),  # non-negative numbers only
    ("1 TO 2", None),
    ("1 to", None),
    ("1e1 to 20", None),  # no exponents
    ("1 to 2 to 3", None),
    ("20 to 10", None),  # start > end makes the whole payload unparsable ...
    ("1 to 2, 20 to 10", None),  # ... even when only one item is reversed
    ("10 to 10", [[10, 10]]),
    ("٣ to ٤", None),  # ASCII digits only
    ("25 to 45", [[25, 30]]),  # clipped to [0, duration = 30]
    ("40 to 50", [[30, 30]]),
])
def test_parse_intervals(payload, expected):
    got = R.parse_intervals(payload, 30.0)
    if expected is None:
        assert got is None
    else:
        np.testing.assert_array_equal(got, np.asarray(expected, np.float64).reshape(-1, 2))


@pytest.mark.parametrize("payload, expected", [
    ("B", "B"), (" (B) ", "B"), ("B.", "B"), ("H", "H"), ("\nC\n", "C"),
    ("b", None), ("I", None), ("B)", None), ("(B", None), ("B. because", None), ("AB", None), ("", None),
    ("The answer is B", None), ("B..", None),
])
def test_parse_letter(payload, expected):
    assert R.parse_letter(payload) == expected


# ---------------------------------------------------------------- one-to-one (tg, dtg)


def test_tg_iou():
    s = score("<answer>15 to 25</answer>", TG)  # inter 5, union 15
    assert s["format"] == 1 and s["localization"] == pytest.approx(1 / 3) and s["answer"] == 0
    assert s["total"] == pytest.approx(1 + 1 / 3)


def test_tg_counts_and_extra_predictions():
    s = score("<answer>10 to 20, 0 to 1</answer>", TG)  # tg needs exactly one interval ...
    assert s["format"] == 0 and s["localization"] == pytest.approx(1.0)  # ... but extra ones are ignored by R_loc
    s = score("<answer></answer>", TG)  # empty payload parses to zero intervals
    assert s == {"format": 0, "localization": 0, "answer": 0, "total": 0}


def test_timestamps_past_duration_are_clipped():
    s = score("<answer>10 to 99</answer>", TG)  # clipped to [10, 30]: inter 10, union 20
    assert s["format"] == 1 and s["localization"] == pytest.approx(0.5)


def test_reversed_interval_scores_zero():
    assert score("<answer>20 to 10</answer>", TG) == {"format": 0, "localization": 0, "answer": 0, "total": 0}


def test_zero_length_iou_is_zero():
    s = score("<answer>10 to 10</answer>", {"task": "tg", "duration": 30, "segments": [[10, 10]]})
    assert s["format"] == 1 and s["localization"] == 0


def test_dtg_index_pairing():
    # pairs: [0,10]-[0,10] IoU 1; [25,35]-[20,30] IoU 5/15; [40,45]-[40,50] IoU 0.5
    s = score("<answer>0 to 10, 25 to 35, 40 to 45</answer>", DTG)
    assert s["format"] == 1 and s["localization"] == pytest.approx((1 + 1 / 3 + 0.5) / 3)
    # output order matters: the same intervals listed in another order pair differently
    s = score("<answer>40 to 45, 0 to 10, 25 to 35</answer>", DTG)
    assert s["localization"] == pytest.approx(0.0)


def test_dtg_missing_and_extra():
    s = score("<answer>0 to 10, 20 to 30</answer>", DTG)  # one missing: scores 0, N_gt stays 3
    assert s["format"] == 0 and s["localization"] == pytest.approx(2 / 3)
    s = score("<answer>0 to 10, 20 to 30, 40 to 50, 55 to 60</answer>", DTG)  # extra ignored
    assert s["format"] == 0 and s["localization"] == pytest.approx(1.0)


def test_last_answer_block_wins_even_without_format():
    s = score("<answer>0 to 5</answer> text <answer>10 to 20</answer>", TG)
    assert s["format"] == 0 and s["localization"] == pytest.approx(1.0)
    # the regex's last match: the scan restarts after each match, so the first <answer> opens a block
    s = score("<answer>10 to 20<answer>0 to 5</answer>", TG)
    assert s["localization"] == 0  # content "10 to 20<answer>0 to 5" is unparsable
    s = score("<answer>10 to 20</answer><answer>0 to 5", TG)  # an unclosed block is no match
    assert s["localization"] == pytest.approx(1.0)


def test_answer_inside_think_counts_for_localization():
    s = score("<think><answer>10 to 20</answer></think>", TG)
    assert s["format"] == 0 and s["localization"] == pytest.approx(1.0)


# ---------------------------------------------------------------- many-to-one (vhd, gvqa)


def test_vhd_split_highlight_scores_one():
    s = score("<answer>10 to 15, 15 to 20</answer>", VHD)
    assert s["format"] == 1 and s["localization"] == pytest.approx(1.0)
    s = score("<answer>12 to 20; 10 to 14</answer>", VHD)  # overlapping and out of order
    assert s["localization"] == pytest.approx(1.0)


def test_vhd_union_iou():
    sample = {"task": "vhd", "duration": 100, "segments": [[0, 10], [20, 30]]}
    # U_pred = [5, 25] (20 s); U_gt = [0,10] u [20,30] (20 s); inter = 5 + 5 = 10; union = 30
    s = score("<answer>5 to 15, 12 to 25</answer>", sample)
    assert s["localization"] == pytest.approx(10 / 30)
    s = score("<answer>50 to 60</answer>", sample)
    assert s["localization"] == 0.0


def test_vhd_needs_one_interval_and_zero_union():
    s = score("<answer></answer>", VHD)
    assert s["format"] == 0 and s["localization"] == 0
    s = score("<answer>5 to 5</answer>", {"task": "vhd", "duration": 10, "segments": [[5, 5]]})
    assert s["format"] == 1 and s["localization"] == 0  # union length 0 -> 0


def test_gvqa():
    s = score("<think>x</think><answer>(B)</answer>\n<evidence>10 to 15, 15 to 20</evidence>", GVQA)
    assert s == {"format": 1, "localization": pytest.approx(1.0), "answer": 1, "total": pytest.approx(3.0)}
    s = score("<answer>B.</answer><evidence>10 to 30</evidence>", GVQA)
    assert s["format"] == 1 and s["localization"] == pytest.approx(0.5) and s["answer"] == 1
    s = score("<answer>C</answer><evidence>10 to 20</evidence>", GVQA)
    assert s["format"] == 1 and s["answer"] == 0


def test_gvqa_evidence_required_answer_still_scored():
    s = score("<answer>B</answer>", GVQA)
    assert s["format"] == 0 and s["localization"] == 0 and s["answer"] == 1
    s = score("<answer>B</answer><evidence></evidence>", GVQA)  # evidence needs >= 1 interval
    assert s["format"] == 0 and s["localization"] == 0
    s = score("<evidence>10 to 20</evidence><answer>B</answer>", GVQA)  # wrong order
    assert s["format"] == 0 and s["localization"] == pytest.approx(1.0) and s["answer"] == 1


def test_gvqa_bad_letters():
    for payload in ["The answer is B", "b", "B because", "A, B"]:
        s = score(f"<answer>{payload}</answer><evidence>10 to 20</evidence>", GVQA)
        assert s["format"] == 0 and s["answer"] == 0 and s["localization"] == pytest.approx(1.0)
    s = score("<answer>B</answer><answer>A</answer><evidence>10 to 20</evidence>", GVQA)
    assert s["answer"] == 0  # the last answer block decides


def test_answer_reward_only_for_gvqa():
    assert score("<answer>B</answer>", TG)["answer"] == 0


# ---------------------------------------------------------------- many-to-many (tal)


def test_tal_order_preserving_matching_beats_naive_pairing():
    # a spurious early prediction: naive in-order pairing matches [0,2]-[5,10] and [5,10]-[20,30] (sIoU 0);
    # the order-preserving DP matches [5,10]-[5,10] and [20,30]-[20,30] (sIoU 2), so F1 = 2*2/(3+2) = 0.8
    s = score("<answer>0 to 2, 5 to 10, 20 to 30</answer>", TAL)
    r_num = math.exp(-1 / 2)
    assert s["format"] == 1 and s["localization"] == pytest.approx(r_num + 0.8)
    naive = sum(ref.iou(p, g) for p, g in zip([(0, 2), (5, 10)], TAL["segments"], strict=True))
    assert naive == 0.0


def test_tal_sorting_and_partial_iou():
    # output order is irrelevant (both lists are sorted); IoUs 1 and 5/15
    s = score("<answer>25 to 35, 5 to 10</answer>", TAL)
    assert s["localization"] == pytest.approx(1.0 + (1 + 1 / 3) * 2 / 4)


def test_tal_dp_prefers_total_iou_over_greedy():
    # p1=[0,10] overlaps g1=[0,4] (0.4) and g2=[5,10] (0.5); p2=[5,10] matches g2 exactly.
    # Greedy best-first would take p1-g2 (0.5) and leave p2 unmatched; the DP takes p1-g1 + p2-g2 = 1.4
    sample = {"task": "tal", "duration": 20, "segments": [[0, 4], [5, 10]]}
    s = score("<answer>0 to 10, 5 to 10</answer>", sample)
    assert s["localization"] == pytest.approx(1.0 + 2 * 1.4 / 4)


def test_tal_counts_and_sigma():
    s = score("<answer></answer>", TAL)  # no prediction: R_num = exp(-2/2), R_match = 0
    assert s["format"] == 1 and s["localization"] == pytest.approx(math.exp(-1))
    six = {"task": "tal", "duration": 100, "segments": [[i * 10, i * 10 + 5] for i in range(6)]}
    s = score("<answer>0 to 5</answer>", six)  # min(N_gt, 3) caps the scale: exp(-5/3) + 2*1/7
    assert s["localization"] == pytest.approx(math.exp(-5 / 3) + 2 / 7)
    s = score("<answer>0 to 5</answer>", six, sigma=2.0)
    assert s["localization"] == pytest.approx(math.exp(-5 / 6) + 2 / 7)


def test_tal_no_ground_truth():
    none = {"task": "tal", "duration": 30, "segments": []}
    assert score("<answer></answer>", none)["localization"] == 2.0
    assert score("<answer>1 to 2</answer>", none)["localization"] == 0.0


# ---------------------------------------------------------------- totals, weights, batching


def test_weights():
    s = score("<answer>B</answer><evidence>10 to 30</evidence>", GVQA,
              weights={"format": 0.5, "localization": 2.0, "answer": 0.0})
    assert s["total"] == pytest.approx(0.5 * 1 + 2.0 * 0.5 + 0.0)
    with pytest.raises(ValueError, match="unknown key 'accuracy'"):
        score("x", TG, weights={"accuracy": 1.0})
    with pytest.raises(ValueError, match="finite"):
        score("x", TG, weights={"format": float("nan")})
    with pytest.raises(ValueError, match="sigma"):
        score("x", TG, sigma=0.0)


def test_mixed_batch_matches_single_rows():
    texts = ["<answer>15 to 25</answer>", "<answer>0 to 10, 25 to 35, 40 to 45</answer>",
             "<answer>10 to 15, 15 to 20</answer>", "<answer>B</answer><evidence>10 to 30</evidence>",
             "<answer>0 to 2, 5 to 10, 20 to 30</answer>", "garbage"]
    samples = [TG, DTG, VHD, GVQA, TAL, TAL]
    batch = R.compute_rewards(texts, samples)
    for i, (t, s) in enumerate(zip(texts, samples, strict=True)):
        single = score(t, s)
        for key in single:
            assert batch[key][i] == pytest.approx(single[key]), (i, key)
    assert all(v.dtype == np.float32 and v.shape == (6,) for v in batch.values())


def test_empty_batch():
    out = R.compute_rewards([], [])
    assert all(v.shape == (0,) for v in out.values())


def test_oversized_predictions_are_scored_exactly():
    # 300 intervals (beyond the shared bucket) still follow the rule exactly
    text = "<answer>" + ", ".join(f"{i} to {i + 1}" for i in range(300)) + "</answer>"
    vhd = {"task": "vhd", "duration": 400, "segments": [[0, 300]]}
    tal = {"task": "tal", "duration": 400, "segments": [[i, i + 1] for i in range(0, 300, 2)]}
    out = R.compute_rewards([text, text, "<answer>0 to 300</answer>"], [vhd, tal, vhd])
    assert out["localization"][0] == pytest.approx(1.0)
    assert out["localization"][1] == pytest.approx(math.exp(-150 / 3) + 2 * 150 / 450)
    assert out["localization"][2] == pytest.approx(1.0)


def test_compiles_once_per_bucket():
    def batch(seed):
        rng = np.random.default_rng(seed)
        texts, samples = [], []
        for _ in range(12):
            starts = np.sort(rng.uniform(0, 50, 3)).round(1)
            texts.append("<answer>" + ", ".join(f"{s} to {s + 5}" for s in starts) + "</answer>")
            samples.append({"task": "tal", "duration": 60, "segments": [[s, s + 4] for s in starts[:2]]})
        return texts, samples

    R.compute_rewards(*batch(0))
    size = R.many_to_many._cache_size()
    out1 = R.compute_rewards(*batch(1))
    out2 = R.compute_rewards(*batch(2), sigma=2.0)  # sigma is traced: no recompile either
    assert R.many_to_many._cache_size() == size
    assert not np.array_equal(out1["localization"], out2["localization"])


def test_the_number_of_parsable_completions_does_not_change_the_compiled_shapes():
    """A training batch has a fixed size but a varying number of parsable completions: one compilation."""
    sample = {"task": "tg", "duration": 30.0, "segments": [[5.0, 10.0]]}

    def batch(parsable):
        return [("<answer>5 to 9</answer>" if i < parsable else "no answer") for i in range(64)], [sample] * 64

    R.compute_rewards(*batch(64))
    size = R.one_to_one._cache_size()
    for parsable in (1, 9, 13, 30, 47):
        out = R.compute_rewards(*batch(parsable))
        assert out["localization"][:parsable] == pytest.approx(0.8) and not out["localization"][parsable:].any()
    assert R.one_to_one._cache_size() == size


# ---------------------------------------------------------------- bad samples and bad calls


@pytest.mark.parametrize("sample, match", [
    ({"task": "xyz", "duration": 1, "segments": []}, "field 'task'"),
    ({"duration": 1, "segments": [[0, 1]]}, "field 'task'"),
    ({"task": "tg", "duration": 0, "segments": [[0, 1]]}, "field 'duration'"),
    ({"task": "tg", "duration": float("nan"), "segments": [[0, 1]]}, "field 'duration'"),
    ({"task": "tg", "duration": "30", "segments": [[0, 1]]}, "field 'duration'"),
    ({"task": "tg", "duration": True, "segments": [[0, 1]]}, "field 'duration'"),
    ({"task": "tg", "duration": 30, "segments": [[5, 1]]}, r"'segments\[0\]': \[5.0, 1.0\]"),
    ({"task": "tg", "duration": 30, "segments": [[-1, 1]]}, r"'segments\[0\]'"),
    ({"task": "tg", "duration": 30, "segments": [["0", "1"]]}, r"'segments\[0\]'"),
    ({"task": "tg", "duration": 30, "segments": [[0, 1, 2]]}, r"'segments\[0\]'"),
    ({"task": "tg", "duration": 30, "segments": [[0, float("inf")]]}, r"'segments\[0\]'"),
    ({"task": "tg", "duration": 30, "segments": "0 to 1"}, "field 'segments'"),
    ({"task": "tg", "duration": 30}, "field 'segments'"),
    ({"task": "tg", "duration": 30, "segments": [[0, 1], [2, 3]]}, "exactly 1"),
    ({"task": "dtg", "duration": 30, "segments": []}, "at least 1"),
    ({"task": "gvqa", "duration": 30, "segments": [[0, 1]]}, "field 'answer'"),
    ({"task": "gvqa", "duration": 30, "segments": [[0, 1]], "answer": "b"}, "field 'answer'"),
    ({"task": "gvqa", "duration": 30, "segments": [[0, 1]], "answer": "D", "options": ["x", "y", "z"]}, "A-C"),
    ("not a mapping", "expected a mapping"),
])
def test_bad_samples_raise(sample, match):
    with pytest.raises(ValueError, match=match):
        R.compute_rewards(["<answer>0 to 1</answer>"], [sample])


def test_error_names_the_row_and_id():
    good = {"task": "tg", "duration": 30, "segments": [[0, 1]]}
    bad = {"id": "vid#3", "task": "tg", "duration": 30, "segments": [[3, 1]]}
    with pytest.raises(ValueError, match=r"sample 1 \(id 'vid#3'\): field 'segments\[0\]'"):
        R.compute_rewards(["a", "b"], [good, bad])


def test_bad_calls_raise():
    with pytest.raises(ValueError, match="2 completions but 1 samples"):
        R.compute_rewards(["a", "b"], [TG])
    with pytest.raises(ValueError, match="completion 0 must be a string"):
        R.compute_rewards([None], [TG])


def test_parse_completion_api():
    p = R.parse_completion("<answer>(C)</answer><evidence>5 to 50</evidence>", GVQA)
    assert p.format and p.letter == "C"
    np.testing.assert_array_equal(p.intervals, [[5.0, 40.0]])
    p = R.parse_completion("nothing", TG)
    assert not p.format and p.intervals is None and p.letter is None


# ---------------------------------------------------------------- import weight and the CLI


def test_import_pulls_no_tensorflow_flax_or_transformers():
    code = ("import sys, tempr1_jax.rewards; "
            "bad = [m for m in ('tensorflow', 'flax', 'transformers', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_cli_scores_files(tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", **TG}, "", {"id": "b", **GVQA}])
    comps = write_jsonl(tmp_path / "c.jsonl", [
        {"id": "a", "completion": "<answer>15 to 25</answer>"},
        {"id": "a", "completion": "nonsense"},
        {"id": "b", "completion": "<answer>B</answer><evidence>10 to 20</evidence>"},
    ])
    assert R.main(["--completions", comps, "--samples", samples]) == 0
    out = capsys.readouterr().out
    assert "gvqa" in out and "all" in out and "wrote 3 rows" in out
    rows = [json.loads(x) for x in (tmp_path / "c.rewards.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "a", "b"]
    assert rows[0]["total"] == pytest.approx(1 + 1 / 3) and rows[1]["total"] == 0 and rows[2]["total"] == 3


@pytest.mark.parametrize("samples, comps, match", [
    ([{"id": "a", **TG}], ['{"id": "a", "completion": '], r"c.jsonl:1: invalid JSON"),
    ([{"id": "a", **TG}], [{"id": "zz", "completion": "x"}], r"c.jsonl:1: id 'zz' is not in"),
    ([{"id": "a", **TG}], [{"id": "a"}], r"c.jsonl:1: field 'completion' must be a string"),
    ([{"id": "a", **TG}, {"id": "a", **TG}], [], r"s.jsonl:2: duplicate id 'a' \(first on line 1\)"),
    ([{"id": "a", "task": "tg", "duration": 3, "segments": [[2, 1]]}], [], r"s.jsonl:1: .*field 'segments\[0\]'"),
    ([{"task": "tg"}], [], r"s.jsonl:1: field 'id'"),
    (["[1, 2]"], [], r"s.jsonl:1: expected a JSON object"),
])
def test_cli_bad_input(tmp_path, capsys, samples, comps, match):
    s = write_jsonl(tmp_path / "s.jsonl", samples)
    c = write_jsonl(tmp_path / "c.jsonl", comps)
    assert R.main(["--completions", c, "--samples", s]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(match, err), err


def test_cli_missing_file_and_bad_weights(tmp_path, capsys):
    s = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", **TG}])
    assert R.main(["--completions", str(tmp_path / "nope.jsonl"), "--samples", s]) == 2
    assert "cannot read" in capsys.readouterr().err
    c = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "completion": "x"}])
    assert R.main(["--completions", c, "--samples", s, "--weights", "format"]) == 2
    assert "KEY=NUMBER" in capsys.readouterr().err
    assert R.main(["--completions", c, "--samples", s, "--weights", "speed=1"]) == 2
    assert "unknown key 'speed'" in capsys.readouterr().err


def test_cli_json_error_gives_file_line_and_column(tmp_path, capsys):
    """A truncated line: before, 'at column 1' (the decoder's position after the line's newline)."""
    s = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", **TG}])
    cut = '{"id": "a", "completion": "<answer>15 to 25</answer><think>x'
    c = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "completion": "x"}, cut])
    assert R.main(["--completions", c, "--samples", s]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {c}:2: invalid JSON (Unterminated string starting at column 27)", err
    c2 = write_jsonl(tmp_path / "c2.jsonl", ['{"id": "a", "completion": "x"'])
    assert R.main(["--completions", c2, "--samples", s]) == 2
    assert capsys.readouterr().err.strip() == f"error: {c2}:1: invalid JSON (Expecting ',' delimiter at column 30)"


def test_cli_non_utf8_byte_offset_is_the_files(tmp_path, capsys):
    """Past the text decoder's first 8 KiB chunk: before, the offset was the one inside that chunk."""
    s = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", **TG}])
    good = (json.dumps({"id": "a", "completion": "y" * 100}) + "\n").encode()
    bad = b'{"id": "a", "completion": "caf\xe9"}\n'
    path = tmp_path / "c.jsonl"
    path.write_bytes(good * 200 + bad)
    col = bad.index(b"\xe9")
    at = len(good) * 200 + col
    assert at > 8192
    assert R.main(["--completions", str(path), "--samples", s]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {path}:201: not UTF-8 text (invalid continuation byte: b'\\xe9' at byte {at} of the file, "
        f"byte {col + 1} of the line)"
    )


def test_cli_refuses_empty_files(tmp_path, capsys):
    """Before: 'wrote 0 rows', exit 0."""
    s = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", **TG}])
    empty = write_jsonl(tmp_path / "c.jsonl", ["", "  "])
    assert R.main(["--completions", empty, "--samples", s]) == 2
    assert capsys.readouterr().err.strip() == f"error: {empty}: no completion in the file (nothing to score)"
    no_samples = write_jsonl(tmp_path / "none.jsonl", [])
    c = write_jsonl(tmp_path / "c2.jsonl", [{"id": "a", "completion": "x"}])
    assert R.main(["--completions", c, "--samples", no_samples]) == 2
    assert capsys.readouterr().err.strip() == f"error: {no_samples}: no sample in the file (nothing to score against)"
    assert not (tmp_path / "c.rewards.jsonl").exists() and not (tmp_path / "c2.rewards.jsonl").exists()


def test_cli_module_on_the_examples(tmp_path):
    """The README quick start's reward command, as a real `python -m` process."""
    out = tmp_path / "rewards.jsonl"
    res = subprocess.run([sys.executable, "-m", "tempr1_jax.rewards", "--completions",
                          "examples/completions.jsonl", "--samples", "examples/samples.jsonl", "--output", str(out)],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    n_lines = sum(1 for line in (ROOT / "examples/completions.jsonl").read_text().splitlines() if line.strip())
    assert len(rows) == n_lines and {r["task"] for r in rows} == set(R.TASKS)
    assert "all" in res.stdout


def test_docs_example_runs_and_says_true_things():
    text = (ROOT / "docs" / "rewards.md").read_text()
    block = next(b for b in text.split("```python")[1:] if "compute_rewards(completions, samples" in b).split("```")[0]
    scope: dict = {}
    exec(block, scope)
    r = scope["r"]
    np.testing.assert_allclose(r["localization"], [1 / 3, 1.0, 0.5, math.exp(-0.5) + 0.8], atol=1e-6)
    np.testing.assert_allclose(r["total"], [1 + 1 / 3, 2.0, 2.5, 1 + math.exp(-0.5) + 0.8], atol=1e-6)
