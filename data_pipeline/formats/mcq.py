"""General video multiple-choice benchmarks -> mcq samples (evaluation only; docs/formats.md, "Format names").

Every sample has ``question``, ``options`` (lettered A, B, ... in order), ``answer`` (the correct letter),
``category`` (the benchmark's own breakdown: ``Acc/<category>``), ``segments: []`` and no ``duration`` unless the
benchmark gives one (the stream then takes the video's). Layouts, as the benchmarks publish them:

- ``tempcompass``: TempCompass ``questions/multi-choice.json``, ``{video_id: {dimension: [{question, answer}]}}``
  with the options as lines ``A. ...`` under the question and ``answer`` ``"A. text"``. id
  ``<video_id>#<dimension>#<k>`` (k: 0-based index in that list); category = the dimension.
- ``mvbench``: MVBench ``json/<task>.json`` files (or their directory): lists of ``{video, question, candidates,
  answer}`` (``answer`` is the text of one candidate), with ``start`` / ``end`` (seconds) for the tasks asked
  about a clip of the video. id ``<file stem>#<k>``; category = the task name (``MVBENCH_TASKS``); ``video_file``
  keeps ``video`` as given (it is relative to the task's own video folder) and ``video_start`` / ``video_end``
  the clip's bounds (the stream shows the whole file: cut such clips before extracting frames). Task folders
  may reuse a file name: give each task file its own ``--video-prefix`` then.
- ``videomme``: Video-MME's records (``videomme/test-*.parquet`` exported as a JSON list or JSONL, e.g.
  ``pandas.read_parquet(f).to_json(out, orient="records")``): ``{video_id, duration, domain, sub_category,
  videoID, question_id, task_type, question, options: ["A. ...", ...], answer: "A"}``. id = ``question_id``;
  video = ``videoID`` (the file ``<videoID>.mp4``); category = ``task_type``; ``duration`` (short / medium /
  long) is kept as ``duration_group``, with ``domain`` and ``sub_category``.
- ``perception_test_mc``: Perception Test ``mc_question_{train,valid}.json``, ``{video_id: {metadata:
  {num_frames, frame_rate, split, ...}, mc_question: [{id, question, options, answer_id, area, reasoning,
  tag}]}}``. id ``<video_id>#<id>``; category = ``area``; ``reasoning`` and ``tag`` kept; duration =
  num_frames / frame_rate.

A record without one of its layout's required fields (``*_REQUIRED``) is dropped and reported; a file where no
record has it fails with one line naming it. An answer that names no option, or several, is dropped.
"""

from __future__ import annotations

import os
import re
from typing import Any

from data_pipeline import fileio
from data_pipeline.formats.common import Context, check_records, kind_of, load_json, read_lines, video_stem
from data_pipeline.schema import OPTION_LETTERS, InputError, clean_text, infer_split, to_float, where

TEMPCOMPASS_REQUIRED = ("question", "answer")
MVBENCH_REQUIRED = ("video", "question", "candidates", "answer")
MVBENCH_OPTIONAL = ("start", "end")
VIDEOMME_REQUIRED = ("videoID", "question_id", "task_type", "question", "options", "answer")
VIDEOMME_OPTIONAL = ("video_id", "duration", "domain", "sub_category", "url")
PERCEPTION_REQUIRED = ("id", "question", "options", "answer_id", "area")
PERCEPTION_OPTIONAL = ("reasoning", "tag")
# MVBench's 20 task files (OpenGVLab/Ask-Anything video_chat2/mvbench.ipynb data_list) -> task names.
MVBENCH_TASKS = {
    "action_sequence": "Action Sequence",
    "action_prediction": "Action Prediction",
    "action_antonym": "Action Antonym",
    "fine_grained_action": "Fine-grained Action",
    "unexpected_action": "Unexpected Action",
    "object_existence": "Object Existence",
    "object_interaction": "Object Interaction",
    "object_shuffle": "Object Shuffle",
    "moving_direction": "Moving Direction",
    "action_localization": "Action Localization",
    "scene_transition": "Scene Transition",
    "action_count": "Action Count",
    "moving_count": "Moving Count",
    "moving_attribute": "Moving Attribute",
    "state_change": "State Change",
    "fine_grained_pose": "Fine-grained Pose",
    "character_order": "Character Order",
    "egocentric_navigation": "Egocentric Navigation",
    "episodic_reasoning": "Episodic Reasoning",
    "counterfactual_inference": "Counterfactual Inference",
}
_OPTION_LINE = re.compile(r"([A-H])\.\s*(.*)")


def _options(raw: Any, ctx: Context, loc: str, field: str) -> list[str] | None:
    """2..8 non-empty option texts (whitespace collapsed), or None after reporting ``missing_field``."""
    if (
        not isinstance(raw, list)
        or not 2 <= len(raw) <= len(OPTION_LETTERS)
        or not all(isinstance(o, str) and o.strip() for o in raw)
    ):
        ctx.report.add("missing_field", loc, field, f"{raw!r} is not a list of 2..{len(OPTION_LETTERS)} option texts")
        return None
    return [" ".join(o.split()) for o in raw]


def _lettered(raw: list[str], ctx: Context, loc: str, field: str) -> list[str] | None:
    """Options written ``"A. text"`` in letter order -> their texts, or None after reporting ``missing_field``."""
    out = []
    for i, o in enumerate(raw):
        m = _OPTION_LINE.fullmatch(o.strip())
        if m is None or m.group(1) != OPTION_LETTERS[i]:
            ctx.report.add("missing_field", loc, field, f"option {o!r} is not '{OPTION_LETTERS[i]}. <text>'")
            return None
        out.append(" ".join(m.group(2).split()))
    return out


def _letter_of(text: Any, options: list[str], ctx: Context, loc: str) -> str | None:
    """The letter of the option whose text is ``text`` (whitespace-insensitive), or None after reporting."""
    answer = " ".join(text.split()) if isinstance(text, str) else text
    hits = [i for i, o in enumerate(options) if o == answer]
    if not hits:
        ctx.report.add("answer_not_in_options", loc, "answer", f"{answer!r} is none of {options}")
        return None
    if len(hits) > 1:
        ctx.report.add(
            "ambiguous_answer", loc, "answer", f"{answer!r} equals options {[OPTION_LETTERS[i] for i in hits]}"
        )
        return None
    return OPTION_LETTERS[hits[0]]


def _emit(ctx: Context, loc: str, base: dict[str, Any], extra: dict[str, Any]) -> None:
    """One mcq sample from ``base`` (id, video, question, options, answer, category, source) plus ``extra``."""
    sample = {
        "id": base["id"],
        "task": "mcq",
        "video": base["video"],
        "segments": [],
        "question": base["question"],
        "options": base["options"],
        "answer": base["answer"],
        "category": base["category"],
        "source": base["source"],
    }
    ctx.emit({**sample, **{k: v for k, v in extra.items() if v is not None}}, loc)


def _text(value: Any) -> str | None:
    return " ".join(value.split()) if isinstance(value, str) and value.strip() else None


# --- TempCompass ---------------------------------------------------------------------------------------------


def _tempcompass_question(raw: Any, ctx: Context, loc: str) -> tuple[str, list[str]] | None:
    """``"question\\nA. x\\nB. y"`` -> (question, [x, y]), or None after reporting."""
    if not isinstance(raw, str):
        ctx.report.add("missing_field", loc, "question", f"{raw!r} is not a string")
        return None
    lines = [ln.strip() for ln in raw.split("\n") if ln.strip()]
    first = next((i for i, ln in enumerate(lines) if _OPTION_LINE.fullmatch(ln)), len(lines))
    question = clean_text(" ".join(lines[:first]), ctx.report, loc, "question")
    if question is None:
        return None
    options = _lettered(lines[first:], ctx, loc, "question") if len(lines) - first >= 2 else None
    if options is None and len(lines) - first < 2:
        ctx.report.add("missing_field", loc, "question", "fewer than 2 option lines 'A. ...'")
    return None if options is None else (question, options)


def _tempcompass_one(item: Any, ctx: Context, loc: str, base: dict[str, Any]) -> None:
    if not isinstance(item, dict):
        ctx.report.add("missing_field", loc, "question", "entry is not an object {question, answer}")
        return
    parsed = _tempcompass_question(item.get("question"), ctx, loc)
    if parsed is None:
        return
    question, options = parsed
    m = _OPTION_LINE.fullmatch(item["answer"].strip()) if isinstance(item.get("answer"), str) else None
    letter = m.group(1) if m else None
    if (
        letter is None
        or OPTION_LETTERS.index(letter) >= len(options)
        or options[OPTION_LETTERS.index(letter)] != " ".join(m.group(2).split())
    ):
        ctx.report.add(
            "answer_not_in_options",
            loc,
            "answer",
            f"{item.get('answer')!r} is not 'X. <text of option X>' among {options}",
        )
        return
    _emit(ctx, loc, dict(base, question=question, options=options, answer=letter), {})


def convert_tempcompass(paths: list[str], ctx: Context) -> None:
    """Convert TempCompass ``multi-choice.json`` file(s)."""
    for path in paths:
        if kind_of(path) != "json":
            raise InputError(f"{path}: tempcompass expects questions/multi-choice.json")
        data = load_json(path)
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise InputError(f"{path}: expected {{video_id: {{dimension: [{{question, answer}}]}}}}")
        items = [it for dims in data.values() for lst in dims.values() if isinstance(lst, list) for it in lst]
        check_records(path, items, TEMPCOMPASS_REQUIRED, scope="$.<video_id>.<dimension>[*]")
        source = f"tempcompass:{ctx.split or infer_split(path) or 'test'}"
        for vid, dims in data.items():
            for dim, lst in dims.items():
                if not isinstance(lst, list):
                    ctx.count(path)
                    ctx.report.add("missing_field", where(path, key=f"{vid}.{dim}"), dim, "not a list of questions")
                    continue
                for k, item in enumerate(lst):
                    ctx.count(path)
                    base = {
                        "id": f"{ctx.video(vid)}#{dim}#{k}",
                        "video": ctx.video(vid),
                        "category": dim,
                        "source": source,
                    }
                    _tempcompass_one(item, ctx, where(path, key=f"{vid}.{dim}[{k}]"), base)


# --- MVBench -------------------------------------------------------------------------------------------------


def _mvbench_files(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        kind = kind_of(p)
        if kind == "dir":
            out += sorted(fileio.glob(os.path.join(p, "*.json")))
        elif kind == "json":
            out.append(p)
        else:
            raise InputError(f"{p}: mvbench expects the task .json files (json/<task>.json) or their directory")
    if not out:
        raise InputError(f"{paths}: no MVBench task .json file")
    return out


def _mvbench_one(rec: Any, ctx: Context, loc: str, base: dict[str, Any]) -> None:
    if not isinstance(rec, dict):
        ctx.report.add("missing_field", loc, "record", "not a JSON object")
        return
    video = rec.get("video")
    question = clean_text(rec.get("question"), ctx.report, loc, "question")
    options = _options(rec.get("candidates"), ctx, loc, "candidates")
    if not isinstance(video, str) or not video_stem(video):
        ctx.report.add("missing_field", loc, "video", f"{video!r} is not a video file name")
        return
    if question is None or options is None:
        return
    letter = _letter_of(rec.get("answer"), options, ctx, loc)
    if letter is None:
        return
    s, e = to_float(rec.get("start")), to_float(rec.get("end"))
    clip = {"video_start": s, "video_end": e} if s is not None and e is not None else {}
    _emit(
        ctx,
        loc,
        dict(base, video=ctx.video(video_stem(video)), question=question, options=options, answer=letter),
        {"video_file": video, **clip},
    )


def convert_mvbench(paths: list[str], ctx: Context) -> None:
    """Convert MVBench task files (``json/<task>.json``, one per task; the directory works too)."""
    for path in _mvbench_files(paths):
        stem = video_stem(path)
        if stem not in MVBENCH_TASKS:
            raise InputError(f"{path}: {stem!r} is not an MVBench task file (known: {', '.join(MVBENCH_TASKS)})")
        data = load_json(path)
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of {{video, question, candidates, answer}}")
        check_records(path, data, MVBENCH_REQUIRED, MVBENCH_OPTIONAL, scope="$[*]")
        base = {"category": MVBENCH_TASKS[stem], "source": f"mvbench:{ctx.split or 'test'}"}
        for k, rec in enumerate(data):
            ctx.count(path)
            _mvbench_one(rec, ctx, where(path, key=f"[{k}]"), dict(base, id=f"{stem}#{k}"))


# --- Video-MME -----------------------------------------------------------------------------------------------


def _records(path: str, ctx: Context) -> list[tuple[str, Any]]:
    """(location, record) of a JSON list or a JSONL file."""
    kind = kind_of(path)
    if kind == "json":
        data = load_json(path)
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of records (or JSONL)")
        return [(where(path, key=f"[{i}]"), r) for i, r in enumerate(data)]
    if kind == "jsonl":
        import json

        out = []
        for line, text in read_lines(path):
            try:
                out.append((where(path, line), json.loads(text)))
            except json.JSONDecodeError as e:
                ctx.count(path)
                ctx.report.add("bad_json", where(path, line), "line", f"not JSON ({e.msg})")
        return out
    raise InputError(f"{path}: videomme expects its records as .json (a list) or .jsonl")


def _videomme_one(rec: Any, ctx: Context, loc: str, source: str) -> None:
    if not isinstance(rec, dict):
        ctx.report.add("bad_json", loc, "line", "not a JSON object")
        return
    fields = {f: _text(rec.get(f)) for f in ("videoID", "question_id", "task_type")}
    missing = [f for f, v in fields.items() if v is None]
    if missing:
        ctx.report.add("missing_field", loc, missing[0], f"{rec.get(missing[0])!r} is not a non-empty string")
        return
    question = clean_text(rec.get("question"), ctx.report, loc, "question")
    raw = _options(rec.get("options"), ctx, loc, "options")
    options = None if raw is None else _lettered(raw, ctx, loc, "options")
    if question is None or options is None:
        return
    answer = rec.get("answer")
    if not isinstance(answer, str) or answer.strip() not in OPTION_LETTERS[: len(options)]:
        ctx.report.add("answer_not_in_options", loc, "answer", f"{answer!r} is not a letter of {len(options)} options")
        return
    base = {
        "id": fields["question_id"],
        "video": ctx.video(fields["videoID"]),
        "question": question,
        "options": options,
        "answer": answer.strip(),
        "category": fields["task_type"],
        "source": source,
    }
    extra = {
        "duration_group": _text(rec.get("duration")),
        "domain": _text(rec.get("domain")),
        "sub_category": _text(rec.get("sub_category")),
    }
    _emit(ctx, loc, base, extra)


def convert_videomme(paths: list[str], ctx: Context) -> None:
    """Convert Video-MME records (JSON list or JSONL exported from its parquet)."""
    for path in paths:
        rows = _records(path, ctx)
        check_records(path, [r for _, r in rows], VIDEOMME_REQUIRED, VIDEOMME_OPTIONAL, scope="$[*]")
        source = f"videomme:{ctx.split or infer_split(path) or 'test'}"
        for loc, rec in rows:
            ctx.count(path)
            _videomme_one(rec, ctx, loc, source)


# --- Perception Test -----------------------------------------------------------------------------------------


def _perception_one(q: Any, ctx: Context, loc: str, base: dict[str, Any], duration: float | None) -> None:
    if not isinstance(q, dict):
        ctx.report.add("missing_field", loc, "mc_question", "entry is not an object")
        return
    qid, area = q.get("id"), _text(q.get("area"))
    question = clean_text(q.get("question"), ctx.report, loc, "question")
    options = _options(q.get("options"), ctx, loc, "options")
    if isinstance(qid, bool) or not isinstance(qid, (int, str)) or str(qid) == "" or area is None:
        ctx.report.add("missing_field", loc, "id" if area else "area", "absent or not an id / a string")
        return
    if question is None or options is None:
        return
    aid = q.get("answer_id")
    if isinstance(aid, bool) or not isinstance(aid, int) or not 0 <= aid < len(options):
        ctx.report.add("answer_not_in_options", loc, "answer_id", f"{aid!r} is not an index of {len(options)} options")
        return
    tags = q.get("tag") if isinstance(q.get("tag"), list) else None
    _emit(
        ctx,
        loc,
        dict(
            base,
            id=f"{base['video']}#{qid}",
            question=question,
            options=options,
            answer=OPTION_LETTERS[aid],
            category=area,
        ),
        {"duration": duration, "reasoning": _text(q.get("reasoning")), "tag": tags},
    )


def _perception_duration(meta: Any) -> float | None:
    """num_frames / frame_rate in seconds when both are positive numbers."""
    if not isinstance(meta, dict):
        return None
    n, fps = to_float(meta.get("num_frames")), to_float(meta.get("frame_rate"))
    return n / fps if n and fps and n > 0 and fps > 0 else None


def convert_perception_test(paths: list[str], ctx: Context) -> None:
    """Convert Perception Test ``mc_question_<split>.json`` file(s)."""
    for path in paths:
        if kind_of(path) != "json":
            raise InputError(f"{path}: perception_test_mc expects mc_question_<split>.json")
        data = load_json(path)
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected {{video_id: {{metadata, mc_question: [...]}}}}")
        check_records(path, list(data.values()), ("mc_question",), ("metadata",), scope="$.<video_id>")
        questions = [
            q
            for v in data.values()
            if isinstance(v, dict) and isinstance(v.get("mc_question"), list)
            for q in v["mc_question"]
        ]
        check_records(path, questions, PERCEPTION_REQUIRED, PERCEPTION_OPTIONAL, scope="$.<video_id>.mc_question[*]")
        for vid, rec in data.items():
            loc = where(path, key=vid)
            qs = rec.get("mc_question") if isinstance(rec, dict) else None
            if not qs:
                ctx.count(path)
                ctx.report.add("no_annotations", loc, "mc_question", "video without multiple-choice questions")
                continue
            meta = rec.get("metadata")
            split = ctx.split or (meta.get("split") if isinstance(meta, dict) else None) or infer_split(path)
            base = {"video": ctx.video(vid), "source": f"perception_test:{split or 'unspecified'}"}
            for k, q in enumerate(qs):
                ctx.count(path)
                _perception_one(q, ctx, f"{loc}.mc_question[{k}]", base, _perception_duration(meta))
