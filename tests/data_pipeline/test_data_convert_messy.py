"""Messy-input rules of the converters (synthetic files) and the convert command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from data_pipeline import convert
from data_pipeline.formats import FORMATS, convert_files
from data_pipeline.schema import RULES, InputError, read_samples, validate_sample


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_every_spec_format_name_is_registered():
    spec = [
        "charades_sta",
        "activitynet_captions_tg",
        "activitynet_captions_dtg",
        "qvhighlights",
        "nextgqa",
        "activitynet13",
        "hacs",
        "thumos14",
        "youcook2",
        "timerft",
        "tvgbench",
        "tempcompass",
    ]
    assert set(spec) <= set(FORMATS)


def test_charades_messy_lines(tmp_path):
    csv = _write(tmp_path / "Charades_v1_train.csv", "id,length\nAAA,30\nBBB,\nCCC,20\n")
    txt = _write(
        tmp_path / "charades_sta_train.txt",
        "\n".join(
            [
                "AAA 1.0 5.0##a person opens a door.",  # 1 ok -> AAA#0
                "AAA 6.0 4.0##reversed.",  # 2 start > end -> dropped
                "AAA 10 40##ends late.",  # 3 clipped to 30
                "BBB 1 2##no duration in csv.",  # 4 blank length (csv line 3) -> missing duration
                "ZZZ 1 2##not in csv.",  # 5 unknown video
                "garbage line",  # 6 bad line
                "AAA 31 35##starts after the end.",  # 7 dropped
                "CCC 3 3##zero length.",  # 8 dropped
                "AAA 2 3##",  # 9 empty sentence -> dropped
                "AAA -1 3##starts before zero.",  # 10 clipped start -> AAA#5
            ]
        )
        + "\n",
    )
    ctx = convert_files("charades_sta", [txt, csv])
    ids = [s["id"] for s in ctx.samples]
    assert ids == ["AAA#0", "AAA#2", "AAA#5"]  # k counts every line of the video, so ids stay stable
    assert ctx.samples[1]["segments"] == [[10.0, 30.0]] and ctx.samples[2]["segments"] == [[0.0, 3.0]]
    c = ctx.report.counts
    assert c == {
        "missing_duration": 2,
        "reversed_segment": 1,
        "clipped_end": 1,
        "unknown_video": 1,
        "bad_line": 1,
        "segment_after_end": 1,
        "empty_segment": 1,
        "missing_field": 1,
        "clipped_start": 1,
    }
    msgs = ctx.report.messages()
    assert f"{csv}:3: length: duration '' is not a positive number [missing_duration -> drop_sample]" in msgs
    assert f"{txt}:2: segment: start 6 > end 4 [reversed_segment -> drop_segment]" in msgs
    assert f"{txt}:6: line: 'garbage line' is not 'vid start end##sentence' [bad_line -> drop_sample]" in msgs
    assert any(m.startswith(f"{txt}:5: video: 'ZZZ' is not in the Charades csv") for m in msgs)
    # Before: "'BBB' is not in the Charades csv (no duration)", though the csv lists it, with a blank length.
    assert (
        f"{txt}:4: video: 'BBB' has a blank or invalid length at {csv}:3 [missing_duration -> drop_sample]" in msgs
    )
    assert any(m.startswith(f"{txt}:9: sentence:") for m in msgs)


def test_captions_length_mismatch_and_dtg_pairing(tmp_path):
    doc = {
        "v_a": {
            "duration": 10,
            "timestamps": [[0, 2], [5, 3], [4, 12]],
            "sentences": ["one", "two", "three"],
        },
        "v_b": {"duration": 10, "timestamps": [[0, 2]], "sentences": ["x", "y"]},
        "v_c": {"timestamps": [[0, 2]], "sentences": ["x"]},
        "v_d": {"duration": 8, "timestamps": [[9, 10]], "sentences": ["late"]},
        "v_e": ["not", "an", "object"],
    }
    path = _write(tmp_path / "train.json", json.dumps(doc))
    dtg = convert_files("activitynet_captions_dtg", [path])
    assert [s["id"] for s in dtg.samples] == ["v_a"]
    a = dtg.samples[0]
    assert a["queries"] == ["one", "three"] and a["segments"] == [[0, 2], [4, 10]]
    c = dtg.report.counts
    assert c == {
        "reversed_segment": 1,
        "clipped_end": 1,
        "length_mismatch": 1,
        "missing_duration": 1,
        "segment_after_end": 1,
        "no_segments": 1,
        "missing_field": 1,
    }
    assert (
        f"{path}:$.v_a: timestamps[1]: start 5 > end 3 [reversed_segment -> drop_segment]"
        in dtg.report.messages()
    )
    tg = convert_files("activitynet_captions_tg", [path])
    assert [s["id"] for s in tg.samples] == ["v_a#0", "v_a#2"]
    assert {s["source"] for s in tg.samples} == {"activitynet_captions:train"}


def test_qvhighlights_bad_json_and_duplicates(tmp_path):
    good = {
        "qid": 7,
        "query": "a dog runs",
        "duration": 150,
        "vid": "abc_0.0_150.0",
        "relevant_windows": [[0, 10], [20, 30]],
        "relevant_clip_ids": [0, 1],
        "saliency_scores": [[1, 2, 3]] * 2,
    }
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps([1, 2]),
        json.dumps(good),
        json.dumps({**good, "qid": 8, "relevant_windows": [[160, 170]]}),
        json.dumps({k: v for k, v in good.items() if k != "relevant_windows"} | {"qid": 9}),
        "",
        json.dumps({**good, "qid": 10, "query": "  "}),
    ]
    path = _write(tmp_path / "highlight_val_release.jsonl", "\n".join(lines) + "\n")
    ctx = convert_files("qvhighlights", [path])
    assert [s["id"] for s in ctx.samples] == ["7"]
    assert ctx.samples[0]["relevant_clip_ids"] == [0, 1]
    msgs = ctx.report.messages()
    assert any(m.startswith(f"{path}:2: line: not valid JSON") for m in msgs)
    assert f"{path}:3: line: a JSON list, not an object [bad_json -> drop_sample]" in msgs
    assert f"{path}:4: id: '7' already written from {path}:1 [duplicate_id -> drop_sample]" in msgs
    assert ctx.report.counts["segment_after_end"] == 1 and ctx.report.counts["no_segments"] == 1
    assert f"{path}:6: relevant_windows: absent (no ground truth) [missing_field -> drop_sample]" in msgs
    assert any(m.startswith(f"{path}:8: query:") for m in msgs)


def test_nextgqa_unknown_video_and_answers(tmp_path):
    csv = _write(
        tmp_path / "val.csv",
        "video_id,qid,question,answer,type,a0,a1,a2,a3,a4\n"
        "1,0,what?,b,CW,a,b,c,d,e\n"
        "2,0,what?,b,CW,a,b,c,d,e\n"  # unknown video
        "1,1,what?,z,CW,a,b,c,d,e\n"  # answer not in options
        "1,2,what?,a,CW,a,a,c,d,e\n"  # ambiguous
        "1,5,what?,a,CW,a,b,c,d,e\n",
    )  # no grounding for qid 5
    gsub = _write(
        tmp_path / "gsub_val.json",
        json.dumps(
            {
                "1": {
                    "duration": 20,
                    "location": {"0": [[1, 2], [3, 25]], "1": [[1, 2]], "2": [[1, 2]], "9": [[0, 1]]},
                    "fps": 30,
                }
            }
        ),
    )
    ctx = convert_files("nextgqa", [csv, gsub])
    assert len(ctx.samples) == 1
    s = ctx.samples[0]
    assert s["id"] == "1_0" and s["answer"] == "B" and s["options"] == ["a", "b", "c", "d", "e"]
    assert s["segments"] == [[1, 2], [3, 20]]
    c = ctx.report.counts
    assert c == {
        "unknown_video": 1,
        "answer_not_in_options": 1,
        "ambiguous_answer": 1,
        "missing_field": 1,
        "clipped_end": 1,
        "unused_grounding": 1,
    }
    assert (
        f"{csv}:3: video_id: '2' is not in the gsub grounding json [unknown_video -> drop_sample]"
        in ctx.report.messages()
    )


def test_hacs_database_format_with_split(tmp_path):
    db = {
        "database": {
            "vid1": {
                "subset": "training",
                "duration": 60.0,
                "annotations": [
                    {"label": "Surfing", "segment": [30, 40]},
                    {"label": "Surfing", "segment": [1, 5]},
                    {"label": "Rafting", "segment": [10, 20]},
                ],
            },
            "vid2": {
                "subset": "validation",
                "duration": 30.0,
                "annotations": [{"label": "Surfing", "segment": [1, 2]}],
            },
            "vid3": {"subset": "testing", "duration": 30.0, "annotations": []},
        }
    }
    path = _write(tmp_path / "HACS_segments_v1.1.1.json", json.dumps(db))
    ctx = convert_files("hacs", [path], split="train")
    assert [s["id"] for s in ctx.samples] == ["vid1#Surfing", "vid1#Rafting"]
    assert ctx.samples[0]["segments"] == [[1, 5], [30, 40]]  # sorted by (start, end)
    assert ctx.samples[0]["source"] == "hacs:training"
    assert ctx.report.counts == {"other_split": 2}
    everything = convert_files("hacs", [path], video_prefix="v_")
    assert [s["id"] for s in everything.samples] == ["v_vid1#Surfing", "v_vid1#Rafting", "v_vid2#Surfing"]
    assert everything.report.counts == {"no_annotations": 1}


def test_fail_rules(tmp_path):
    bad = _write(
        tmp_path / "val_1.json", '{"v_a": {"duration": 10,\n "timestamps": [[0, 1]] "sentences": []}}'
    )
    with pytest.raises(InputError, match=r"val_1.json:2:25: not valid JSON"):
        convert_files("activitynet_captions_tg", [bad])
    txt = _write(tmp_path / "charades_sta_test.txt", "AAA 1 2##x\n")
    with pytest.raises(InputError, match="needs the Charades csv"):
        convert_files("charades_sta", [txt])
    with pytest.raises(InputError, match="input file not found"):
        convert_files("qvhighlights", [str(tmp_path / "missing.jsonl")])
    with pytest.raises(InputError, match="needs a durations csv"):
        convert_files("thumos14", [_write(tmp_path / "a.csv", "video,type,start,end\nv,X,1,2\n")])


def test_cli_writes_samples_and_summary(tmp_path, capsys):
    doc = {"v_a": {"duration": 10, "timestamps": [[0, 2], [5, 3]], "sentences": ["one", "two"]}}
    inp = _write(tmp_path / "val_2.json", json.dumps(doc))
    out = tmp_path / "out" / "anet.jsonl"
    rc = convert.main(["--format", "activitynet_captions_tg", "--input", inp, "--output", str(out)])
    assert rc == 0
    samples = read_samples(str(out))
    assert [s["id"] for s in samples] == ["v_a#0"]
    summary = json.loads((tmp_path / "out" / "anet.summary.json").read_text())
    assert summary["samples_written"] == 1 and summary["samples_per_task"] == {"tg": 1}
    assert summary["issues"]["reversed_segment"]["count"] == 1
    assert summary["issues"]["reversed_segment"]["action"] == RULES["reversed_segment"][0]
    assert summary["messages"] == [
        f"{inp}:$.v_a: timestamps[1]: start 5 > end 3 [reversed_segment -> drop_segment]"
    ]
    err = capsys.readouterr().err
    assert "reversed_segment: 1" in err and "1 samples (tg 1)" in err
    # --strict refuses to drop anything: exit 1, no samples file.
    out2 = tmp_path / "strict.jsonl"
    assert (
        convert.main(
            ["--format", "activitynet_captions_tg", "--input", inp, "--output", str(out2), "--strict"]
        )
        == 1
    )
    assert not out2.exists() and (tmp_path / "strict.summary.json").exists()
    assert "--strict: 0 sample(s) and 1 segment(s) would be dropped" in capsys.readouterr().err


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    bad = _write(tmp_path / "x.jsonl", "{}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_pipeline.convert",
            "--format",
            "activitynet13",
            "--input",
            bad,
            "--output",
            str(tmp_path / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"convert: error: {bad}: activitynet13 expects a .json annotation file (plus an optional .csv)"
    ]
    empty = _write(
        tmp_path / "highlight_test_release.jsonl",
        json.dumps({"qid": 1, "query": "q", "vid": "v", "duration": 10}) + "\n",
    )
    rc = convert.main(["--format", "qvhighlights", "--input", empty, "--output", str(tmp_path / "e.jsonl")])
    assert rc == 2


def test_read_samples_names_file_line_field(tmp_path):
    ok = {
        "id": "a",
        "task": "tg",
        "video": "v",
        "duration": 10.0,
        "segments": [[1, 2]],
        "query": "q",
        "source": "x:y",
    }
    validate_sample(ok)
    path = _write(
        tmp_path / "s.jsonl", json.dumps(ok) + "\n" + json.dumps({**ok, "id": "b", "segments": [[3, 2]]})
    )
    with pytest.raises(ValueError, match=r"s.jsonl:2: field 'segments\[0\]'"):
        read_samples(path)
    path = _write(tmp_path / "t.jsonl", json.dumps(ok) + "\n" + json.dumps(ok))
    with pytest.raises(ValueError, match=r"t.jsonl:2: field 'id': 'a' already used at .*t.jsonl:1"):
        read_samples(path)
    for bad, field in [
        ({**ok, "task": "xx"}, "task"),
        ({**ok, "duration": -1}, "duration"),
        (
            {
                "id": "g",
                "task": "gvqa",
                "video": "v",
                "duration": 5.0,
                "segments": [[0, 1]],
                "question": "q",
                "options": ["a", "b"],
                "answer": "C",
                "source": "s",
            },
            "answer",
        ),
        (
            {
                "id": "d",
                "task": "dtg",
                "video": "v",
                "duration": 5.0,
                "segments": [[0, 1]],
                "queries": ["a", "b"],
                "source": "s",
            },
            "queries",
        ),
    ]:
        with pytest.raises(ValueError, match=f"field '{field}'"):
            validate_sample(bad)
