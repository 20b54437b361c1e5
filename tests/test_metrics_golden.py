"""Golden tests: the official evaluators' numbers on the real files in ../shared/data (skipped when absent).

Expected values are the ones printed by the official evaluators' scripts;
the reference scripts round to 2 decimals (NExT-GQA prints 1), so we compare our unrounded percentages rounded
the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from metrics_data import (
    anet13_official_sample_submission,
    anet13_samples,
    anet_captions_samples,
    charades_samples,
    gt_predictions,
    nextgqa_samples,
    qvh_gt_predictions,
    qvh_moment_detr_expected,
    qvh_moment_detr_predictions,
    qvh_samples,
    qvh_vtgllm_predictions,
    require,
    rextime_samples,
    thumos_samples,
    vtgllm_charades,
)

from tempr1_jax import metrics
from tempr1_jax.evaluate import evaluate_predictions, normalize_prediction

QVH = "qvhighlights/highlight_val_release.jsonl"


def r2(x: float) -> float:
    return round(x, 2)


# --- QVHighlights -------------------------------------------------------------------------------------------


def test_qvhighlights_moment_detr_sample_reproduces_every_number():
    require(
        QVH,
        "qvhighlights/moment_detr_sample_val_preds.jsonl",
        "qvhighlights/moment_detr_sample_val_preds_metrics_raw.json",
    )
    samples, lines, expected = qvh_samples(), qvh_moment_detr_predictions(), qvh_moment_detr_expected()
    # Every number of the raw metrics file: MR-mAP and MR-R1 at every threshold for full/short/middle/long.
    by_id = {s["id"]: s for s in samples}
    preds = {str(d["qid"]): normalize_prediction(d, by_id[str(d["qid"])], "x", metrics.Rules()) for d in lines}
    mr = metrics.moment_retrieval(
        [preds[s["id"]] for s in samples],
        [np.asarray(s["segments"], float) for s in samples],
        metrics.Rules(),
    )
    checked = 0
    for rng in ("full", "short", "middle", "long"):
        for kind in ("MR-mAP", "MR-R1"):
            for key, value in expected[rng][kind].items():
                ours = mr[rng][kind if key == "average" else f"{kind}@{key}"]
                assert r2(ours) == value, (rng, kind, key, ours, value)
                checked += 1
    assert checked == 4 * 21
    # The same through the public entry point (moment_detr lines are read as they are), incl. highlights.
    res = evaluate_predictions(lines, samples, missing="error")
    vhd = res["vhd"]
    brief = expected["brief"]
    assert r2(vhd["MR-mAP"]) == brief["MR-full-mAP"] == 32.2
    assert r2(vhd["MR-mAP@0.5"]) == brief["MR-full-mAP@0.5"] == 54.96
    assert r2(vhd["MR-mAP@0.75"]) == brief["MR-full-mAP@0.75"] == 31.01
    assert r2(vhd["MR-R1@0.5"]) == brief["MR-full-R1@0.5"] == 53.94
    assert r2(vhd["MR-R1@0.7"]) == brief["MR-full-R1@0.7"] == 34.84
    for name in ("short", "middle", "long"):
        assert r2(vhd[f"MR-{name}-mAP"]) == brief[f"MR-{name}-mAP"]
    for level in ("Fair", "Good", "VeryGood"):
        assert r2(vhd[f"HL-mAP-{level}"]) == expected[f"HL-min-{level}"]["HL-mAP"]
        assert r2(vhd[f"HL-HIT@1-{level}"]) == expected[f"HL-min-{level}"]["HL-Hit1"]
    assert r2(vhd["HL-mAP-VeryGood"]) == 35.65 and r2(vhd["HL-HIT@1-VeryGood"]) == 55.55
    assert res["counts"]["vhd"] == {"total": 1550, "missing": 0, "unparsable": 0, "empty": 0}


def test_qvhighlights_vtgllm_llm_saliency_ties():
    """VTG-LLM's eval_vhd (moment_detr, match_number=False) on 1463 tie-heavy saliency vectors."""
    require(QVH, "qvhighlights/vtgllm_vhd_example_pred_file.json")
    samples, preds = qvh_samples(), qvh_vtgllm_predictions()
    res = evaluate_predictions(preds, samples, missing="skip")
    got = {k: r2(v) for k, v in res["vhd"].items()}
    assert got == {
        "HL-mAP-Fair": 28.80,
        "HL-HIT@1-Fair": 24.61,
        "HL-mAP-Good": 22.80,
        "HL-HIT@1-Good": 23.17,
        "HL-mAP-VeryGood": 13.24,
        "HL-HIT@1-VeryGood": 18.87,
    }  # highlight-only predictions: no window metrics, as moment_detr without pred_relevant_windows
    assert res["counts"]["vhd"]["missing"] == 87
    zero = evaluate_predictions(preds, samples)["vhd"]  # missing ones scored 0 instead of skipped
    assert zero["HL-mAP-VeryGood"] == pytest.approx(13.24 * 1463 / 1550, abs=0.01)


@pytest.mark.parametrize(
    "split, expected",
    [
        (
            "val",
            {
                "MR-R1@0.5": 100.0,
                "MR-R1@0.7": 100.0,
                "MR-mAP": 99.76,
                "MR-short-mAP": 79.75,
                "MR-middle-mAP": 89.80,
                "MR-long-mAP": 92.73,
                "HL-mAP-Fair": 96.77,
                "HL-mAP-Good": 88.04,
                "HL-mAP-VeryGood": 62.50,
                "HL-HIT@1-Fair": 100.0,
                "HL-HIT@1-Good": 99.94,
                "HL-HIT@1-VeryGood": 97.74,
                "mIoU": 100.0,
            },
        ),
        ("test", {"MR-mAP": 99.74, "HL-mAP-VeryGood": 62.48, "HL-HIT@1-VeryGood": 97.99, "mIoU": 100.0}),
    ],
)
def test_qvhighlights_ground_truth_as_prediction(split, expected):
    name = "highlight_val_release.jsonl" if split == "val" else "highlight_test_with_gt.jsonl"
    require(f"qvhighlights/{name}")
    samples = qvh_samples(split)
    res = evaluate_predictions(qvh_gt_predictions(samples), samples)["vhd"]
    assert {k: r2(res[k]) for k in expected} == expected


# --- Charades-STA / ActivityNet Captions --------------------------------------------------------------------


def test_charades_vtgllm_example_empty_predictions_are_misses():
    require(
        "charades_sta/vtgllm_tvg_example_gt_file.json",
        "charades_sta/vtgllm_tvg_example_pred_file.json",
        "charades_sta/Charades_v1_test.csv",
    )
    samples, preds = vtgllm_charades()
    res = evaluate_predictions(preds, samples, missing="skip")  # VTG-LLM eval_tvg --sample: n = 500
    assert [r2(res["tg"][f"R1@{t}"]) for t in ("0.3", "0.5", "0.7")] == [9.00, 3.40, 1.40]
    assert res["counts"]["tg"] == {"total": 3720, "missing": 3220, "unparsable": 0, "empty": 280}


@pytest.mark.parametrize(
    "build, files, n",
    [
        (charades_samples, ["charades_sta/charades_sta_test.txt", "charades_sta/Charades_v1_test.csv"], 3720),
        (lambda: anet_captions_samples("val_2", "tg"), ["activitynet_captions/val_2.json"], 17031),
        (lambda: anet_captions_samples("val_1", "dtg"), ["activitynet_captions/val_1.json"], 4917),
        (lambda: anet_captions_samples("val_2", "dtg"), ["activitynet_captions/val_2.json"], 4885),
    ],
    ids=["charades-tg", "anet-val2-tg", "anet-val1-dtg", "anet-val2-dtg"],
)
def test_grounding_ground_truth_as_prediction_is_100(build, files, n):
    require(*files)
    samples = build()
    res = evaluate_predictions(gt_predictions(samples), samples)
    task = samples[0]["task"]
    assert res[task] == {"R1@0.3": 100.0, "R1@0.5": 100.0, "R1@0.7": 100.0, "mIoU": 100.0}
    assert res["counts"][task] == {"total": n, "missing": 0, "unparsable": 0, "empty": 0}


def test_charades_sta_count_and_clipping_rule():
    """562 Charades-STA windows end after the video: no official evaluator clips, `clip=True` does."""
    require("charades_sta/charades_sta_test.txt", "charades_sta/Charades_v1_test.csv")
    samples = charades_samples()
    assert len(samples) == 3720
    over = sum(s["segments"][0][1] > s["duration"] for s in samples)
    assert over == 562
    clipped = evaluate_predictions(gt_predictions(samples), samples, clip=True)["tg"]
    assert clipped["mIoU"] < 100.0 and clipped["R1@0.3"] == 100.0


# --- NExT-GQA / ReXTime -------------------------------------------------------------------------------------


@pytest.mark.parametrize("split, n", [("val", 3358), ("test", 5553)])
def test_nextgqa_ground_truth_as_prediction(split, n):
    require(f"nextgqa/gsub_{split}.json", f"nextgqa/{split}.csv")
    samples = nextgqa_samples(split)
    assert len(samples) == n
    preds = gt_predictions(samples)
    # One ground-truth segment as the prediction (NExT-GQA predictions are one span): 100 everywhere.
    first = evaluate_predictions(preds, samples, gvqa_span="first")["gvqa"]
    assert set(first.values()) == {100.0}
    assert set(evaluate_predictions(preds, samples, gvqa_span="union")["gvqa"].values()) == {100.0}
    # Half of the predictions missing: the official eval_ground skips them (still 100), MLLM scripts count 0.
    half = preds[::2]
    skipped = evaluate_predictions(half, samples, missing="skip", gvqa_span="first")["gvqa"]
    assert set(skipped.values()) == {100.0}
    zero = evaluate_predictions(half, samples, gvqa_span="first")["gvqa"]
    assert zero["Acc"] == pytest.approx(100.0 * len(half) / n)
    # Perfect grounding, all answers wrong: Acc@GQA is 0.
    wrong = [dict(p, answer="A" if p["answer"] != "A" else "B") for p in preds]
    res = evaluate_predictions(wrong, samples, gvqa_span="first")["gvqa"]
    assert res["Acc"] == 0.0 and res["Acc@GQA"] == 0.0 and res["mIoP"] == 100.0


def test_nextgqa_test_hull_of_all_segments():
    """Predicting the hull of all ground-truth segments: IoU@0.5 = IoP@0.5 = 90.6, mIoU = mIoP = 92.4."""
    require("nextgqa/gsub_test.json", "nextgqa/test.csv")
    samples = nextgqa_samples("test")
    res = evaluate_predictions(gt_predictions(samples), samples)["gvqa"]  # default gvqa_span="hull"
    assert [round(res[k], 1) for k in ("IoU@0.5", "IoP@0.5", "mIoU", "mIoP")] == [90.6, 90.6, 92.4, 92.4]
    assert res["Acc"] == 100.0


def test_rextime_zero_length_ground_truth_ceiling():
    """Two ReXTime val windows have zero length: their IoU is 0, so ground truth as prediction gives 99.78."""
    require("rextime/rextime_val.jsonl")
    samples = rextime_samples()
    assert len(samples) == 921
    res = evaluate_predictions(gt_predictions(samples), samples)["gvqa"]
    assert [r2(res[k]) for k in ("IoU@0.3", "IoU@0.5", "mIoU", "Acc&IoU@0.5")] == [99.78] * 4
    assert res["Acc"] == 100.0
    assert res["IoP@0.5"] == 100.0  # NExT-GQA's IoP: a point inside the window counts


# --- TAL ----------------------------------------------------------------------------------------------------


def test_thumos14_ground_truth_and_equal_score_duplicates():
    require("thumos14/thumos_gt.json")
    samples = thumos_samples()
    assert sum(len(s["segments"]) for s in samples) == 3311
    res = evaluate_predictions(gt_predictions(samples), samples)["tal"]
    assert set(res) == {
        "mF1",
        "F1@0.1",
        "F1@0.3",
        "F1@0.5",
        "F1@0.7",
        "mAP",
        "mAP@0.3",
        "mAP@0.4",
        "mAP@0.5",
        "mAP@0.6",
        "mAP@0.7",
    }  # THUMOS14 protocol picked from the samples' source
    assert set(res.values()) == {100.0}
    dup = evaluate_predictions(gt_predictions(samples, repeat=2), samples)["tal"]
    assert r2(dup["mAP"]) == 51.57
    assert dup["mF1"] == 100.0  # MUSEG's F1 does not penalise duplicates
    lower = [dict(p, scores=[1.0, 0.5] * (len(p["segments"]) // 2)) for p in gt_predictions(samples, repeat=2)]
    assert evaluate_predictions(lower, samples)["tal"]["mAP"] == 100.0  # FPs ranked last cost nothing


def test_activitynet13_ground_truth_and_official_sample_submission():
    require(
        "activitynet13/anet_anno_action.json",
        "activitynet13/video_info_new.csv",
        "activitynet13/sample_detection_prediction.json",
    )
    samples = anet13_samples()
    assert len({s["video"] for s in samples}) == 4728
    assert sum(len(s["segments"]) for s in samples) == 7293
    res = evaluate_predictions(gt_predictions(samples), samples)["tal"]
    assert len([k for k in res if k.startswith("mAP@")]) == 10 and "mAP@0.95" in res
    assert res["mAP"] == pytest.approx(100.0) and res["mF1"] < 100.0  # 3 zero-length GT: IoU 0 for mF1
    miss = evaluate_predictions(gt_predictions(samples), samples, map_zero_length="miss")["tal"]
    assert 99.9 < miss["mAP"] < 100.0
    # The official sample submission (full 4926-video val GT, scores 1.0): its detections on the 198 videos
    # BMN lacks are false positives for the official code (97.20); AFSD drops them (100).
    preds, negatives = anet13_official_sample_submission(samples)
    official = evaluate_predictions(preds, samples + negatives)["tal"]
    assert r2(official["mAP"]) == 97.20
    afsd = evaluate_predictions(preds, samples, unknown_ids="ignore")["tal"]
    assert afsd["mAP"] == pytest.approx(100.0)


@pytest.mark.slow
def test_full_real_sets_equal_the_per_sample_reference():
    """What benchmarks/metrics.py times: on the full QVHighlights val and ActivityNet-1.3 val sets, with real
    (moment_detr) and jittered predictions, the vectorised metrics equal the per-sample reference."""
    require(QVH, "qvhighlights/moment_detr_sample_val_preds.jsonl", "activitynet13/anet_anno_action.json",
            "activitynet13/video_info_new.csv")  # fmt: skip
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "benchmarks_metrics", Path(__file__).resolve().parents[1] / "benchmarks" / "metrics.py"
    )
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    qvh, anet = qvh_samples(), anet13_samples()
    for recs in (qvh_gt_predictions(qvh), qvh_moment_detr_predictions()):
        for ours, theirs in zip(*[iter(bench.qvh_case(qvh, recs))] * 2, strict=True):
            assert np.allclose(ours(), theirs(), atol=1e-9, rtol=0)
    for recs in (gt_predictions(anet), bench.jittered(anet)):
        for ours, theirs in zip(*[iter(bench.anet_case(anet, recs))] * 2, strict=True):
            assert np.allclose(ours(), theirs(), atol=1e-9, rtol=0)
