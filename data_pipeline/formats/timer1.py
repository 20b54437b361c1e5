"""Time-R1's grounding data (xiaomi-research/time-r1 ``dataset/timer1/annotations``) -> tg samples.

``timerft``: TimeRFT, Time-R1's RL training set (``train_2k5.json``, 2500 queries, one of TempR1's TG sources): a
JSON list of ``{video, duration, timestamp: [s, e], sentence, qid, video_start, video_end, difficulty, pred}``.
id = ``qid`` (the dataset's own, ``my|<source>|<youtube id>|<sentence>``); ``sub_source`` = its ``<source>``
(cosmo, yt-temporal, internvid-vtime, didemo, howto100m, queryd); ``video`` = the stem of ``video`` (the file the
frames are extracted from: a clip cut from a longer video keeps its range in the name, and then ``video_start``
/ ``video_end`` are kept too: the clip's place in its source video, in seconds); ``timestamp`` and ``duration``
are relative to that file. ``difficulty`` is kept; ``pred`` (a base model's guess) is not.

``tvgbench``: TVGBench, Time-R1's grounding benchmark (``tvgbench.json``, 800 queries): a JSON list of
``{path, question, answer: "s-e", duration, start, end, dataset_name, qsemtype, bins, question_type, source}``.
id = ``<video>#<k>`` (k: 0-based index of the query among those of its video, file order); ``video`` = the stem
of ``path``; ``sub_source`` = ``dataset_name`` (``bins.dataset`` where it is absent: egonlq); ``qsemtype`` (the
query's semantic type) is kept, and ``start`` / ``end`` (the clip's range in its source video, when set) as
``video_start`` / ``video_end``.

Required fields ``TIMERFT_REQUIRED`` / ``TVGBENCH_REQUIRED``; a file where no record has one fails with one line
naming it, a record without it is dropped and reported. A query ending after the video is clipped for the
rewards (rule ``clipped_end``) and keeps its released bounds in ``released_segments`` for the metrics (TimeRFT: 48
of 2500; TVGBench: 38 of 800).
"""

from __future__ import annotations

import re
from typing import Any

from data_pipeline.formats.common import Context, check_records, kind_of, load_json, video_stem, with_released
from data_pipeline.schema import (
    InputError,
    clean_duration,
    clean_segment,
    clean_text,
    infer_split,
    released_segment,
    to_float,
    where,
)

TIMERFT_REQUIRED = ("video", "duration", "timestamp", "sentence", "qid")
TIMERFT_OPTIONAL = ("video_start", "video_end", "difficulty", "pred")
TVGBENCH_REQUIRED = ("path", "question", "answer", "duration")
TVGBENCH_OPTIONAL = ("start", "end", "dataset_name", "qsemtype", "bins", "question_type", "source")
_NUM = r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_ANSWER_RE = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})\s*")


def _records(path: str, required: tuple[str, ...], optional: tuple[str, ...]) -> list[Any]:
    if kind_of(path) != "json":
        raise InputError(f"{path}: expected the Time-R1 .json annotation list")
    data = load_json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of query records")
    check_records(path, data, required, optional, scope="$[*]")
    return data


def _video(rec: dict, key: str, ctx: Context, loc: str) -> str | None:
    raw = rec.get(key)
    if not isinstance(raw, str) or not video_stem(raw):
        ctx.report.add("missing_field", loc, key, f"{raw!r} is not a video file path")
        return None
    return ctx.video(video_stem(raw))


def _clip_range(sample: dict, start: Any, end: Any) -> dict:
    """Keep the clip's range in its source video (seconds) when both ends are numbers."""
    s, e = to_float(start), to_float(end)
    if s is not None and e is not None:
        sample["video_start"], sample["video_end"] = s, e
    return sample


def _timerft_one(rec: Any, ctx: Context, loc: str, source: str) -> None:
    if not isinstance(rec, dict):
        ctx.report.add("missing_field", loc, "record", "not a JSON object")
        return
    qid = rec.get("qid")
    parts = qid.split("|") if isinstance(qid, str) else []
    if len(parts) < 4 or not parts[1]:
        ctx.report.add("missing_field", loc, "qid", f"{qid!r} is not 'my|<source>|<video>|<sentence>'")
        return
    video = _video(rec, "video", ctx, loc)
    query = clean_text(rec.get("sentence"), ctx.report, loc, "sentence")
    duration = clean_duration(rec.get("duration"), ctx.report, loc)
    if video is None or query is None or duration is None:
        return
    seg = clean_segment(rec.get("timestamp"), duration, ctx.report, loc, "timestamp")
    if seg is None:
        return
    sample = {
        "id": qid,
        "task": "tg",
        "video": video,
        "duration": duration,
        "segments": [seg],
        "query": query,
        "source": source,
        "sub_source": parts[1],
    }
    _clip_range(sample, rec.get("video_start"), rec.get("video_end"))
    if to_float(rec.get("difficulty")) is not None:
        sample["difficulty"] = to_float(rec.get("difficulty"))
    ctx.emit(with_released(sample, [released_segment(rec.get("timestamp"))]), loc)


def convert_timerft(paths: list[str], ctx: Context) -> None:
    """Convert TimeRFT ``train_2k5.json`` file(s)."""
    for path in paths:
        source = f"timerft:{ctx.split or infer_split(path) or 'train'}"
        for i, rec in enumerate(_records(path, TIMERFT_REQUIRED, TIMERFT_OPTIONAL)):
            ctx.count(path)
            _timerft_one(rec, ctx, where(path, key=f"[{i}]"), source)


def _answer_segment(raw: Any) -> list[Any] | Any:
    """TVGBench ``answer`` "s-e" -> [s, e] (numbers as text); anything else is passed on for the segment rules."""
    m = _ANSWER_RE.fullmatch(raw) if isinstance(raw, str) else None
    return [m.group(1), m.group(2)] if m else raw


def _tvgbench_one(rec: Any, ctx: Context, loc: str, source: str, counters: dict[str, int]) -> None:
    if not isinstance(rec, dict):
        ctx.report.add("missing_field", loc, "record", "not a JSON object")
        return
    video = _video(rec, "path", ctx, loc)
    if video is None:
        return
    k = counters.get(video, 0)
    counters[video] = k + 1
    query = clean_text(rec.get("question"), ctx.report, loc, "question")
    duration = clean_duration(rec.get("duration"), ctx.report, loc)
    if query is None or duration is None:
        return
    raw = _answer_segment(rec.get("answer"))
    seg = clean_segment(raw, duration, ctx.report, loc, "answer")
    if seg is None:
        return
    bins = rec.get("bins") if isinstance(rec.get("bins"), dict) else {}
    sub = next((x for x in (rec.get("dataset_name"), bins.get("dataset")) if isinstance(x, str) and x), None)
    sample = {
        "id": f"{video}#{k}",
        "task": "tg",
        "video": video,
        "duration": duration,
        "segments": [seg],
        "query": query,
        "source": source,
    }
    if sub is not None:
        sample["sub_source"] = sub
    if isinstance(rec.get("qsemtype"), str) and rec["qsemtype"]:
        sample["qsemtype"] = rec["qsemtype"]
    _clip_range(sample, rec.get("start"), rec.get("end"))
    ctx.emit(with_released(sample, [released_segment(raw)]), loc)


def convert_tvgbench(paths: list[str], ctx: Context) -> None:
    """Convert TVGBench ``tvgbench.json`` file(s) (one benchmark split: ``source`` tvgbench:test by default)."""
    counters: dict[str, int] = {}
    for path in paths:
        source = f"tvgbench:{ctx.split or infer_split(path) or 'test'}"
        for i, rec in enumerate(_records(path, TVGBENCH_REQUIRED, TVGBENCH_OPTIONAL)):
            ctx.count(path)
            _tvgbench_one(rec, ctx, where(path, key=f"[{i}]"), source, counters)
