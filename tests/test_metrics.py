"""Metric definitions and rules on crafted cases (the edge cases where the official evaluators differ)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tempr1_jax import metrics
from tempr1_jax.evaluate import evaluate_predictions


def tg(sid, gt, duration=100.0):
    return {"id": sid, "task": "tg", "duration": duration, "segments": [gt]}


def vhd(sid, gts, duration=20.0, **extra):
    return {"id": sid, "task": "vhd", "duration": duration, "segments": gts, **extra}


def tal(sid, gts, action="jump", source="activitynet13/val"):
    return {"id": sid, "task": "tal", "duration": 100.0, "segments": gts, "action": action, "source": source}


def gvqa(sid, gts, answer="B"):
    return {"id": sid, "task": "gvqa", "duration": 60.0, "segments": gts, "answer": answer}


# --- IoU --------------------------------------------------------------------------------------------------


def test_iou_formulas_and_edges():
    a = np.array
    assert metrics.iou_hull(a(0.0), a(10.0), a(0.0), a(5.0)) == 0.5
    assert metrics.iou_sum(a(0.0), a(10.0), a(0.0), a(5.0)) == 0.5
    assert metrics.iou_hull(a(0.0), a(2.1), a(0.0), a(3.0)) == 0.7000000000000001  # the hull formula's bit
    assert metrics.iou_hull(a(12.0), a(2.0), a(0.0), a(10.0)) == 0.0  # reversed: overlaps nothing
    assert metrics.iou_sum(a(12.0), a(2.0), a(0.0), a(10.0), "match") == 0.0  # (ActivityNet: NaN, a match)
    assert metrics.iou_hull(a(5.0), a(5.0), a(5.0), a(5.0)) == 0.0  # 0/0 is 0 (moment_detr paired)
    assert metrics.iou_sum(a(5.0), a(5.0), a(3.0), a(3.0), "match") == np.inf  # ActivityNet's NaN: a match
    assert metrics.iou_sum(a(5.0), a(5.0), a(3.0), a(3.0), "miss") == 0.0
    assert metrics.iou_sum(a(5.0), a(5.0), a(0.0), a(10.0), "match") == 0.0
    assert metrics.iou_hull(a(0.0), a(1.0), a(2.0), a(3.0)) == 0.0


def test_threshold_op_ge_versus_gt():
    samples = [tg("a", [0, 5])]
    preds = [{"id": "a", "segments": [[0, 10]]}]  # IoU exactly 0.5
    assert evaluate_predictions(preds, samples)["tg"]["R1@0.5"] == 100.0
    assert evaluate_predictions(preds, samples, threshold="gt")["tg"]["R1@0.5"] == 0.0
    preds = [{"id": "a", "segments": [[0, 2.1]]}]
    samples = [tg("a", [0, 3.0])]
    assert evaluate_predictions(preds, samples, threshold="gt")["tg"]["R1@0.7"] == 100.0  # 0.7000000000000001


# --- TG / DTG ---------------------------------------------------------------------------------------------


def test_tg_top1_window_and_rules():
    samples = [tg("a", [10, 20]), tg("b", [0, 10]), tg("c", [0, 10])]
    preds = [
        {"id": "a", "segments": [[50, 60], [10, 20]], "scores": [0.1, 0.9]},
        {"id": "b", "segments": []},  # empty answer: a miss
        {"id": "c", "segments": None},  # unparsable: a miss
    ]
    res = evaluate_predictions(preds, samples)
    assert res["tg"]["mIoU"] == 0.0  # the first window, as moment_detr / VTG-LLM
    assert res["counts"]["tg"] == {"total": 3, "missing": 0, "unparsable": 1, "empty": 1}
    assert evaluate_predictions(preds, samples, r1_window="top_score")["tg"]["mIoU"] == pytest.approx(100 / 3)


def test_tg_reversed_rule():
    samples = [tg("a", [0, 10])]
    preds = [{"id": "a", "segments": [[10, 0]]}]
    assert evaluate_predictions(preds, samples)["tg"]["mIoU"] == 0.0
    assert evaluate_predictions(preds, samples, reversed="swap")["tg"]["mIoU"] == 100.0
    res = evaluate_predictions(preds, samples, reversed="unparsable")
    assert res["tg"]["mIoU"] == 0.0 and res["counts"]["tg"]["unparsable"] == 1


def test_missing_rule_zero_skip_error():
    samples = [tg("a", [0, 10]), tg("b", [0, 10])]
    preds = [{"id": "a", "segments": [[0, 10]]}]
    assert evaluate_predictions(preds, samples)["tg"]["mIoU"] == 50.0
    assert evaluate_predictions(preds, samples, missing="skip")["tg"]["mIoU"] == 100.0
    with pytest.raises(ValueError, match="1 tg sample.*no prediction.*'b'"):
        evaluate_predictions(preds, samples, missing="error")


def test_clip_rule():
    samples = [tg("a", [90, 100], duration=95.0)]
    preds = [{"id": "a", "segments": [[90, 100]]}]
    assert evaluate_predictions(preds, samples)["tg"]["mIoU"] == 100.0  # nobody clips
    assert evaluate_predictions(preds, samples, clip=True)["tg"]["mIoU"] == 50.0


def test_dtg_pairs_by_index():
    samples = [{"id": "v", "task": "dtg", "duration": 50.0, "segments": [[0, 10], [10, 20], [20, 30]]}]
    preds = [{"id": "v", "segments": [[0, 10], [20, 30]]}]  # second query gets [20, 30], third nothing
    res = evaluate_predictions(preds, samples)["dtg"]
    assert res["mIoU"] == pytest.approx(100 / 3) and res["R1@0.7"] == pytest.approx(100 / 3)
    preds = [{"id": "v", "segments": [[0, 10], [10, 20], [20, 30], [30, 40]]}]  # extra ignored
    assert evaluate_predictions(preds, samples)["dtg"]["mIoU"] == 100.0


# --- VHD: moment retrieval ---------------------------------------------------------------------------------


def test_mr_keeps_first_ten_windows_before_sorting():
    samples = [vhd("q", [[0, 2]], duration=40.0)]
    wrong = [[2 * i + 4, 2 * i + 6] for i in range(10)]
    preds = [{"id": "q", "segments": wrong + [[0, 2]], "scores": [0.1] * 10 + [1.0]}]
    assert evaluate_predictions(preds, samples)["vhd"]["MR-mAP"] == 0.0  # the correct 11th is dropped
    assert evaluate_predictions(preds, samples, max_windows=0)["vhd"]["MR-mAP"] == 100.0


def test_mr_r1_uses_first_window_map_uses_scores():
    samples = [vhd("q", [[0, 10]])]
    preds = [{"id": "q", "segments": [[12, 20], [0, 10]], "scores": [0.1, 0.9]}]
    res = evaluate_predictions(preds, samples)["vhd"]
    assert res["MR-R1@0.5"] == 0.0 and res["MR-mAP"] == 100.0
    assert evaluate_predictions(preds, samples, r1_window="top_score")["vhd"]["MR-R1@0.5"] == 100.0


def test_mr_empty_prediction_left_out_of_map():
    samples = [vhd("a", [[0, 10]]), vhd("b", [[0, 10]])]
    preds = [{"id": "a", "segments": [[0, 10]]}, {"id": "b", "segments": []}]
    res = evaluate_predictions(preds, samples)["vhd"]
    assert res["MR-mAP"] == 100.0 and res["MR-R1@0.5"] == 50.0  # moment_detr: empty left out of mAP
    assert evaluate_predictions(preds, samples, mr_empty="zero")["vhd"]["MR-mAP"] == 50.0
    preds[1]["segments"] = None  # unparsable is a failure, not an empty answer
    assert evaluate_predictions(preds, samples)["vhd"]["MR-mAP"] == 50.0


def test_mr_duplicates_are_false_positives_and_ties_keep_order():
    samples = [vhd("q", [[0, 10]])]
    fp_first = [{"id": "q", "segments": [[12, 20], [0, 10]]}]  # equal scores: output order is the ranking
    assert evaluate_predictions(fp_first, samples)["vhd"]["MR-mAP@0.5"] == 50.0
    assert evaluate_predictions(fp_first, samples, ties="reverse")["vhd"]["MR-mAP@0.5"] == 100.0
    dup = [{"id": "q", "segments": [[0, 10], [0, 10]]}]
    assert evaluate_predictions(dup, samples)["vhd"]["MR-mAP@0.5"] == 100.0  # FP after the TP costs nothing


def test_vhd_miou_of_unions():
    samples = [vhd("q", [[0, 10], [20, 30]], duration=40.0)]
    preds = [{"id": "q", "segments": [[0, 5], [5, 10], [20, 25]]}]  # touching windows merge
    assert evaluate_predictions(preds, samples)["vhd"]["mIoU"] == 75.0


def test_mr_length_buckets():
    samples = [vhd("s", [[0, 4]]), vhd("m", [[0, 20]], duration=40.0), vhd("l", [[0, 60]], duration=80.0)]
    preds = [{"id": s["id"], "segments": s["segments"]} for s in samples]
    res = evaluate_predictions(preds, samples)["vhd"]
    assert res["MR-short-mAP"] == res["MR-middle-mAP"] == res["MR-long-mAP"] == 100.0
    res = evaluate_predictions(preds[:1], samples[:1])["vhd"]
    assert "MR-short-mAP" in res and "MR-long-mAP" not in res  # no query in range: not reported


# --- VHD: highlights ---------------------------------------------------------------------------------------


def test_highlight_ap_ties_and_degenerate_rows():
    labels = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], float)
    scores = np.array([[1, 1, 0, 0], [3, 2, 1, 0], [0, 0, 0, 0], [0, 1, 2, 3]], float)
    ap = metrics.highlight_ap(labels, scores, np.array([4, 4, 4, 4]))
    # row 0: one threshold at 1 (P .5, R .5), one at 0 (P .5, R 1): mean .5; row 3: found last: 1/4.
    assert ap.tolist() == [0.5, 0.0, 1.0, 0.25]
    assert metrics.highlight_ap(np.array([[1, 0, 9]], float), np.array([[0, 1, 9]], float), np.array([2]))[0] == 0.5


def test_highlight_hit_at_one_first_maximum():
    sample = vhd("q", [[2, 4]], duration=8.0, relevant_clip_ids=[1], saliency_scores=[[4, 4, 4]])
    res = evaluate_predictions([{"id": "q", "saliency": [0, 0, 0, 0]}], [sample])["vhd"]
    assert res["HL-HIT@1-VeryGood"] == 0.0  # all-zero prediction picks clip 0
    assert set(res) == {f"HL-{m}-{lvl}" for m in ("mAP", "HIT@1") for lvl in ("Fair", "Good", "VeryGood")}
    res = evaluate_predictions([{"id": "q", "saliency": [0, 5, 5, 0]}], [sample])["vhd"]
    assert res["HL-HIT@1-VeryGood"] == 100.0 and res["HL-mAP-VeryGood"] == 50.0
    res = evaluate_predictions([{"id": "q", "saliency": [0, 0, 0, 0, 9]}], [sample])["vhd"]
    assert res["HL-HIT@1-Fair"] == 0.0  # argmax beyond the clip count is a miss; mAP truncates
    assert res["HL-mAP-Fair"] == 25.0


def test_highlight_from_segments_and_windows_with_saliency():
    sample = vhd("q", [[2, 4]], duration=8.0, relevant_clip_ids=[1], saliency_scores=[[4, 4, 4]])
    pred = {"id": "q", "segments": [[2, 4]]}
    assert "HL-mAP-Fair" not in evaluate_predictions([pred], [sample])["vhd"]
    res = evaluate_predictions([pred], [sample], hl_saliency="from_segments")["vhd"]
    assert res["HL-mAP-VeryGood"] == 100.0 and res["HL-HIT@1-VeryGood"] == 100.0 and res["mIoU"] == 100.0


# --- GVQA --------------------------------------------------------------------------------------------------


def test_gvqa_nextgqa_iou_iop():
    samples = [gvqa("a", [[10, 20], [30, 40]]), gvqa("b", [[10, 20]]), gvqa("c", [[10, 20]])]
    preds = [
        {"id": "a", "segments": [[15, 35]], "answer": "B"},  # IoU 5/25 with each; IoP 5/20 each
        {"id": "b", "segments": [[12, 12]], "answer": "(B)"},  # point inside: IoU 0, IoP 1
        {"id": "c", "segments": [[10, 15]], "answer": "C"},  # IoU .5, IoP 1, wrong answer
    ]
    res = evaluate_predictions(preds, samples)["gvqa"]
    assert res["Acc"] == pytest.approx(200 / 3)
    assert res["mIoU"] == pytest.approx(100 * (0.2 + 0 + 0.5) / 3)
    assert res["mIoP"] == pytest.approx(75.0)
    assert res["IoP@0.5"] == pytest.approx(200 / 3)
    assert res["Acc@GQA"] == pytest.approx(100 / 3)  # b: correct and IoP 1; c: wrong
    assert res["Acc&IoU@0.5"] == 0.0


def test_gvqa_span_rules_and_letters():
    samples = [gvqa("a", [[0, 10], [20, 30]])]
    preds = [{"id": "a", "segments": [[0, 10], [20, 30]], "answer": "B."}]
    hull = evaluate_predictions(preds, samples)["gvqa"]
    assert hull["mIoU"] == pytest.approx(100 / 3) and hull["Acc"] == 100.0  # hull [0, 30] vs [0, 10]
    assert evaluate_predictions(preds, samples, gvqa_span="first")["gvqa"]["mIoU"] == 100.0
    assert evaluate_predictions(preds, samples, gvqa_span="union")["gvqa"]["mIoU"] == 100.0
    for bad in ("b", "B and C", "", "Z"):
        res = evaluate_predictions([dict(preds[0], answer=bad)], samples)
        assert res["gvqa"]["Acc"] == 0.0 and res["counts"]["gvqa"]["unparsable"] == 1


# --- TAL ---------------------------------------------------------------------------------------------------


def test_tal_mf1_museg_definition():
    samples = [tal("a", [[0, 10]]), tal("b", [[0, 10], [20, 30]]), tal("n", [])]
    preds = [
        {"id": "a", "segments": [[0, 10], [40, 50]]},  # R 1, P .5: F1 2/3 at every threshold
        {"id": "b", "segments": [[0, 10], [0, 10]]},  # R .5, P 1 (duplicates not penalised): 2/3
        {"id": "n", "segments": []},  # no ground truth, nothing predicted: 1
    ]
    res = evaluate_predictions(preds, samples)["tal"]
    assert res["mF1"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 1) / 3)
    assert res["F1@0.1"] == res["F1@0.7"]
    preds[2]["segments"] = [[0, 1]]
    assert evaluate_predictions(preds, samples)["tal"]["F1@0.5"] == pytest.approx(100 * (4 / 3) / 3)


def test_tal_map_protocols_and_classes():
    samples = [tal("a", [[0, 10]], "jump"), tal("b", [[0, 10]], "run")]
    preds = [{"id": "a", "segments": [[0, 10]]}]  # nobody predicts "run": AP 0 for that class
    res = evaluate_predictions(preds, samples)["tal"]
    assert res["mAP"] == 50.0 and "mAP@0.95" in res and "mAP@0.55" in res
    res = evaluate_predictions(preds, samples, tal_protocol="thumos14")["tal"]
    assert sorted(k for k in res if k.startswith("mAP@")) == [f"mAP@0.{i}" for i in range(3, 8)]
    thumos = [tal("a", [[0, 10]], source="thumos14/test")]
    assert "mAP@0.3" in evaluate_predictions(preds, thumos)["tal"]


def test_tal_map_ties_and_zero_length():
    samples = [tal("a", [[0, 10]]), tal("b", [[0, 10]])]
    preds = [{"id": "a", "segments": [[20, 30]]}, {"id": "b", "segments": [[0, 10]]}]  # FP then TP, equal
    assert evaluate_predictions(preds, samples)["tal"]["mAP"] == 50.0  # reverse input order: TP first
    assert evaluate_predictions(preds, samples, ties="stable")["tal"]["mAP"] == 25.0
    zero = [tal("z", [[3, 3]])]
    preds = [{"id": "z", "segments": [[5, 5]]}]
    assert evaluate_predictions(preds, zero)["tal"]["mAP"] == 100.0  # official: 0/0 IoU is NaN, a match
    assert evaluate_predictions(preds, zero, map_zero_length="miss")["tal"]["mAP"] == 0.0


def test_tal_map_greedy_locking_and_threshold_op():
    samples = [tal("a", [[0, 10], [0, 5]])]
    # Highest score [0, 10] locks the first GT; [0, 5] then takes the second.
    preds = [{"id": "a", "segments": [[0, 5], [0, 10]], "scores": [0.5, 0.9]}]
    assert evaluate_predictions(preds, samples)["tal"]["mAP"] == 100.0
    exact = [{"id": "a", "segments": [[0, 10], [0, 10]]}]  # second copy: IoU .5 with [0, 5]
    assert evaluate_predictions(exact, samples, tal_protocol="thumos14")["tal"]["mAP@0.5"] == 100.0
    assert evaluate_predictions(exact, samples, tal_protocol="thumos14", threshold="gt")["tal"]["mAP@0.5"] == 50.0


def test_map_equal_iou_takes_the_last_ground_truth():
    """argsort()[::-1] visits equal IoUs last index first: [0, 10] (IoU .5 with both) takes [5, 10], which
    leaves [0, 5] for the next detection. Taking the first would leave it a false positive."""
    samples = [tal("a", [[0, 5], [5, 10]])]
    preds = [{"id": "a", "segments": [[0, 10], [0, 5]], "scores": [0.9, 0.8]}]
    assert evaluate_predictions(preds, samples)["tal"]["mAP@0.5"] == 100.0
    q = [vhd("q", [[0, 5], [5, 10]])]
    assert evaluate_predictions([dict(preds[0], id="q")], q)["vhd"]["MR-mAP@0.5"] == 100.0


# --- Rules and module hygiene -------------------------------------------------------------------------------


def test_rules_validation():
    with pytest.raises(ValueError, match="unknown rule.*'mising'"):
        metrics.Rules.make(mising="skip")
    with pytest.raises(ValueError, match="rule 'missing': 'drop' is not one of"):
        metrics.Rules(missing="drop")
    with pytest.raises(ValueError, match="max_windows"):
        metrics.Rules(max_windows=-1)
    with pytest.raises(ValueError, match="unknown rule"):
        evaluate_predictions([], [], colour="red")


def test_threshold_names():
    names = [metrics.threshold_name(t) for t in metrics.ANET_THRESHOLDS]
    assert names == ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95"]
    assert metrics.ANET_THRESHOLDS[8] == 0.8999999999999999  # the official linspace value, used as is


def test_metrics_imports_neither_jax_nor_tensorflow():
    code = (
        "import sys, tempr1_jax.metrics, tempr1_jax.evaluate\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'tensorflow', 'flax'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
