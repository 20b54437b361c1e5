"""NExT-GQA (``{val,test}.csv`` + ``gsub_{val,test}.json``) -> gvqa samples.

id ``<video_id>_<qid>``; ``question``; ``options`` = the csv's ``a0, a1, ...`` columns in order (lettered
A, B, ...); ``answer`` = the letter of the option whose text equals the csv ``answer``; ``segments`` = the
grounding ``location[qid]`` intervals (file order); ``duration`` from the gsub json; ``qtype`` keeps the
question type (CW, CH, TN, TC, TP). Give every csv and its gsub json in ``--input`` (splits may be mixed).
Required csv columns ``CSV_REQUIRED`` (NExT-GQA has 5 options, a0..a4); optional ``CSV_OPTIONAL`` (``type``,
and further options a5..a7 in order, without a gap); each gsub video entry needs ``duration`` and ``location``. A file
without one of them fails with one line naming it.
The public val gsub lists 570 videos, 3 of which have no question: the 3358 val questions cover 567 videos.
An answer text equal to several options (test.csv line 3086: 'happy' is both D and E) is dropped.
"""

from __future__ import annotations

import re

from data_pipeline.formats.common import (
    Context,
    check_records,
    csv_header,
    iter_csv,
    kind_of,
    load_json,
    with_released,
)
from data_pipeline.schema import (
    OPTION_LETTERS,
    InputError,
    clean_duration,
    clean_segments,
    clean_text,
    infer_split,
    released_segment,
    where,
)

DATASET = "nextgqa"
CSV_REQUIRED = ("video_id", "qid", "question", "answer", "a0", "a1", "a2", "a3", "a4")
CSV_OPTIONAL = ("type", "further options a5..a7 without a gap")
GSUB_REQUIRED = ("duration", "location")


def _option_columns(path: str) -> tuple[list[str], tuple[str, ...]]:
    """The csv's option columns in order, and the required columns (a gap below the last option is missing)."""
    header = csv_header(path)
    numbers = sorted(int(c[1:]) for c in header if re.fullmatch(r"a\d+", c))
    if numbers and numbers[-1] >= len(OPTION_LETTERS):
        raise InputError(
            f"{path}: column a{numbers[-1]}: at most {len(OPTION_LETTERS)} options (a0..a{len(OPTION_LETTERS) - 1})"
        )
    last = max([4, *numbers])
    cols = [f"a{i}" for i in range(last + 1)]
    return cols, CSV_REQUIRED + tuple(cols[5:last])


def convert(paths: list[str], ctx: Context) -> None:
    """Convert NExT-GQA csv + gsub json files."""
    kinds = {p: kind_of(p) for p in paths}
    csvs = [p for p, k in kinds.items() if k == "csv"]
    jsons = [p for p, k in kinds.items() if k == "json"]
    other = [p for p, k in kinds.items() if k not in ("csv", "json")]
    if other or not csvs or not jsons:
        raise InputError(
            "nextgqa expects the QA csv(s) and the grounding gsub_*.json file(s) in --input, "
            f"got {len(csvs)} csv, {len(jsons)} json, other: {other}"
        )
    grounding: dict[str, tuple[dict, str]] = {}
    for path in jsons:
        data = load_json(path)
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected {{video_id: {{duration, location, fps}}}}")
        check_records(path, list(data.values()), GSUB_REQUIRED, scope="$.<video_id>")
        for vid, rec in data.items():
            ctx.count(path, record=False)
            if vid in grounding:
                raise InputError(f"{path}: video {vid!r} is also in {grounding[vid][1]}: which grounding to use?")
            grounding[str(vid)] = (rec, path)
    used: set[tuple[str, str]] = set()
    for path in csvs:
        source = f"{DATASET}:{ctx.split or infer_split(path) or 'unspecified'}"
        option_cols, required = _option_columns(path)
        for line, row in iter_csv(path, required, CSV_OPTIONAL):
            ctx.count(path)
            loc = where(path, line)
            vid, qid = row["video_id"], row["qid"]
            if not vid or not qid:
                ctx.report.add("missing_field", loc, "video_id" if not vid else "qid", "empty")
                continue
            if vid not in grounding:
                ctx.report.add("unknown_video", loc, "video_id", f"{vid!r} is not in the gsub grounding json")
                continue
            rec, gpath = grounding[vid]
            gloc = where(gpath, key=vid)
            location = rec.get("location") if isinstance(rec, dict) else None
            if not isinstance(location, dict) or qid not in location:
                ctx.report.add(
                    "missing_field",
                    loc,
                    f"location[{qid}]",
                    f"question {qid} of video {vid} has no grounding in {gpath}",
                )
                continue
            used.add((vid, qid))
            question = clean_text(row["question"], ctx.report, loc, "question")
            if question is None:
                continue
            options = [" ".join((row[c] or "").split()) for c in option_cols]
            if any(not o for o in options):
                ctx.report.add("missing_field", loc, option_cols[options.index("")], "empty option")
                continue
            answer = " ".join((row["answer"] or "").split())
            hits = [i for i, o in enumerate(options) if o == answer]
            if not hits:
                ctx.report.add("answer_not_in_options", loc, "answer", f"{answer!r} is none of {options}")
                continue
            if len(hits) > 1:
                ctx.report.add(
                    "ambiguous_answer",
                    loc,
                    "answer",
                    f"{answer!r} equals options {[OPTION_LETTERS[i] for i in hits]}",
                )
                continue
            duration = clean_duration(rec.get("duration"), ctx.report, gloc)
            if duration is None:
                continue
            segs = clean_segments(location[qid], duration, ctx.report, f"{gloc}.location.{qid}", "segments")
            if not segs:
                ctx.report.add("no_segments", loc, f"location[{qid}]", "no valid evidence interval left")
                continue
            video = ctx.video(vid)
            raws = location[qid] if isinstance(location[qid], list) else []
            sample = {
                "id": f"{video}_{qid}",
                "task": "gvqa",
                "video": video,
                "duration": duration,
                "segments": segs,
                "question": question,
                "options": options,
                "answer": OPTION_LETTERS[hits[0]],
                "source": source,
            }
            if row.get("type"):
                sample["qtype"] = row["type"]
            ctx.emit(with_released(sample, [released_segment(r) for r in raws]), loc)
    for vid, (rec, gpath) in grounding.items():
        location = rec.get("location") if isinstance(rec, dict) else None
        for qid in location or {}:
            if (vid, qid) not in used:
                ctx.report.add(
                    "unused_grounding",
                    where(gpath, key=f"{vid}.location.{qid}"),
                    "qid",
                    "no csv row asks this question",
                )
