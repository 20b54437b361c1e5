"""Real ground truth (../shared/data): each sample's own segments, written back as a completion, score the maximum.

The small readers here take only what the rewards need from the public files; the full converters with their
messy-input rules live in data_pipeline.
"""

import csv
import json
from collections import defaultdict

import numpy as np
import pytest

from tempr1_jax import rewards as R

BEST = {"tg": 2.0, "dtg": 2.0, "vhd": 2.0, "gvqa": 3.0, "tal": 3.0}


def t(x: float) -> str:
    return np.format_float_positional(float(x), trim="-")


def completion(sample: dict) -> str:
    payload = ", ".join(f"{t(s)} to {t(e)}" for s, e in sample["segments"])
    if sample["task"] == "gvqa":
        return f"<think>copying the ground truth</think><answer>({sample['answer']})</answer>" \
               f"<evidence>{payload}</evidence>"
    return f"<answer>{payload}</answer>"


def assert_all_maximal(samples: list[dict]) -> None:
    out = R.compute_rewards([completion(s) for s in samples], samples)
    best = np.array([BEST[s["task"]] for s in samples], np.float32)
    bad = np.flatnonzero(np.abs(out["total"] - best) > 1e-5)
    assert bad.size == 0, [(samples[i], {k: float(v[i]) for k, v in out.items()}) for i in bad[:3]]
    assert np.all(out["format"] == 1)


def test_charades_sta(shared_data):
    d = shared_data / "charades_sta"
    duration = {r["id"]: float(r["length"]) for r in csv.DictReader(open(d / "Charades_v1_test.csv"))}
    samples = []
    for line in open(d / "charades_sta_test.txt"):
        head, _query = line.rstrip("\n").split("##", 1)
        vid, start, end = head.split()
        samples.append({"task": "tg", "duration": duration[vid], "segments": [[float(start), float(end)]]})
    assert len(samples) == 3720
    assert sum(s["segments"][0][1] > s["duration"] for s in samples) > 0  # ends past the video get clipped
    assert_all_maximal(samples)


def test_activitynet_captions_dtg(shared_data):
    data = json.load(open(shared_data / "activitynet_captions" / "val_1.json"))
    samples = [{"task": "dtg", "duration": v["duration"],
                "segments": [[max(0.0, s), max(0.0, e)] for s, e in v["timestamps"]]} for v in data.values()]
    # a handful of ActivityNet Captions timestamps are reversed or zero-length: no prediction can score 2 there
    ok = [s for s in samples if all(e > a and a < s["duration"] for a, e in s["segments"])]
    assert len(samples) == 4917 and len(ok) > 4800
    assert_all_maximal(ok)


def test_qvhighlights(shared_data):
    samples = []
    for line in open(shared_data / "qvhighlights" / "highlight_val_release.jsonl"):
        o = json.loads(line)
        samples.append({"task": "vhd", "duration": o["duration"], "segments": o["relevant_windows"]})
    assert len(samples) == 1550
    assert_all_maximal(samples)


def test_nextgqa(shared_data):
    d = shared_data / "nextgqa"
    ground = json.load(open(d / "gsub_val.json"))
    samples = []
    for row in csv.DictReader(open(d / "val.csv")):
        options = [row[f"a{i}"] for i in range(5)]
        video = ground[row["video_id"]]
        samples.append({"task": "gvqa", "duration": float(video["duration"]),
                        "segments": video["location"][row["qid"]], "options": options,
                        "answer": "ABCDE"[options.index(row["answer"])]})
    assert len(samples) == 3358
    assert_all_maximal(samples)


def test_thumos14_tal(shared_data):
    d = shared_data / "thumos14"
    info = {r["video"]: float(r["count"]) / float(r["fps"]) for r in csv.DictReader(open(d / "test_video_info.csv"))}
    instances = defaultdict(list)
    for r in csv.DictReader(open(d / "test_Annotation.csv")):
        if r["type"] != "Ambiguous":
            instances[(r["video"], r["type"])].append([float(r["start"]), float(r["end"])])
    samples = [{"task": "tal", "duration": info[v], "segments": segs} for (v, _), segs in sorted(instances.items())]
    assert sum(len(s["segments"]) for s in samples) == 3358
    # 26 instances of 3 videos start after the video ends (a known THUMOS14 annotation error, notably
    # video_test_0000270): clipped to zero length they can never be matched, so leave them out here
    late = [[s, e] for x in samples for s, e in x["segments"] if s >= x["duration"]]
    assert len(late) == 26
    samples = [{**x, "segments": [[s, e] for s, e in x["segments"] if s < x["duration"]]} for x in samples]
    # the DP must match every instance with itself even where instances of one class overlap
    assert_all_maximal(samples)
    # and dropping one instance from each prediction costs exactly what the formula says
    some = [s for s in samples if len(s["segments"]) >= 2][:50]
    texts = [completion({**s, "segments": s["segments"][1:]}) for s in some]
    loc = R.compute_rewards(texts, some)["localization"]
    n = np.array([len(s["segments"]) for s in some], np.float64)
    want = np.exp(-1 / np.minimum(n, 3)) + 2 * (n - 1) / (2 * n - 1)
    np.testing.assert_allclose(loc, want, atol=1e-5)


def test_tal_duplicates_with_zero_ground_truth_class():
    # a class absent from the video: predicting nothing is the maximum
    out = R.compute_rewards(["<answer></answer>"], [{"task": "tal", "duration": 10, "segments": []}])
    assert out["total"][0] == pytest.approx(3.0)
