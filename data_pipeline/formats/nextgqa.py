"""NExT-GQA (``{val,test}.csv`` + ``gsub_{val,test}.json``) -> gvqa samples.

id ``<video_id>_<qid>``; ``question``; ``options`` = the csv's ``a0, a1, ...`` columns in order (lettered
A, B, ...); ``answer`` = the letter of the option whose text equals the csv ``answer``; ``segments`` = the
grounding ``location[qid]`` intervals (file order); ``duration`` from the gsub json; ``qtype`` keeps the
question type (CW, CH, TN, TC, TP). Give every csv and its gsub json in ``--input`` (splits may be mixed).
The public val gsub lists 570 videos, 3 of which have no question: the 3358 val questions cover 567 videos.
An answer text equal to several options (test.csv line 3086: 'happy' is both D and E) is dropped.
"""

from __future__ import annotations

import re

from data_pipeline.formats.common import Context, iter_csv, kind_of, load_json
from data_pipeline.schema import (
    OPTION_LETTERS,
    InputError,
    clean_duration,
    clean_segments,
    clean_text,
    infer_split,
    where,
)

DATASET = "nextgqa"


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
        for vid, rec in data.items():
            grounding[str(vid)] = (rec, path)
    used: set[tuple[str, str]] = set()
    for path in csvs:
        source = f"{DATASET}:{ctx.split or infer_split(path) or 'unspecified'}"
        for line, row in iter_csv(path, ("video_id", "qid", "question", "answer", "a0", "a1")):
            ctx.report.records_read += 1
            loc = where(path, line)
            vid, qid = row["video_id"], row["qid"]
            option_cols = sorted((c for c in row if re.fullmatch(r"a\d+", c or "")), key=lambda c: int(c[1:]))
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
            if len(option_cols) > len(OPTION_LETTERS):
                ctx.report.add("missing_field", loc, "options", f"{len(option_cols)} options, at most 8")
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
            ctx.emit(sample, loc)
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
