"""TimeRFT and TVGBench (Time-R1's grounding data): real files in ../shared/data/timerft (skipped when absent)
and hand-made messy files."""

from __future__ import annotations

import collections
import json

import pytest

from data_pipeline import prompts
from data_pipeline.extract_frames import video_id
from data_pipeline.formats import convert_files
from data_pipeline.schema import validate_sample

rewards = pytest.importorskip("tempr1_jax.rewards")


def _need(path):
    if not path.exists():
        pytest.skip(f"{path} not found")
    return str(path)


def _num(x: float) -> str:
    text = repr(float(x))  # every digit (the prompts' examples round to 2 decimals)
    return f"{float(x):.12f}" if "e" in text else text


def _perfect_scores(samples):
    """Every sample's ground truth written as the completion its prompt asks for (every digit kept): the rewards'
    minimum over the samples, which should be their maximum (format 1, localization 1, total 2)."""
    comps = [f"<answer>{_num(a)} to {_num(b)}</answer>" for x in samples for a, b in x["segments"]]
    assert prompts.target_completion(samples[0]).startswith("<answer>")  # the layout the prompts ask for
    r = rewards.compute_rewards(comps, samples)
    return tuple(round(float(r[k].min()), 6) for k in ("format", "localization", "total"))


def test_timerft_real(shared_data):
    path = _need(shared_data / "timerft" / "train_2k5.json")
    ctx = convert_files("timerft", [path])
    s = ctx.samples
    assert len(s) == 2500 and ctx.report.records_read == 2500
    assert dict(ctx.report.counts) == {"clipped_end": 48}  # 48 queries end after their video: clipped, kept
    assert len({x["video"] for x in s}) == 2475 and {x["source"] for x in s} == {"timerft:train"}
    assert collections.Counter(x["sub_source"] for x in s) == {
        "cosmo": 801,
        "yt-temporal": 764,
        "internvid-vtime": 571,
        "didemo": 237,
        "howto100m": 94,
        "queryd": 33,
    }
    raw = json.loads((shared_data / "timerft" / "train_2k5.json").read_text())
    by = {x["id"]: x for x in s}
    r = raw[1]  # a clip cut from a longer video: its range is in the file name and in video_start / video_end
    assert by[r["qid"]] == {
        "id": r["qid"],
        "task": "tg",
        "video": video_id(r["video"]),
        "duration": r["duration"],
        "segments": [r["timestamp"]],
        "query": r["sentence"],
        "source": "timerft:train",
        "sub_source": r["qid"].split("|")[1],
        "video_start": r["video_start"],
        "video_end": r["video_end"],
        "difficulty": r["difficulty"],
    }
    assert by[r["qid"]]["video"] == "4jujhM5qhEc_00:00:39:000_00:01:24:700"
    assert all(x["video"] == video_id(y["video"]) for x, y in zip(s, raw, strict=True))
    assert sum("video_start" in x for x in s) == sum(y["video_start"] is not None for y in raw) == 665
    # The worst released end: [120, 14220] in a 157.8 s video; the rewards get it clipped, the metrics as released.
    worst = next(x for x in s if x.get("released_segments") == [[120.0, 14220.0]])
    assert worst["segments"] == [[120.0, worst["duration"]]]
    for x in s:
        validate_sample(x)
    assert _perfect_scores(s) == (1.0, 1.0, 2.0)


def test_tvgbench_real(shared_data):
    path = _need(shared_data / "timerft" / "tvgbench.json")
    ctx = convert_files("tvgbench", [path])
    s = ctx.samples
    # 800 queries; 11 EgoNLQ answers have zero length ("85.83-85.83"): dropped by the segment rules (Time-R1's
    # evaluator scores them, always IoU 0); 27 ends after the video: clipped, released bounds kept.
    assert ctx.report.records_read == 800 and len(s) == 789
    assert dict(ctx.report.counts) == {"clipped_end": 27, "empty_segment": 11}
    assert sum("released_segments" in x for x in s) == 27
    assert {x["source"] for x in s} == {"tvgbench:test"} and len({x["video"] for x in s}) == 455
    assert collections.Counter(x["sub_source"] for x in s) == {
        "tacos": 168,
        "anet": 168,
        "hirest": 158,
        "egonlq": 157,
        "charades": 138,
    }
    raw = json.loads((shared_data / "timerft" / "tvgbench.json").read_text())
    by = {x["id"]: x for x in s}
    assert by["KWZSA#0"] == {
        "id": "KWZSA#0",
        "task": "tg",
        "video": "KWZSA",
        "duration": 30.12,
        "segments": [[13.4, 28.1]],
        "query": "a person was sitting at a table.",
        "source": "tvgbench:test",
        "sub_source": "charades",
        "qsemtype": "Human Pose",
    }
    assert raw[0]["path"].endswith("/KWZSA.mp4") and raw[0]["answer"] == "13.4-28.1"
    hirest = next(i for i, r in enumerate(raw) if r["start"] is not None)  # a clip: its range is kept
    vid = video_id(raw[hirest]["path"])
    k = [video_id(r["path"]) for r in raw[:hirest]].count(vid)
    x = by[f"{vid}#{k}"]
    assert (x["video_start"], x["video_end"]) == (raw[hirest]["start"], raw[hirest]["end"])
    a, b = raw[hirest]["answer"].split("-")
    assert x["segments"] == [[float(a), float(b)]] and x["sub_source"] == "hirest"
    for x in s:
        validate_sample(x)
    assert _perfect_scores(s) == (1.0, 1.0, 2.0)


def test_timerft_messy(tmp_path):
    good = {
        "video": "./v/abc.mp4",
        "duration": 30,
        "timestamp": [1, 5],
        "sentence": "a man runs",
        "qid": "my|cosmo|abc|a man runs",
        "video_start": None,
        "video_end": None,
        "difficulty": 10.0,
    }
    rows = [
        good,
        dict(good, qid="no-source"),  # qid not my|<source>|...: dropped (no sub-source, no id)
        dict(good, qid="my|cosmo|abc|late", timestamp=[10, 40]),  # clipped to 30, released kept
        dict(good, qid="my|cosmo|abc|rev", timestamp=[9, 4]),  # reversed: dropped
        dict(good, qid="my|cosmo|abc|nodur", duration="?"),  # no duration: dropped
        dict(good, qid="my|cosmo|abc|nosent", sentence=" "),  # empty sentence: dropped
        dict(good, qid="my|cosmo|abc|novideo", video=""),  # no video: dropped
        good,  # the same qid again: duplicate, dropped
        "not an object",
    ]
    path = tmp_path / "train_x.json"
    path.write_text(json.dumps(rows))
    ctx = convert_files("timerft", [str(path)])
    assert [x["id"] for x in ctx.samples] == ["my|cosmo|abc|a man runs", "my|cosmo|abc|late"]
    late = ctx.samples[1]
    assert late["segments"] == [[10.0, 30.0]] and late["released_segments"] == [[10.0, 40.0]]
    assert "released_segments" not in ctx.samples[0] and "video_start" not in ctx.samples[0]
    assert dict(ctx.report.counts) == {
        "missing_field": 4,
        "clipped_end": 1,
        "reversed_segment": 1,
        "missing_duration": 1,
        "duplicate_id": 1,
    }
    assert ctx.report.messages("missing_field")[0].startswith(f"{path}:$.[1]: qid: 'no-source' is not 'my|")
    assert {x["source"] for x in ctx.samples} == {"timerft:train"}


def test_tvgbench_messy_and_required_fields(tmp_path):
    rows = [
        {
            "path": "./v/AAA.mp4",
            "question": "q one",
            "answer": "1.0-5.5",
            "duration": 20,
            "start": None,
            "end": None,
            "dataset_name": "charades",
        },
        {"path": "./v/AAA.mp4", "question": "q two", "answer": "5 to 9", "duration": 20},  # not "s-e": dropped
        {"path": "./v/AAA.mp4", "question": "q three", "answer": "2-30", "duration": 20, "bins": {"dataset": "x"}},
        {
            "path": "./v/BBB.avi",
            "question": "q four",
            "answer": " 3.5 - 4 ",
            "duration": 9,
            "start": 100.0,
            "end": 109.0,
        },
    ]
    path = tmp_path / "tvgbench.json"
    path.write_text(json.dumps(rows))
    ctx = convert_files("tvgbench", [str(path)])
    assert [x["id"] for x in ctx.samples] == ["AAA#0", "AAA#2", "BBB#0"]  # k counts every query of the video
    a0, a2, b0 = ctx.samples
    assert a0["sub_source"] == "charades" and a2["sub_source"] == "x" and "sub_source" not in b0
    assert a2["released_segments"] == [[2.0, 30.0]] and a2["segments"] == [[2.0, 20.0]]
    assert b0["segments"] == [[3.5, 4.0]] and (b0["video_start"], b0["video_end"]) == (100.0, 109.0)
    assert dict(ctx.report.counts) == {"bad_segment": 1, "clipped_end": 1}
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps([{"path": "x.mp4", "question": "q", "duration": 3}]))
    from data_pipeline.schema import InputError

    with pytest.raises(InputError, match=r"missing required field\(s\) answer in \$\[\*\]"):
        convert_files("tvgbench", [str(bad)])
    bad.write_text(json.dumps({"path": "x.mp4"}))
    with pytest.raises(InputError, match="expected a JSON list"):
        convert_files("timerft", [str(bad)])
