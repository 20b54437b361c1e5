"""Multiple-choice benchmark converters (mcq): TempCompass on its real file (../shared/data/tempcompass, skipped when
absent), and MVBench / Video-MME / Perception Test on small hand-made files in their published layouts."""

from __future__ import annotations

import collections
import json

import pytest

from data_pipeline.formats import FORMAT_TASKS, convert_files
from data_pipeline.schema import InputError, validate_sample


def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def test_formats_registered():
    for fmt in ("tempcompass", "mvbench", "videomme", "perception_test_mc"):
        assert FORMAT_TASKS[fmt] == "mcq"
    assert FORMAT_TASKS["timerft"] == FORMAT_TASKS["tvgbench"] == "tg"


def test_tempcompass_real(shared_data):
    path = shared_data / "tempcompass" / "multi-choice.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    ctx = convert_files("tempcompass", [str(path)])
    s = ctx.samples
    assert len(s) == 1580 and not ctx.report.counts and len({x["video"] for x in s}) == 410
    assert collections.Counter(x["category"] for x in s) == {
        "action": 338,
        "direction": 335,
        "speed": 317,
        "order": 302,
        "attribute_change": 288,
    }
    raw = json.loads(path.read_text())["1034419625"]["action"][1]
    assert raw["question"].startswith("Which activity is the man engaged in?\nA. passing a basketball")
    assert {x["id"]: x for x in s}["1034419625#action#1"] == {
        "id": "1034419625#action#1",
        "task": "mcq",
        "video": "1034419625",
        "segments": [],
        "question": "Which activity is the man engaged in?",
        "options": ["passing a basketball", "dribbling a basketball", "dunking a basketball"],
        "answer": "C",
        "category": "action",
        "source": "tempcompass:test",
    }
    assert raw["answer"] == "C. dunking a basketball"
    for x in s:
        validate_sample(x)


def test_tempcompass_messy(tmp_path):
    data = {
        "v1": {
            "speed": [
                {"question": "How fast?\nA. slow\nB. fast", "answer": "B. fast"},
                {"question": "How fast?\nA. slow\nB. fast", "answer": "B. slowly"},  # text is not option B
                {"question": "No options here", "answer": "A. x"},
                {"question": "Order?\nA. x\nC. y", "answer": "A. x"},  # letters out of order
                {"question": "Q?\nA. x\nB. y", "answer": "C. z"},  # no option C
            ],
            "order": "not a list",
        }
    }
    ctx = convert_files("tempcompass", [_write(tmp_path / "mc.json", data)], video_prefix="tc_")
    assert [x["id"] for x in ctx.samples] == ["tc_v1#speed#0"] and ctx.samples[0]["video"] == "tc_v1"
    assert dict(ctx.report.counts) == {"answer_not_in_options": 2, "missing_field": 3}
    assert ctx.report.messages("missing_field")[1].startswith(f"{tmp_path / 'mc.json'}:$.v1.speed[3]: question:")
    with pytest.raises(InputError, match="missing required field"):
        convert_files("tempcompass", [_write(tmp_path / "bad.json", {"v": {"d": [{"q": 1}]}})])


MVBENCH = [
    {"video": "166583.webm", "question": "What is the action performed?", "candidates": ["a", "b", "c"], "answer": "b"},
    {
        "video": "3MSZA.mp4",
        "question": "What happened after?",
        "candidates": ["x", "y", "x"],
        "answer": "x",
        "start": 2.5,
        "end": 9.0,
    },  # the answer text is two candidates: dropped
    {
        "video": "3MSZA.mp4",
        "question": "What happened before?",
        "candidates": ["x", "y"],
        "answer": "y",
        "start": 2.5,
        "end": 9.0,
    },
    {"video": "v.mp4", "question": "Which?", "candidates": ["p", "q"], "answer": "r"},  # no such candidate
    {"video": "", "question": "Which?", "candidates": ["p", "q"], "answer": "p"},
]


def test_mvbench_files_and_directory(tmp_path):
    d = tmp_path / "json"
    d.mkdir()
    _write(d / "action_antonym.json", MVBENCH[:1])
    _write(d / "action_sequence.json", MVBENCH[1:])
    ctx = convert_files("mvbench", [str(d)])
    s = ctx.samples
    assert [x["id"] for x in s] == ["action_antonym#0", "action_sequence#1"]
    assert s[0] == {
        "id": "action_antonym#0",
        "task": "mcq",
        "video": "166583",
        "segments": [],
        "question": "What is the action performed?",
        "options": ["a", "b", "c"],
        "answer": "B",
        "category": "Action Antonym",
        "source": "mvbench:test",
        "video_file": "166583.webm",
    }
    assert s[1]["category"] == "Action Sequence" and (s[1]["video_start"], s[1]["video_end"]) == (2.5, 9.0)
    assert dict(ctx.report.counts) == {"ambiguous_answer": 1, "answer_not_in_options": 1, "missing_field": 1}
    assert convert_files("mvbench", [str(d / "action_antonym.json")]).samples == s[:1]
    _write(tmp_path / "my_task.json", MVBENCH[:1])
    with pytest.raises(InputError, match="'my_task' is not an MVBench task file"):
        convert_files("mvbench", [str(tmp_path / "my_task.json")])


VIDEOMME = [
    {
        "video_id": "001",
        "duration": "short",
        "domain": "Knowledge",
        "sub_category": "Humanity & History",
        "url": "https://www.youtube.com/watch?v=fFjv93ACGo8",
        "videoID": "fFjv93ACGo8",
        "question_id": "001-1",
        "task_type": "Counting Problem",
        "question": "How many?",
        "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three."],
        "answer": "C",
    },
    {
        "videoID": "fFjv93ACGo8",
        "question_id": "001-2",
        "task_type": "Information Synopsis",
        "question": "What?",
        "options": ["A. x", "B. y", "C. z", "D. w"],
        "answer": "E",
    },  # no option E
    {
        "videoID": "fFjv93ACGo8",
        "question_id": "001-3",
        "task_type": "Action Reasoning",
        "question": "Why?",
        "options": ["x", "y", "z", "w"],
        "answer": "A",
    },  # options not lettered
]


def test_videomme_json_and_jsonl(tmp_path):
    ctx = convert_files("videomme", [_write(tmp_path / "videomme.json", VIDEOMME)])
    assert [x["id"] for x in ctx.samples] == ["001-1"]
    assert ctx.samples[0] == {
        "id": "001-1",
        "task": "mcq",
        "video": "fFjv93ACGo8",
        "segments": [],
        "question": "How many?",
        "options": ["Apples.", "Candles.", "Berries.", "The three."],
        "answer": "C",
        "category": "Counting Problem",
        "source": "videomme:test",
        "duration_group": "short",
        "domain": "Knowledge",
        "sub_category": "Humanity & History",
    }
    assert dict(ctx.report.counts) == {"answer_not_in_options": 1, "missing_field": 1}
    lines = "\n".join(json.dumps(r) for r in VIDEOMME[:1]) + "\n{broken\n"
    ctx = convert_files("videomme", [_write(tmp_path / "videomme.jsonl", lines)])
    assert len(ctx.samples) == 1 and dict(ctx.report.counts) == {"bad_json": 1}
    with pytest.raises(InputError, match=r"missing required field\(s\) task_type"):
        convert_files(
            "videomme", [_write(tmp_path / "v2.json", [{k: v for k, v in VIDEOMME[0].items() if k != "task_type"}])]
        )


PERCEPTION = {
    "video_10909": {
        "metadata": {
            "split": "valid",
            "video_id": "video_10909",
            "num_frames": 900,
            "frame_rate": 30.0,
            "resolution": [1080, 1920],
        },
        "mc_question": [
            {
                "id": 0,
                "question": "Is the camera moving or static?",
                "options": ["I don't know", "moving", "static or shaking"],
                "answer_id": 2,
                "area": "physics",
                "reasoning": "descriptive",
                "tag": ["motion"],
            },
            {"id": 1, "question": "How many?", "options": ["1", "2", "3"], "answer_id": 3, "area": "memory"},
        ],
    },
    "video_2": {"metadata": {"split": "valid"}, "mc_question": []},
}


def test_perception_test_mc(tmp_path):
    ctx = convert_files("perception_test_mc", [_write(tmp_path / "mc_question_valid.json", PERCEPTION)])
    assert ctx.samples == [
        {
            "id": "video_10909#0",
            "task": "mcq",
            "video": "video_10909",
            "segments": [],
            "question": "Is the camera moving or static?",
            "options": ["I don't know", "moving", "static or shaking"],
            "answer": "C",
            "category": "physics",
            "source": "perception_test:valid",
            "duration": 30.0,
            "reasoning": "descriptive",
            "tag": ["motion"],
        }
    ]
    assert dict(ctx.report.counts) == {"answer_not_in_options": 1, "no_annotations": 1}
    with pytest.raises(InputError, match=r"missing required field\(s\) answer_id"):
        bad = {"v": {"mc_question": [{"id": 0, "question": "q", "options": ["a", "b"], "area": "x"}]}}
        convert_files("perception_test_mc", [_write(tmp_path / "mc_question_test.json", bad)])
