"""QVHighlights jsonl (``highlight_{train,val}_release.jsonl``, ``highlight_test_with_gt.jsonl``) -> vhd.

One sample per line: id = the dataset's ``qid`` (as a string), ``query``, ``video`` = ``vid``, ``duration``,
``segments`` = ``relevant_windows`` (file order; overlapping windows are kept, the rewards merge them). The
highlight metrics' fields ``relevant_clip_ids`` and ``saliency_scores`` are kept when present (``OPTIONAL``).
Every line needs ``REQUIRED``: a line without one is dropped with ``missing_field``; a file where no line has
one (e.g. ``relevant_windows`` in the GT-less test release) fails with one line naming it.
"""

from __future__ import annotations

import json

from data_pipeline.formats.common import Context, check_records, kind_of, read_lines, with_released
from data_pipeline.schema import (
    InputError,
    clean_duration,
    clean_segments,
    clean_text,
    infer_split,
    released_segment,
    where,
)

DATASET = "qvhighlights"
REQUIRED = ("qid", "query", "vid", "duration", "relevant_windows")
OPTIONAL = KEEP = ("relevant_clip_ids", "saliency_scores")


def _parse_lines(path: str) -> list[tuple[int, object]]:
    """(line number, parsed value or the JSONDecodeError) of the non-blank lines."""
    out: list[tuple[int, object]] = []
    for lineno, line in read_lines(path):
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            out.append((lineno, e))
    return out


def convert(paths: list[str], ctx: Context) -> None:
    """Convert QVHighlights jsonl files."""
    for path in paths:
        if kind_of(path) != "jsonl":
            raise InputError(f"{path}: qvhighlights expects .jsonl files (one JSON object per line)")
        source = f"{DATASET}:{ctx.split or infer_split(path) or 'unspecified'}"
        lines = _parse_lines(path)
        check_records(path, [rec for _, rec in lines], REQUIRED, OPTIONAL)
        for lineno, rec in lines:
            ctx.count(path)
            loc = where(path, lineno)
            if isinstance(rec, json.JSONDecodeError):
                what = rec.msg.removesuffix(" at")  # "Unterminated string starting at" + " at column N"
                ctx.report.add("bad_json", loc, "line", f"not valid JSON ({what} at column {rec.colno})")
                continue
            if not isinstance(rec, dict):
                ctx.report.add("bad_json", loc, "line", f"a JSON {type(rec).__name__}, not an object")
                continue
            qid = rec.get("qid")
            if isinstance(qid, bool) or not isinstance(qid, (int, str)) or str(qid) == "":
                ctx.report.add("missing_field", loc, "qid", f"{qid!r} is not an id")
                continue
            vid = rec.get("vid")
            if not isinstance(vid, str) or not vid:
                ctx.report.add("missing_field", loc, "vid", f"{vid!r} is not a video id")
                continue
            query = clean_text(rec.get("query"), ctx.report, loc, "query")
            if query is None:
                continue
            duration = clean_duration(rec.get("duration"), ctx.report, loc)
            if duration is None:
                continue
            if "relevant_windows" not in rec:
                ctx.report.add("missing_field", loc, "relevant_windows", "absent (no ground truth)")
                continue
            segs = clean_segments(rec["relevant_windows"], duration, ctx.report, loc, "relevant_windows")
            if not segs:
                ctx.report.add("no_segments", loc, "relevant_windows", "no valid window left")
                continue
            video = ctx.video(vid)
            raws = rec["relevant_windows"] if isinstance(rec["relevant_windows"], list) else []
            sample = {
                "id": str(qid),
                "task": "vhd",
                "video": video,
                "duration": duration,
                "segments": segs,
                "query": query,
                "source": source,
            }
            for k in KEEP:
                if k in rec:
                    sample[k] = rec[k]
            ctx.emit(with_released(sample, [released_segment(r) for r in raws]), loc)
