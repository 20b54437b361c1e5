"""Converters on the real annotation files in ../shared/data: exact counts (SOURCES.md) and spot checks."""

from __future__ import annotations

import collections
import json

import pytest

from data_pipeline.formats import convert_files
from data_pipeline.schema import validate_sample


def _need(path):
    if not path.exists():
        pytest.skip(f"{path} not found")
    return str(path)


def _by_id(samples):
    return {s["id"]: s for s in samples}


def test_charades_sta_txt_csv(shared_data):
    d = shared_data / "charades_sta"
    ctx = convert_files(
        "charades_sta", [_need(d / "charades_sta_test.txt"), _need(d / "Charades_v1_test.csv")]
    )
    s = ctx.samples
    assert len(s) == 3720 and len({x["video"] for x in s}) == 1334
    assert {x["task"] for x in s} == {"tg"} and {x["source"] for x in s} == {"charades_sta:test"}
    # 562 queries end after the csv duration: clipped, none dropped.
    assert dict(ctx.report.counts) == {"clipped_end": 562}
    by = _by_id(s)
    # Line 1: "3MSZA 24.3 30.4##person turn a light on." ; csv length of 3MSZA = 30.96.
    assert by["3MSZA#0"] == {
        "id": "3MSZA#0",
        "task": "tg",
        "video": "3MSZA",
        "duration": 30.96,
        "segments": [[24.3, 30.4]],
        "query": "person turn a light on.",
        "source": "charades_sta:test",
    }
    assert by["3MSZA#3"]["query"] == "person is playing with the switch for the light."
    # Line 20 of the txt ends at 19.9 s in a 18.58 s video: clipped, and the message names file, line, field.
    lines = (d / "charades_sta_test.txt").read_text().splitlines()
    vid = lines[19].split()[0]
    k = [ln.split()[0] for ln in lines[:20]].count(vid) - 1
    assert by[f"{vid}#{k}"]["segments"] == [[float(lines[19].split()[1]), 18.58]]
    assert ctx.report.messages("clipped_end")[0].startswith(
        f"{d / 'charades_sta_test.txt'}:20: segment: end 19.9"
    )
    for x in s:
        validate_sample(x)


def test_charades_sta_three_input_forms_agree(shared_data):
    d = shared_data / "charades_sta"
    csv = _need(d / "Charades_v1_test.csv")
    txt = convert_files("charades_sta", [_need(d / "charades_sta_test.txt"), csv]).samples
    tz = convert_files("charades_sta", [_need(d / "timezero_charades_test.json")]).samples
    coco = convert_files("charades_sta", [_need(d / "vtgllm_tvg_example_gt_file.json"), csv]).samples
    assert txt == tz == coco


@pytest.mark.parametrize(
    "name,videos,sentences,clipped", [("val_1", 4917, 17505, 134), ("val_2", 4885, 17031, 111)]
)
def test_activitynet_captions(shared_data, name, videos, sentences, clipped):
    path = _need(shared_data / "activitynet_captions" / f"{name}.json")
    tg = convert_files("activitynet_captions_tg", [path])
    dtg = convert_files("activitynet_captions_dtg", [path])
    assert len(tg.samples) == sentences and len({x["video"] for x in tg.samples}) == videos
    assert len(dtg.samples) == videos and sum(len(x["queries"]) for x in dtg.samples) == sentences
    assert dict(tg.report.counts) == dict(dtg.report.counts) == {"clipped_end": clipped}
    assert {x["source"] for x in tg.samples} == {f"activitynet_captions:{name}"}
    if name == "val_1":
        raw = json.loads((shared_data / "activitynet_captions" / "val_1.json").read_text())["v_uqiMw7tQ1Cc"]
        by = _by_id(tg.samples)
        assert by["v_uqiMw7tQ1Cc#1"]["query"] == raw["sentences"][1].strip()
        assert by["v_uqiMw7tQ1Cc#1"]["segments"] == [[13.79, 54.32]]
        d = _by_id(dtg.samples)["v_uqiMw7tQ1Cc"]
        assert d["queries"] == [x.strip() for x in raw["sentences"]] and d["segments"] == raw["timestamps"]
        assert d["duration"] == 55.15


def test_youcook2(shared_data):
    ctx = convert_files("youcook2", [_need(shared_data / "youcook2" / "yc2_val.json")])
    assert len(ctx.samples) == 457 and sum(len(x["segments"]) for x in ctx.samples) == 3492
    assert not ctx.report.counts
    first = ctx.samples[0]
    assert first["id"] == "v_xHr8X2Wpmno" and first["task"] == "dtg" and first["source"] == "youcook2:val"
    assert first["queries"][0] == "pick the ends off the verdalago" and first["segments"][0] == [47, 60]


@pytest.mark.parametrize("name,count", [("highlight_val_release", 1550), ("highlight_test_with_gt", 1542)])
def test_qvhighlights(shared_data, name, count):
    path = shared_data / "qvhighlights" / f"{name}.jsonl"
    ctx = convert_files("qvhighlights", [_need(path)])
    assert len(ctx.samples) == count and not ctx.report.counts
    if name == "highlight_val_release":
        first = json.loads(path.read_text().splitlines()[0])
        s = _by_id(ctx.samples)[str(first["qid"])]
        assert s["id"] == "2579" and s["task"] == "vhd" and s["video"] == first["vid"]
        assert s["segments"] == first["relevant_windows"] == [[82, 150]]
        assert s["query"] == first["query"] and s["duration"] == 150
        assert s["saliency_scores"] == first["saliency_scores"]
        assert s["relevant_clip_ids"] == first["relevant_clip_ids"]


def test_nextgqa(shared_data):
    d = shared_data / "nextgqa"
    ctx = convert_files("nextgqa", [_need(d / "val.csv"), _need(d / "gsub_val.json")])
    s = ctx.samples
    assert len(s) == 3358
    # gsub_val lists 570 videos; 3 of them (2830899473, 2940373590, 6272786009) have no question.
    assert len({x["video"] for x in s}) == 567
    assert len(json.loads((d / "gsub_val.json").read_text())) == 570
    assert dict(ctx.report.counts) == {"clipped_end": 3}
    x = _by_id(s)["4882821564_1"]
    assert x["options"] == [
        "share with the girl",
        "approach lady sitting there",
        "unwrap it",
        "playing with toy train",
        "gesture something",
    ]
    assert x["answer"] == "C" and x["qtype"] == "CW" and x["task"] == "gvqa"
    assert x["question"] == "why did the boy pick up one present from the group of them and move to the sofa"
    gsub = json.loads((d / "gsub_val.json").read_text())["4882821564"]
    assert x["segments"] == gsub["location"]["1"] and x["duration"] == gsub["duration"]
    assert collections.Counter(y["answer"] for y in s).keys() <= set("ABCDE")


def test_nextgqa_test_split(shared_data):
    d = shared_data / "nextgqa"
    ctx = convert_files("nextgqa", [_need(d / "test.csv"), _need(d / "gsub_test.json")])
    # 5553 questions; line 3086 lists the answer 'happy' as both options D and E: dropped as ambiguous.
    assert len(ctx.samples) == 5552 and {x["source"] for x in ctx.samples} == {"nextgqa:test"}
    assert dict(ctx.report.counts) == {"ambiguous_answer": 1, "clipped_start": 36}
    assert ctx.report.messages("ambiguous_answer") == [
        f"{d / 'test.csv'}:3086: answer: 'happy' equals options ['D', 'E'] [ambiguous_answer -> drop_sample]"
    ]


def test_thumos14_csv_and_evalkit_agree(shared_data):
    d = shared_data / "thumos14"
    info = _need(d / "test_video_info.csv")
    a = convert_files("thumos14", [_need(d / "test_Annotation.csv"), info])
    b = convert_files("thumos14", [_need(d / "TH14evalkit_groundtruth"), info], split="test")
    assert a.samples == b.samples
    for ctx in (a, b):
        counts = ctx.report.counts
        # 3457 rows = 3358 real instances over 212 videos + 99 Ambiguous ones (excluded).
        assert counts["ambiguous_excluded"] == 99
        # 26 instances start after the end of their video (known THUMOS14 annotation errors): dropped.
        assert counts["segment_after_end"] == 26
    s = a.samples
    assert a.report.records_read == 3457
    assert len({x["video"] for x in s}) == 212
    assert sum(len(x["segments"]) for x in s) == 3358 - 26
    assert len(s) == 247 and {x["task"] for x in s} == {"tal"} and len({x["action"] for x in s}) == 20
    x = _by_id(s)["video_test_0000004#CricketBowling"]
    assert x["segments"][0] == [0.2, 1.1] and x["source"] == "thumos14:test"
    assert x["duration"] == pytest.approx(1012 / 30)
    assert [y["id"] for y in s] == sorted(y["id"] for y in s)


def test_thumos14_activitynet_style_json(shared_data):
    d = shared_data / "thumos14"
    ctx = convert_files(
        "thumos14", [_need(d / "thumos_gt.json"), _need(d / "thumos14_test_groundtruth.csv")], split="test"
    )
    s = ctx.samples
    # thumos_gt.json test: 210 videos / 3311 instances (AFSD left 3 videos out); 4 start past the end.
    assert len({x["video"] for x in s}) == 210
    assert sum(len(x["segments"]) for x in s) == 3311 - ctx.report.counts["segment_after_end"]
    assert ctx.report.counts["segment_after_end"] == 4


def test_activitynet13_bmn(shared_data):
    d = shared_data / "activitynet13"
    ann, info = _need(d / "anet_anno_action.json"), _need(d / "video_info_new.csv")
    val = convert_files("activitynet13", [ann, info], split="val")
    # video_info_new.csv: training 9649 / validation 4728 / testing 4851 = the 19228 videos of the json.
    assert val.report.records_read == 19228
    assert val.report.counts["other_split"] == 9649 + 4851
    assert {x["source"] for x in val.samples} == {"activitynet13:validation"}
    # 4734 (video, class) pairs; 3 zero-length instances dropped, emptying 2 classes of 2 videos.
    assert val.report.counts["empty_segment"] == 3 and val.report.counts["no_segments"] == 2
    assert len(val.samples) == 4734 - 2 and len({x["video"] for x in val.samples}) == 4728 - 2
    allsplits = convert_files("activitynet13", [ann, info])
    assert allsplits.report.counts["no_annotations"] == 4851
    x = _by_id(allsplits.samples)["v_QOlSCBRmfWY#Ballet"]
    assert x["segments"] == [[6.195294851794072, 77.73085420904837]] and x["action"] == "Ballet"
    assert x["duration"] == pytest.approx(82.73) and x["source"] == "activitynet13:training"
