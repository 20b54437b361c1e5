"""Build samples (docs/formats.md) and prediction records from the real annotation files in ../shared/data.

Small local converters for the metric tests and benchmarks (the project's converters live in
``data_pipeline.convert``). Files are read in place, never copied. Every builder raises FileNotFoundError when
its file is absent; tests call :func:`require` first to skip cleanly.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
LETTERS = "ABCDEFGH"


def path(rel: str) -> Path:
    return DATA / rel


def require(*rels: str) -> None:
    """pytest.skip unless every file exists."""
    import pytest

    missing = [r for r in rels if not path(r).exists()]
    if missing:
        pytest.skip(f"shared data absent: {', '.join(missing)}")


def _jsonl(rel: str) -> list[dict]:
    with open(path(rel), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _json(rel: str):
    with open(path(rel), encoding="utf-8") as f:
        return json.load(f)


# --- QVHighlights ------------------------------------------------------------------------------------------


def qvh_samples(split: str = "val") -> list[dict]:
    name = "highlight_val_release.jsonl" if split == "val" else "highlight_test_with_gt.jsonl"
    out = []
    for g in _jsonl(f"qvhighlights/{name}"):
        out.append(
            {
                "id": str(g["qid"]),
                "task": "vhd",
                "video": g["vid"],
                "duration": g["duration"],
                "segments": g["relevant_windows"],
                "query": g["query"],
                "source": f"qvhighlights/{split}",
                "relevant_clip_ids": g["relevant_clip_ids"],
                "saliency_scores": g["saliency_scores"],
            }
        )
    return out


def qvh_moment_detr_predictions() -> list[dict]:
    """moment_detr's sample submission, its lines as they are (qid, pred_relevant_windows, ...)."""
    return _jsonl("qvhighlights/moment_detr_sample_val_preds.jsonl")


def qvh_moment_detr_expected() -> dict:
    return _json("qvhighlights/moment_detr_sample_val_preds_metrics_raw.json")


def qvh_vtgllm_predictions() -> list[dict]:
    """VTG-LLM's LLM-style saliency vectors (1463 of the 1550 val queries, heavy ties)."""
    return [
        {"id": str(d["qid"]), "saliency": d["pred_saliency_scores"]}
        for d in _json("qvhighlights/vtgllm_vhd_example_pred_file.json")
    ]


def qvh_gt_predictions(samples: list[dict]) -> list[dict]:
    """Ground truth as prediction: the windows (equal scores) and, per clip, the highest annotator score with
    ties broken by the mean (the oracle behind the notes' 96.77 / 88.04 / 62.50 on val)."""
    out = []
    for s in samples:
        sal = [0.0] * int(s["duration"] / 2)
        for cid, row in zip(s["relevant_clip_ids"], s["saliency_scores"], strict=True):
            if cid < len(sal):
                sal[cid] = max(row) + sum(row) / len(row) / 10
        out.append({"id": s["id"], "segments": s["segments"], "saliency": sal})
    return out


# --- Charades-STA / ActivityNet Captions --------------------------------------------------------------------


def charades_durations() -> dict[str, float]:
    with open(path("charades_sta/Charades_v1_test.csv"), encoding="utf-8") as f:
        return {r["id"]: float(r["length"]) for r in csv.DictReader(f)}


def charades_samples() -> list[dict]:
    """Charades-STA test (tg), ids <video>#<k> in file order."""
    dur = charades_durations()
    count: dict[str, int] = defaultdict(int)
    out = []
    with open(path("charades_sta/charades_sta_test.txt"), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            head, query = line.rstrip("\n").split("##")
            vid, s, e = head.split()
            out.append(
                {
                    "id": f"{vid}#{count[vid]}",
                    "task": "tg",
                    "video": vid,
                    "duration": dur[vid],
                    "segments": [[float(s), float(e)]],
                    "query": query,
                    "source": "charades_sta/test",
                }
            )
            count[vid] += 1
    return out


def vtgllm_charades() -> tuple[list[dict], list[dict]]:
    """VTG-LLM's Charades example: samples from its coco-format GT, and its 500 predictions (280 empty)."""
    dur = charades_durations()
    count: dict[str, int] = defaultdict(int)
    samples, id_of = [], {}
    for a in _json("charades_sta/vtgllm_tvg_example_gt_file.json")["annotations"]:
        vid = a["image_id"].removesuffix(".mp4")
        sid = f"{vid}#{count[vid]}"
        count[vid] += 1
        id_of[a["id"]] = sid
        samples.append(
            {
                "id": sid,
                "task": "tg",
                "video": vid,
                "duration": dur[vid],
                "segments": [a["timestamp"]],
                "query": a["caption"],
                "source": "charades_sta/test",
            }
        )
    preds = [
        {"id": id_of[int(k)], "segments": v["timestamp"]}
        for k, v in _json("charades_sta/vtgllm_tvg_example_pred_file.json").items()
    ]
    return samples, preds


def anet_captions_samples(split: str = "val_2", task: str = "tg") -> list[dict]:
    """ActivityNet Captions val_1 / val_2: one tg sample per sentence (<video>#<k>) or one dtg per video."""
    out = []
    for vid, v in _json(f"activitynet_captions/{split}.json").items():
        if task == "dtg":
            out.append(
                {
                    "id": vid,
                    "task": "dtg",
                    "video": vid,
                    "duration": v["duration"],
                    "segments": v["timestamps"],
                    "queries": [s.strip() for s in v["sentences"]],
                    "source": f"activitynet_captions/{split}",
                }
            )
            continue
        for k, (ts, sent) in enumerate(zip(v["timestamps"], v["sentences"], strict=True)):
            out.append(
                {
                    "id": f"{vid}#{k}",
                    "task": "tg",
                    "video": vid,
                    "duration": v["duration"],
                    "segments": [ts],
                    "query": sent.strip(),
                    "source": f"activitynet_captions/{split}",
                }
            )
    return out


# --- NExT-GQA / ReXTime -------------------------------------------------------------------------------------


def nextgqa_samples(split: str = "val") -> list[dict]:
    gsub = _json(f"nextgqa/gsub_{split}.json")
    out = []
    with open(path(f"nextgqa/{split}.csv"), encoding="utf-8") as f:
        for r in csv.DictReader(f):
            vid, qid = r["video_id"], r["qid"]
            if vid not in gsub or qid not in gsub[vid]["location"]:
                continue
            options = [r[f"a{i}"] for i in range(5)]
            out.append(
                {
                    "id": f"{vid}_{qid}",
                    "task": "gvqa",
                    "video": vid,
                    "duration": gsub[vid]["duration"],
                    "segments": gsub[vid]["location"][qid],
                    "question": r["question"],
                    "options": options,
                    "answer": LETTERS[options.index(r["answer"])],
                    "type": r["type"],
                    "source": f"nextgqa/{split}",
                }
            )
    return out


def rextime_samples() -> list[dict]:
    return [
        {
            "id": g["qid"],
            "task": "gvqa",
            "video": g["vid"],
            "duration": g["duration"],
            "segments": g["relevant_windows"],
            "question": g["query"],
            "answer": g["ans"],
            "source": "rextime/val",
        }
        for g in _jsonl("rextime/rextime_val.jsonl")
    ]


# --- TAL: THUMOS14 / ActivityNet-1.3 ------------------------------------------------------------------------


def _tal_from_database(db: dict, source: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for vid, v in db.items():
        for a in v["annotations"]:
            sid = f"{vid}#{a['label']}"
            if sid not in out:
                out[sid] = {
                    "id": sid,
                    "task": "tal",
                    "video": vid,
                    "duration": float(v.get("duration", 0.0)),
                    "segments": [],
                    "action": a["label"],
                    "source": source,
                }
            out[sid]["segments"].append([float(a["segment"][0]), float(a["segment"][1])])
    for s in out.values():  # durations are unknown in these files: cover every window
        s["duration"] = max([s["duration"]] + [e for _, e in s["segments"]])
    return out


def thumos_samples() -> list[dict]:
    """THUMOS14 test from AFSD's thumos_gt.json (210 videos, 3311 instances), a sample per (video, class)."""
    db = {k: v for k, v in _json("thumos14/thumos_gt.json")["database"].items() if v["subset"] == "test"}
    return list(_tal_from_database(db, "thumos14/test").values())


def anet13_samples() -> list[dict]:
    """ActivityNet-1.3 val as BMN has it (4728 videos / 7293 instances), one sample per (video, class)."""
    anno = _json("activitynet13/anet_anno_action.json")
    with open(path("activitynet13/video_info_new.csv"), encoding="utf-8") as f:
        val = [r["video"] for r in csv.DictReader(f) if r["subset"] == "validation"]
    db = {v[2:]: {"annotations": anno[v]["annotations"], "duration": anno[v]["duration_second"]} for v in val}
    return list(_tal_from_database(db, "activitynet13/validation").values())


def anet13_official_sample_submission(samples: list[dict]) -> tuple[list[dict], list[dict]]:
    """The official sample submission (the full 4926-video val GT, all scores 1.0) as prediction records in
    file order, plus negative samples (no ground truth) for the (video, class) pairs it predicts outside
    ``samples``: the official code counts those detections as false positives."""
    known = {s["id"] for s in samples}
    grouped: dict[str, dict] = {}
    negatives: dict[str, dict] = {}
    for vid, dets in _json("activitynet13/sample_detection_prediction.json")["results"].items():
        for d in dets:
            sid = f"{vid}#{d['label']}"
            rec = grouped.setdefault(sid, {"id": sid, "segments": [], "scores": []})
            rec["segments"].append(d["segment"])
            rec["scores"].append(d["score"])
            if sid not in known and sid not in negatives:
                negatives[sid] = {
                    "id": sid,
                    "task": "tal",
                    "video": vid,
                    "duration": 0.0,
                    "segments": [],
                    "action": d["label"],
                    "source": "activitynet13/validation",
                }
    for sid, rec in grouped.items():
        if sid in negatives:
            negatives[sid]["duration"] = max(e for _, e in rec["segments"])
    return list(grouped.values()), list(negatives.values())


def gt_predictions(samples: list[dict], repeat: int = 1) -> list[dict]:
    """Ground truth as prediction (each window ``repeat`` times in a row), equal scores."""
    out = []
    for s in samples:
        segs = [w for w in s["segments"] for _ in range(repeat)]
        rec = {"id": s["id"], "segments": segs}
        if s["task"] == "gvqa":
            rec["answer"] = s["answer"]
        out.append(rec)
    return out
