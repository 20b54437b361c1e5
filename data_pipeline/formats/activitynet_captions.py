"""ActivityNet-Captions-style JSON ``{video: {"duration", "timestamps", "sentences"}}`` -> tg or dtg samples.

Used by ``activitynet_captions_tg`` (one tg sample per sentence, id ``<video>#<k>``),
``activitynet_captions_dtg`` and ``youcook2`` (one dtg sample per video, queries in sentence order, id
``<video>``), and by ``charades_sta`` for the TimeZero-style json (same layout). A dtg query whose segment
is dropped is dropped with it (so queries and segments stay paired) and reported; a clipped segment keeps its
released bounds in ``released_segments`` (one per query), which the metrics score. Each video entry needs
``REQUIRED``; a file where no entry has one of them fails with one line naming it (an entry without it is
dropped and reported).
"""

from __future__ import annotations

from typing import Any

from data_pipeline.formats.common import Context, check_records, kind_of, load_json, with_released
from data_pipeline.schema import (
    InputError,
    clean_duration,
    clean_segment,
    clean_text,
    infer_split,
    released_segment,
    where,
)

REQUIRED = ("duration", "timestamps", "sentences")


def convert_captions(
    data: Any, path: str, ctx: Context, *, task: str, dataset: str, split: str | None
) -> None:
    """Emit the samples of one parsed captions document into ``ctx``."""
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {{video: {{duration, timestamps, sentences}}}}")
    check_records(path, list(data.values()), REQUIRED, scope="$.<video>")
    source = f"{dataset}:{split or 'unspecified'}"
    for vid, rec in data.items():
        ctx.count(path)
        loc = where(path, key=vid)
        if not isinstance(rec, dict):
            ctx.report.add("missing_field", loc, vid, "video entry is not an object")
            continue
        missing = [f for f in ("timestamps", "sentences") if not isinstance(rec.get(f), list)]
        if missing:
            ctx.report.add("missing_field", loc, missing[0], "absent or not a list")
            continue
        duration = clean_duration(rec.get("duration"), ctx.report, loc)
        if duration is None:
            continue
        stamps, sents = rec["timestamps"], rec["sentences"]
        if len(stamps) != len(sents):
            ctx.report.add(
                "length_mismatch", loc, "timestamps", f"{len(stamps)} timestamps but {len(sents)} sentences"
            )
            continue
        video = ctx.video(vid)
        pairs = []
        for k, (raw, sent) in enumerate(zip(stamps, sents, strict=True)):
            text = clean_text(sent, ctx.report, loc, f"sentences[{k}]")
            seg = clean_segment(raw, duration, ctx.report, loc, f"timestamps[{k}]")
            if text is not None and seg is not None:
                pairs.append((k, text, seg, released_segment(raw)))
        if task == "tg":
            for k, text, seg, rel in pairs:
                sample = {
                    "id": f"{video}#{k}",
                    "task": "tg",
                    "video": video,
                    "duration": duration,
                    "segments": [seg],
                    "query": text,
                    "source": source,
                }
                ctx.emit(with_released(sample, [rel]), f"{loc}.sentences[{k}]")
        else:
            if not pairs:
                ctx.report.add("no_segments", loc, "timestamps", "no (sentence, segment) pair left")
                continue
            sample = {
                "id": video,
                "task": "dtg",
                "video": video,
                "duration": duration,
                "segments": [p[2] for p in pairs],
                "queries": [p[1] for p in pairs],
                "source": source,
            }
            ctx.emit(with_released(sample, [p[3] for p in pairs]), loc)


def convert(paths: list[str], ctx: Context, *, task: str, dataset: str) -> None:
    """Convert ActivityNet-Captions-format JSON files (train / val_1 / val_2 / YouCook2 via PDVC ...)."""
    for path in paths:
        if kind_of(path) != "json":
            raise InputError(f"{path}: {dataset} expects ActivityNet-Captions-style .json files")
        split = ctx.split or infer_split(path)
        convert_captions(load_json(path), path, ctx, task=task, dataset=dataset, split=split)
