"""Metrics score the dataset's own ground truth: converted samples (``data_pipeline.convert``, which clips and
drops for the rewards) keep it in ``released_segments``, and the metrics reproduce the official evaluators on the
converted files (real files in ../shared/data; skipped when absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from metrics_data import path, require
from metrics_reference import nextgqa_eval_ground

from data_pipeline.formats import convert_files
from tempr1_jax.evaluate import evaluate_predictions

KEYS = ("Acc@GQA", "mIoP", "IoP@0.3", "IoP@0.5", "mIoU", "IoU@0.3", "IoU@0.5", "Acc")


def _nextgqa(split: str):
    require(f"nextgqa/{split}.csv", f"nextgqa/gsub_{split}.json")
    ctx = convert_files("nextgqa", [str(path(f"nextgqa/{split}.csv")), str(path(f"nextgqa/gsub_{split}.json"))])
    return ctx.samples, json.loads(path(f"nextgqa/gsub_{split}.json").read_text())


def _predictions(samples, seed=0):
    """A model-like mix, seeded: jittered evidence hulls (some past the video's end, some points, some reversed),
    70% right answers, every third question without a prediction (the official rule skips those)."""
    rng = np.random.default_rng(seed)
    preds = []
    for i, s in enumerate(samples):
        if i % 3 == 2:
            continue
        segs = np.asarray(s.get("released_segments", s["segments"]), float)
        lo, hi = segs[:, 0].min(), segs[:, 1].max()
        length = max(hi - lo, 0.5)
        a, b = lo + rng.normal(0, 0.3 * length), hi + rng.normal(0, 0.3 * length)
        if i % 7 == 0:
            b = s["duration"] + 1.5  # past the end: official evaluators never clip
        if i % 11 == 0:
            b = a  # a point: IoU 0, IoP 1 inside a segment
        if i % 13 == 0:
            a, b = b + 1.0, a  # reversed: overlaps nothing
        a, b = round(float(a), 2), round(float(b), 2)
        wrong = "ABCDE".replace(s["answer"], "")[i % 4]
        preds.append({"id": s["id"], "segments": [[a, b]], "answer": s["answer"] if rng.random() < 0.7 else wrong})
    return preds


def _official(samples, preds, gsub):
    by_id = {s["id"]: s for s in samples}
    pred_ground = {p["id"]: p["segments"][0] for p in preds}
    pred_qa = {p["id"]: {"answer": by_id[p["id"]]["answer"], "prediction": p["answer"]} for p in preds}
    return nextgqa_eval_ground(gsub, pred_ground, pred_qa)


@pytest.mark.parametrize("split, n_released", [("val", 3), ("test", 36)])
def test_nextgqa_missing_skip_reproduces_official_eval_ground(split, n_released):
    """``--missing skip`` on the converted files gives doc-doc/NExT-GQA eval_ground's numbers (to 1e-9 points);
    scoring the clipped ``segments`` instead would not (val: 3 ends clipped to the video; test: 36 starts < 0)."""
    samples, gsub = _nextgqa(split)
    assert sum("released_segments" in s for s in samples) == n_released
    preds = _predictions(samples)
    official = _official(samples, preds, gsub)
    ours = evaluate_predictions(preds, samples, missing="skip")
    assert ours["counts"]["gvqa"]["total"] - ours["counts"]["gvqa"]["missing"] == official["count"] == len(preds)
    for k in KEYS:
        assert ours["gvqa"][k] == pytest.approx(official[k], abs=1e-9), k
    clipped = [{k: v for k, v in s.items() if k != "released_segments"} for s in samples]
    worse = evaluate_predictions(preds, clipped, missing="skip")["gvqa"]
    assert max(abs(worse[k] - official[k]) for k in KEYS) > 1e-4


def test_nextgqa_test_the_dropped_ambiguous_question_is_the_only_question_left_out():
    """The converter drops one test question (test.csv line 3086: its answer 'happy' is both options D and E);
    the official evaluator would score it when predicted, so a prediction for it has no sample to go with."""
    samples, gsub = _nextgqa("test")
    ids = {s["id"] for s in samples}
    assert [f"{v}_{q}" for v, a in gsub.items() for q in a["location"] if f"{v}_{q}" not in ids] == ["3842638015_4"]


@pytest.mark.parametrize(
    "fmt, files, split, n_samples, n_scored, n_released",
    [
        (
            "charades_sta",
            ("charades_sta/charades_sta_test.txt", "charades_sta/Charades_v1_test.csv"),
            None,
            3720,
            3720,
            562,
        ),
        ("thumos14", ("thumos14/test_Annotation.csv", "thumos14/test_video_info.csv"), None, 247, 3358, 3),
        (
            "activitynet13",
            ("activitynet13/anet_anno_action.json", "activitynet13/video_info_new.csv"),
            "val",
            4732,
            7291,
            72,
        ),
    ],
)
def test_converted_ground_truth_as_released(fmt, files, split, n_samples, n_scored, n_released):
    """Charades-STA: 562 ends past the video clipped for the rewards, scored as released; THUMOS14: the 26
    instances that start after their video's end are dropped for the rewards but scored (3358 = every non-Ambiguous
    instance); ActivityNet-1.3 val: 71 ends clipped and 1 zero-length instance kept for the metrics, while 2
    classes whose only instance has zero length are dropped (7291 of the official 7293 instances scored)."""
    require(*files)
    samples = convert_files(fmt, [str(path(f)) for f in files], split=split).samples
    assert len(samples) == n_samples
    assert sum(len(s.get("released_segments", s["segments"])) for s in samples) == n_scored
    assert sum("released_segments" in s for s in samples) == n_released
    # The released ground truth as the prediction scores 100 on the official metrics of each task.
    preds = [{"id": s["id"], "segments": s.get("released_segments", s["segments"])} for s in samples]
    res = evaluate_predictions(preds, samples)
    task = samples[0]["task"]
    key = {"tg": "mIoU", "tal": "mAP"}[task]
    if fmt != "activitynet13":  # its zero-length instance: 0/0 IoU "matches" at every threshold, as officially
        assert res[task][key] == 100.0
    else:
        assert res[task]["mAP"] == pytest.approx(100.0)
