"""QVHighlights jsonl (``highlight_{train,val}_release.jsonl``, ``highlight_test_with_gt.jsonl``) -> vhd.

One sample per line: id = the dataset's ``qid`` (as a string), ``query``, ``video`` = ``vid``, ``duration``,
``segments`` = ``relevant_windows`` (file order; overlapping windows are kept, the rewards merge them). The
highlight metrics' fields ``relevant_clip_ids`` and ``saliency_scores`` are kept when present. A line without
``relevant_windows`` (the GT-less test release) is dropped with ``missing_field``.
"""

from __future__ import annotations

import json

from data_pipeline.formats.common import Context, kind_of
from data_pipeline.schema import (
    InputError,
    clean_duration,
    clean_segments,
    clean_text,
    infer_split,
    iter_jsonl,
    where,
)

DATASET = "qvhighlights"
KEEP = ("relevant_clip_ids", "saliency_scores")


def convert(paths: list[str], ctx: Context) -> None:
    """Convert QVHighlights jsonl files."""
    for path in paths:
        if kind_of(path) != "jsonl":
            raise InputError(f"{path}: qvhighlights expects .jsonl files (one JSON object per line)")
        source = f"{DATASET}:{ctx.split or infer_split(path) or 'unspecified'}"
        for lineno, line in iter_jsonl(path):
            ctx.report.records_read += 1
            loc = where(path, lineno)
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                ctx.report.add("bad_json", loc, "line", f"not valid JSON ({e.msg} at column {e.colno})")
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
            ctx.emit(sample, loc)
