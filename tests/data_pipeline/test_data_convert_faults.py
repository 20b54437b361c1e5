"""Structure checks of every converter (a missing required column / field is named in one line), messages
that name the real file, line and values, and inputs that give nothing."""

from __future__ import annotations

import csv
import io
import json

import pytest

from data_pipeline import convert
from data_pipeline.formats import convert_files
from data_pipeline.schema import InputError

NEXTGQA_HEADER = "video_id,qid,question,answer,type,a0,a1,a2,a3,a4"
NEXTGQA_REQ = (
    "required: video_id, qid, question, answer, a0, a1, a2, a3, a4; "
    "optional: type, further options a5..a7 without a gap"
)
GSUB = {"1": {"duration": 20, "location": {"0": [[1, 2]]}, "fps": 30}}


def _write(path, text):
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return str(path)


def _fails(fmt, paths, **kw) -> str:
    with pytest.raises(InputError) as e:
        convert_files(fmt, [str(p) for p in paths], **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _drop_column(text: str, column: str) -> str:
    rows = list(csv.DictReader(io.StringIO(text)))
    out = io.StringIO()
    w = csv.DictWriter(out, [c for c in rows[0] if c != column], lineterminator="\n")
    w.writeheader()
    for r in rows:
        r.pop(column)
        w.writerow(r)
    return out.getvalue()


def test_nextgqa_without_option_a4_names_the_column(tmp_path):
    """Before: 4-option samples, and rows whose answer was a4 dropped as 'answer_not_in_options'."""
    rows = f"{NEXTGQA_HEADER}\n1,0,what?,e,CW,a,b,c,d,e\n1,1,why?,b,CW,a,b,c,d,e\n"
    path = _write(tmp_path / "val.csv", _drop_column(rows, "a4"))
    gsub = _write(tmp_path / "gsub_val.json", GSUB)
    assert _fails("nextgqa", [path, gsub]) == f"{path}: missing required column(s) a4 ({NEXTGQA_REQ})"


def test_nextgqa_real_val_without_a4(shared_data, tmp_path):
    d = shared_data / "nextgqa"
    path = _write(tmp_path / "val.csv", _drop_column((d / "val.csv").read_text(), "a4"))
    assert _fails("nextgqa", [path, d / "gsub_val.json"]) == f"{path}: missing required column(s) a4 ({NEXTGQA_REQ})"


def test_nextgqa_option_columns_and_gsub(tmp_path):
    gsub = _write(tmp_path / "gsub_val.json", GSUB)
    gap = _write(tmp_path / "gap.csv", f"{NEXTGQA_HEADER},a6\n1,0,what?,a,CW,a,b,c,d,e,g\n")
    assert _fails("nextgqa", [gap, gsub]) == (
        f"{gap}: missing required column(s) a5 ({NEXTGQA_REQ.replace('a4;', 'a4, a5;')})"
    )
    many = _write(tmp_path / "many.csv", f"{NEXTGQA_HEADER},a5,a6,a7,a8\n")
    assert _fails("nextgqa", [many, gsub]) == f"{many}: column a8: at most 8 options (a0..a7)"
    six = _write(tmp_path / "six.csv", f"{NEXTGQA_HEADER},a5\n1,0,what?,f,CW,a,b,c,d,e,f\n")
    ctx = convert_files("nextgqa", [six, gsub])
    assert ctx.samples[0]["options"] == ["a", "b", "c", "d", "e", "f"] and ctx.samples[0]["answer"] == "F"
    ok = _write(tmp_path / "ok.csv", f"{NEXTGQA_HEADER}\n1,0,what?,a,CW,a,b,c,d,e\n")
    bad_gsub = _write(tmp_path / "gsub_bad.json", {"1": {"duration": 20, "fps": 30}})
    assert _fails("nextgqa", [ok, bad_gsub]) == (
        f"{bad_gsub}: missing required field(s) location in $.<video_id> (required: duration, location; optional: none)"
    )


def test_charades_structure(tmp_path):
    txt = _write(tmp_path / "charades_sta_test.txt", "AAA 1 2##x\n")
    no_len = _write(tmp_path / "Charades_v1_test.csv", "id,subject,duration\nAAA,x,30\n")
    assert _fails("charades_sta", [txt, no_len]) == (
        f"{no_len}: missing required column(s) length (required: id, length; optional: none)"
    )
    ok_csv = _write(tmp_path / "ok.csv", "id,length\nAAA,30\n")
    coco = _write(tmp_path / "gt.json", {"annotations": [{"image_id": "AAA.mp4", "timestamp": [1, 2]}]})
    assert _fails("charades_sta", [coco, ok_csv]) == (
        f"{coco}: missing required field(s) caption in $.annotations[*] "
        "(required: image_id, caption, timestamp; optional: none)"
    )
    tz = _write(tmp_path / "charades_test.json", {"AAA": {"duration": 30, "sentences": ["x"]}})
    assert _fails("charades_sta", [tz]) == (
        f"{tz}: missing required field(s) timestamps in $.<video> "
        "(required: duration, timestamps, sentences; optional: none)"
    )


@pytest.mark.parametrize("fmt", ["activitynet_captions_tg", "activitynet_captions_dtg", "youcook2"])
def test_captions_structure(tmp_path, fmt):
    path = _write(tmp_path / "val_1.json", {"v_a": {"duration": 10, "timestamps": [[0, 1]]}, "v_b": {}})
    assert _fails(fmt, [path]) == (
        f"{path}: missing required field(s) sentences in $.<video> "
        "(required: duration, timestamps, sentences; optional: none)"
    )


def test_qvhighlights_without_ground_truth(tmp_path):
    """Before: every line dropped one by one ('absent (no ground truth)'), then 'no sample converted'."""
    line = {"qid": 1, "query": "q", "vid": "v", "duration": 10}
    path = _write(tmp_path / "highlight_test_release.jsonl", json.dumps(line) + "\n" + json.dumps(line) + "\n")
    assert _fails("qvhighlights", [path]) == (
        f"{path}: missing required field(s) relevant_windows (required: qid, query, vid, duration, "
        "relevant_windows; optional: relevant_clip_ids, saliency_scores)"
    )


def test_detection_structure(tmp_path):
    db = _write(tmp_path / "hacs.json", {"database": {"v": {"subset": "training", "annotations": []}}})
    assert _fails("hacs", [db]) == (
        f"{db}: missing required field(s) duration in $.database.<video> "
        "(required: duration, annotations; optional: subset)"
    )
    anns = [{"segment": [0, 1]}]
    db2 = _write(tmp_path / "anet.json", {"database": {"v": {"duration": 5, "annotations": anns}}})
    assert _fails("activitynet13", [db2]) == (
        f"{db2}: missing required field(s) label in $.database.<video>.annotations[*] "
        "(required: segment, label; optional: none)"
    )
    bsn = _write(tmp_path / "anet_anno_action.json", {"v": {"annotations": []}})
    assert _fails("activitynet13", [bsn]) == (
        f"{bsn}: missing required field(s) duration_second or duration in $.<video> "
        "(required: duration_second or duration, annotations; optional: none)"
    )
    info = _write(tmp_path / "video_info_new.csv", "video,numFrame\nv,10\n")
    ok = _write(tmp_path / "ok.json", {"v": {"duration_second": 5, "annotations": []}})
    assert _fails("activitynet13", [ok, info]) == (
        f"{info}: missing required column(s) subset (required: video, subset; optional: none)"
    )


def test_thumos14_structure(tmp_path):
    info = _write(tmp_path / "test_video_info.csv", "video,fps,count\nvideo_test_1,30,300\n")
    inst = _write(tmp_path / "test_Annotation.csv", "video,type,start\nvideo_test_1,X,1\n")
    assert _fails("thumos14", [inst, info]) == (
        f"{inst}: missing required column(s) end (required: video, type, start, end; optional: none)"
    )
    no_count = _write(tmp_path / "info2.csv", "video,fps\nvideo_test_1,30\n")
    assert _fails("thumos14", [no_count]) == (
        f"{no_count}: missing required column(s) count (required: video, fps, count; optional: none)"
    )
    other = _write(tmp_path / "x.csv", "a,b\n1,2\n")
    assert _fails("thumos14", [other, info]).startswith(f"{other}: not a THUMOS14 csv: header ['a', 'b'] has none")
    js = _write(tmp_path / "thumos_gt.json", {"database": {"video_test_1": {"subset": "test"}}})
    assert _fails("thumos14", [js, info]) == (
        f"{js}: missing required field(s) annotations in $.database.<video> (required: annotations; optional: subset)"
    )


def test_thumos14_json_without_subset_or_annotations(tmp_path):
    """Before: a video without 'subset' got the split 'None' (source 'thumos14:None', dropped by --split test);
    one with an empty or absent annotation list vanished without a message."""
    info = _write(tmp_path / "test_video_info.csv", "video,fps,count\nvideo_test_1,30,300\nvideo_test_2,30,300\n")
    doc = {
        "database": {
            "video_test_1": {"annotations": [{"label": "X", "segment": ["1", "2"]}]},
            "video_test_2": {"subset": "test", "annotations": []},
            "video_test_3": ["not", "an", "object"],
        }
    }
    js = _write(tmp_path / "thumos_gt.json", doc)
    ctx = convert_files("thumos14", [js, info], split="test")
    assert [(s["id"], s["source"]) for s in ctx.samples] == [("video_test_1#X", "thumos14:test")]
    assert ctx.report.messages() == [
        f"{js}:$.database.video_test_2: annotations: video has no annotated instance [no_annotations -> skip]",
        f"{js}:$.database.video_test_3: annotations: absent or not a list [missing_field -> drop_sample]",
    ]


@pytest.mark.parametrize(
    "fmt,name,make",
    [
        ("activitynet_captions_tg", "val_1.json", lambda: b'{"v": {"duration": 1,\n "sentences": ["caf\xe9"]}}'),
        ("qvhighlights", "highlight_val_release.jsonl", lambda: b'{"qid": 1}\n{"query": "caf\xe9"}\n'),
    ],
)
def test_non_utf8_input_names_file_line_and_byte(tmp_path, fmt, name, make):
    """Before: a UnicodeDecodeError traceback out of convert (only csv / txt inputs were caught)."""
    path = tmp_path / name
    data = make()
    path.write_bytes(data)
    at = data.index(b"\xe9")
    line = data[:at].count(b"\n") + 1
    assert _fails(fmt, [path]) == (
        f"{path}:{line}: not UTF-8 text (invalid continuation byte: b'\\xe9' at byte {at} of the file)"
    )


def test_qvhighlights_bad_json_column_is_the_files(tmp_path):
    good = {"qid": 1, "query": "q", "vid": "v", "duration": 10, "relevant_windows": [[0, 2]]}
    path = _write(tmp_path / "highlight_val_release.jsonl", json.dumps(good) + '\n  {"qid": 2,, "x": 1}\n')
    ctx = convert_files("qvhighlights", [path])
    assert ctx.report.messages("bad_json") == [
        f"{path}:2: line: not valid JSON (Expecting property name enclosed in double quotes at column 13) "
        "[bad_json -> drop_sample]"
    ]


def test_convert_refuses_nothing_and_warns_about_an_input_that_gives_nothing(tmp_path, capsys):
    doc = {"v_a": {"duration": 10, "timestamps": [[0, 2]], "sentences": ["one"]}}
    full = _write(tmp_path / "val_1.json", doc)
    empty = _write(tmp_path / "val_2.json", {})
    out = tmp_path / "o.jsonl"
    # One input gives nothing: the other's samples are written, and the empty one is named (exit 0).
    assert convert.main(["--format", "activitynet_captions_tg", "--input", full, empty, "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"convert: warning: {empty}: no record read from this input (empty, or not activitynet_captions_tg?)" in err
    assert json.loads((tmp_path / "o.summary.json").read_text())["empty_inputs"] == [empty]
    # Nothing at all: refused, naming the input that gave nothing (exit 2, one line).
    blank = _write(tmp_path / "charades_sta_test.txt", "\n\n")
    csv_path = _write(tmp_path / "Charades_v1_test.csv", "id,length\nAAA,30\n")
    rc = convert.main(["--format", "charades_sta", "--input", blank, csv_path, "--output", str(tmp_path / "c.jsonl")])
    assert rc == 2 and not (tmp_path / "c.jsonl").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"convert: error: no sample converted from 0 record(s) of {[blank, csv_path]}; no record in {blank} "
        f"(see {tmp_path / 'c.summary.json'})"
    ]


def test_clipping_message_shows_the_values_compared(tmp_path):
    """val_1.json v_qI1ZayfiGHI: 'end 95.04 > duration 95.04' (the duration is 95.03999999999999)."""
    doc = {"v": {"duration": 95.03999999999999, "timestamps": [[36.59, 95.04]], "sentences": ["x"]}}
    path = _write(tmp_path / "val_1.json", doc)
    ctx = convert_files("activitynet_captions_tg", [path])
    assert ctx.report.messages() == [
        f"{path}:$.v: timestamps[0]: end 95.04 > duration 95.03999999999999 set to 95.03999999999999 "
        "[clipped_end -> clip]"
    ]


def test_repeated_json_key_fails_instead_of_losing_a_value(tmp_path):
    """Before: json kept the last of two 'v_a' entries; the first video's captions vanished silently."""
    text = '{"v_a": {"duration": 10, "timestamps": [[0, 1]], "sentences": ["x"]},\n "v_a": {"duration": 5}}'
    path = _write(tmp_path / "val_1.json", text)
    assert _fails("activitynet_captions_tg", [path]) == (
        f"{path}: key 'v_a' appears twice in one JSON object (one value would be lost)"
    )


def test_nextgqa_video_in_two_gsub_files(tmp_path):
    """Before: the later file's grounding silently replaced the earlier one's."""
    ok = _write(tmp_path / "val.csv", f"{NEXTGQA_HEADER}\n1,0,what?,a,CW,a,b,c,d,e\n")
    g1 = _write(tmp_path / "gsub_val.json", GSUB)
    g2 = _write(tmp_path / "gsub_test.json", {"1": {"duration": 30, "location": {"0": [[5, 6]]}}})
    assert _fails("nextgqa", [ok, g1, g2]) == f"{g2}: video '1' is also in {g1}: which grounding to use?"


def test_detection_null_subset_is_unspecified(tmp_path):
    """Before: a null 'subset' became the split 'None' (source 'hacs:None')."""
    db = {"database": {"v": {"subset": None, "duration": 9, "annotations": [{"label": "X", "segment": [1, 2]}]}}}
    ctx = convert_files("hacs", [_write(tmp_path / "hacs.json", db)])
    assert [s["source"] for s in ctx.samples] == ["hacs:unspecified"]


def test_convert_refuses_to_overwrite_its_input(tmp_path, capsys):
    good = {"qid": 1, "query": "q", "vid": "v", "duration": 10, "relevant_windows": [[0, 2]]}
    path = _write(tmp_path / "highlight_val_release.jsonl", json.dumps(good) + "\n")
    assert convert.main(["--format", "qvhighlights", "--input", path, "--output", path]) == 2
    assert capsys.readouterr().err.strip() == (
        f"convert: error: --output {path} is one of the --input files (it would be replaced)"
    )
    assert json.loads((tmp_path / "highlight_val_release.jsonl").read_text()) == good


def test_thumos14_durations_message_shows_the_raw_values(tmp_path):
    """Before: "duration None is not a positive number" for a count / fps that cannot be divided."""
    info = _write(tmp_path / "test_video_info.csv", "video,fps,count\nvideo_test_1,0,300\nvideo_test_2,30,300\n")
    inst = _write(tmp_path / "test_Annotation.csv", "video,type,start,end\nvideo_test_2,X,1,2\n")
    ctx = convert_files("thumos14", [inst, info])
    assert ctx.report.messages("missing_duration") == [
        f"{info}:2: count/fps: duration '300/0' is not a positive number [missing_duration -> drop_sample]"
    ]


def test_thumos14_same_instances_in_two_inputs_fail(tmp_path):
    """Before: the csv and the evalkit files together doubled every segment (6664 for 3332), silently."""
    info = _write(tmp_path / "test_video_info.csv", "video,fps,count\nvideo_test_1,30,300\n")
    inst = _write(tmp_path / "test_Annotation.csv", "video,type,start,end\nvideo_test_1,X,1.0,2\nvideo_test_1,X,1,2\n")
    kit = _write(tmp_path / "X_test.txt", "video_test_1 1 2.0\n")
    assert _fails("thumos14", [inst, kit, info]) == (
        f"{kit}:1: X instance [1.0, 2.0] of video_test_1 is also in {inst}:2: the same annotations given twice "
        "(in two forms?); pass one of them"
    )
    # Within one file a repeated instance is kept (the annotators' choice, as the official evaluation keeps it).
    assert convert_files("thumos14", [inst, info]).samples[0]["segments"] == [[1.0, 2.0], [1.0, 2.0]]


def test_a_samples_file_that_is_not_utf8_names_the_line_and_byte(tmp_path):
    from data_pipeline.schema import read_samples

    good = '{"id": "a", "task": "tg", "video": "v", "duration": 5.0, "segments": [[1, 2]], "query": "q", "source": "s"}'
    path = tmp_path / "s.jsonl"
    path.write_bytes(good.encode() + b"\n" + good.replace('"q"', '"\xe9"').encode("latin-1") + b"\n")
    byte = len(good) + 1 + good.index('"q"') + 1  # the second line's query value
    with pytest.raises(ValueError, match=rf"s.jsonl:2: not UTF-8 text \(.* at byte {byte} of the file\)"):
        read_samples(str(path))
