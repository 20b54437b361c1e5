"""Charades-STA -> tg samples (id ``<video>#<k>``, k = 0-based index of the query within its video).

Accepted inputs (give the files together in ``--input``):

- the original ``charades_sta_{train,test}.txt`` (``vid start end##sentence`` per line) **plus** the Charades
  ``Charades_v1_{train,test}.csv`` (columns ``id`` and ``length`` = video duration in seconds);
- the TimeZero-style json ``{vid: {"duration", "timestamps", "sentences"}}`` (durations included);
- the coco-caption-style json ``{"annotations": [{"image_id": "VID.mp4", "caption", "timestamp"}]}`` (VTG-LLM)
  plus the Charades csv for durations.

Required: the csv's ``id`` and ``length`` columns; each coco annotation's ``image_id``, ``caption`` and
``timestamp``; for the TimeZero json see ``activitynet_captions``. A file without one of them fails with one
line naming it. A csv row with a blank or invalid ``length`` drops its video's queries, each reported at its
own line with the csv line.

Known quirk of the public files: 562 of the 3720 test queries end after the csv duration; they are clipped to
it (rule ``clipped_end``), so all 3720 queries are kept, and their ``released_segments`` keep the released ends
(what the metrics score, as every official evaluator does).
"""

from __future__ import annotations

from data_pipeline.formats import activitynet_captions
from data_pipeline.formats.common import Context, check_records, iter_csv, kind_of, load_json, read_text, with_released
from data_pipeline.schema import (
    InputError,
    clean_duration,
    clean_segment,
    clean_text,
    infer_split,
    released_segment,
    where,
)

DATASET = "charades_sta"
CSV_REQUIRED = ("id", "length")
COCO_REQUIRED = ("image_id", "caption", "timestamp")


def _durations(csv_paths: list[str], ctx: Context) -> dict[str, tuple[float | None, str]]:
    """video id -> (duration, or None when the csv's length is blank / invalid; the csv FILE:LINE)."""
    out: dict[str, tuple[float | None, str]] = {}
    for path in csv_paths:
        for line, row in iter_csv(path, CSV_REQUIRED):
            ctx.count(path, record=False)
            d = clean_duration(row["length"], ctx.report, where(path, line), "length")
            out[row["id"]] = (d, where(path, line))
    return out


def _emit(ctx: Context, vid: str, k: int, text: str, seg_raw: list, durations, loc: str, source: str) -> None:
    if vid not in durations:
        ctx.report.add("unknown_video", loc, "video", f"{vid!r} is not in the Charades csv (no duration)")
        return
    duration, csv_loc = durations[vid]
    if duration is None:
        ctx.report.add("missing_duration", loc, "video", f"{vid!r} has a blank or invalid length at {csv_loc}")
        return
    seg = clean_segment(seg_raw, duration, ctx.report, loc, "segment")
    if seg is None:
        return
    video = ctx.video(vid)
    sample = {
        "id": f"{video}#{k}",
        "task": "tg",
        "video": video,
        "duration": duration,
        "segments": [seg],
        "query": text,
        "source": source,
    }
    ctx.emit(with_released(sample, [released_segment(seg_raw)]), loc)


def _source(ctx: Context, path: str, csvs: list[str]) -> str:
    split = ctx.split or infer_split(path) or next(filter(None, map(infer_split, csvs)), None)
    return f"{DATASET}:{split or 'unspecified'}"


def _convert_txt(path: str, ctx: Context, durations, source: str) -> None:
    counters: dict[str, int] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        ctx.count(path)
        loc = where(path, lineno)
        head, sep, sent = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3:
            ctx.report.add("bad_line", loc, "line", f"{line[:80]!r} is not 'vid start end##sentence'")
            continue
        vid = parts[0]
        k = counters.get(vid, 0)
        counters[vid] = k + 1
        text = clean_text(sent, ctx.report, loc, "sentence")
        if text is None:
            continue
        _emit(ctx, vid, k, text, [parts[1], parts[2]], durations, loc, source)


def _convert_coco(data: dict, path: str, ctx: Context, durations, source: str) -> None:
    anns = data.get("annotations")
    if not isinstance(anns, list):
        raise InputError(f"{path}: 'annotations' is not a list")
    check_records(path, anns, COCO_REQUIRED, scope="$.annotations[*]")
    counters: dict[str, int] = {}
    for i, ann in enumerate(anns):
        ctx.count(path)
        loc = where(path, key=f"annotations[{i}]")
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not isinstance(image_id, str) or not image_id:
            ctx.report.add("missing_field", loc, "image_id", "absent or not a string")
            continue
        vid = image_id.rsplit(".", 1)[0] if "." in image_id else image_id
        k = counters.get(vid, 0)
        counters[vid] = k + 1
        text = clean_text(ann.get("caption"), ctx.report, loc, "caption")
        if text is None:
            continue
        _emit(ctx, vid, k, text, ann.get("timestamp"), durations, loc, source)


def convert(paths: list[str], ctx: Context) -> None:
    """Convert Charades-STA files (see the module docstring for the accepted combinations)."""
    kinds = {p: kind_of(p) for p in paths}
    csvs = [p for p, k in kinds.items() if k == "csv"]
    durations = _durations(csvs, ctx) if csvs else None
    for path, kind in kinds.items():
        if kind == "csv":
            continue
        if kind == "txt":
            if durations is None:
                raise InputError(
                    f"{path}: the Charades-STA txt needs the Charades csv (id, ..., length) "
                    "for durations: pass it in --input too"
                )
            _convert_txt(path, ctx, durations, _source(ctx, path, csvs))
        elif kind == "json":
            data = load_json(path)
            if isinstance(data, dict) and "annotations" in data:
                if durations is None:
                    raise InputError(f"{path}: coco-style annotations need the Charades csv for durations")
                _convert_coco(data, path, ctx, durations, _source(ctx, path, csvs))
            else:
                split = ctx.split or infer_split(path)
                activitynet_captions.convert_captions(
                    data, path, ctx, task="tg", dataset=DATASET, split=split
                )
        else:
            raise InputError(f"{path}: charades_sta expects .txt + .csv or .json inputs, got {kind}")
