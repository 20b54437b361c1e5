"""Action detection annotations -> tal samples (``activitynet13``, ``hacs``; also used by ``thumos14``).

One tal sample per (video, action class) with every instance of that class, sorted by (start, end):
id ``<video>#<class>``, ``action`` = the class name.

Accepted inputs:

- the ActivityNet "database" json (``activity_net.v1-3.min.json``; HACS ``HACS_segments_v1.1.1.json`` has the
  same layout): ``{"database": {vid: {"subset", "duration", "annotations": [{"segment", "label"}]}}}``;
- the BSN/BMN ``anet_anno_action.json`` ``{vid: {"duration_second", "annotations"}}``, optionally with
  ``video_info_new.csv`` (columns ``video``, ``subset``) to know each video's subset.

``--split`` keeps one subset (``train``/``val``/``test`` stand for ``training``/``validation``/``testing``).
Videos without annotations (the testing subset) are skipped and counted (``no_annotations``).

Required: ``duration`` (BSN: ``duration_second`` or ``duration``) and ``annotations`` per video, ``segment``
and ``label`` per annotation, ``video`` and ``subset`` in the csv; optional: the database's ``subset`` (else
``unspecified``). A file where no record has a required field fails with one line naming it.
"""

from __future__ import annotations

from typing import Any

from data_pipeline.formats.common import Context, check_records, iter_csv, kind_of, load_json, with_released
from data_pipeline.schema import InputError, clean_duration, clean_segment, clean_text, released_segment, where

SPLIT_ALIASES = {"train": "training", "val": "validation", "test": "testing"}
DATABASE_REQUIRED = ("duration", "annotations")
BSN_REQUIRED = (("duration_second", "duration"), "annotations")
ANNOTATION_REQUIRED = ("segment", "label")
CSV_REQUIRED = ("video", "subset")


def check_videos(path: str, videos: dict, required, optional: tuple[str, ...], scope: str) -> None:
    """The structure check of a {video: {..., "annotations": [{segment, label}]}} mapping (``check_records``)."""
    check_records(path, list(videos.values()), required, optional, scope=scope)
    anns = [a for r in videos.values() if isinstance(r, dict) and isinstance(r.get("annotations"), list)
            for a in r["annotations"]]
    check_records(path, anns, ANNOTATION_REQUIRED, scope=f"{scope}.annotations[*]")


def normalize_split(split: str | None) -> str | None:
    """ActivityNet subset name for a split name (``val`` -> ``validation``)."""
    return None if split is None else SPLIT_ALIASES.get(split, split)


def emit_video(
    ctx: Context,
    vid: str,
    duration_raw: Any,
    annotations: Any,
    loc: str,
    *,
    dataset: str,
    subset: str,
    ambiguous: tuple[str, ...] = (),
    ann_locs: list[str] | None = None,
) -> None:
    """Group one video's annotations by class and emit one tal sample per class.

    ``ann_locs`` (optional, one per annotation) locates each instance (its csv / txt line) in messages."""
    duration = clean_duration(duration_raw, ctx.report, loc)
    if duration is None:
        return
    if not isinstance(annotations, list):
        ctx.report.add("missing_field", loc, "annotations", "absent or not a list")
        return
    if not annotations:
        ctx.report.add("no_annotations", loc, "annotations", "video has no annotated instance")
        return
    by_class: dict[str, list[list[float]]] = {}
    released: dict[str, list[list[float] | None]] = {}  # the raw instances the metrics score (with_released)
    for i, ann in enumerate(annotations):
        aloc, field = (ann_locs[i], "") if ann_locs else (loc, f"annotations[{i}].")
        if not isinstance(ann, dict):
            ctx.report.add("bad_segment", aloc, field.rstrip("."), "not an object with 'segment' and 'label'")
            continue
        label = clean_text(ann.get("label"), ctx.report, aloc, f"{field}label")
        if label is None:
            continue
        if label in ambiguous:
            ctx.report.add("ambiguous_excluded", aloc, f"{field}label", f"{label!r} instance excluded")
            continue
        seg = clean_segment(ann.get("segment"), duration, ctx.report, aloc, f"{field}segment")
        by_class.setdefault(label, [])
        released.setdefault(label, []).append(released_segment(ann.get("segment")))
        if seg is not None:
            by_class[label].append(seg)
    video = ctx.video(vid)
    for label, segs in by_class.items():
        if not segs:
            ctx.report.add("no_segments", loc, "annotations", f"class {label!r} has no valid instance left")
            continue
        sample = {
            "id": f"{video}#{label}",
            "task": "tal",
            "video": video,
            "duration": duration,
            "segments": sorted(segs),
            "action": label,
            "source": f"{dataset}:{subset}",
        }
        ctx.emit(with_released(sample, sorted(r for r in released[label] if r is not None)), loc)


def _subsets_from_csv(paths: list[str], ctx: Context) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in paths:
        for _, row in iter_csv(path, CSV_REQUIRED):
            ctx.count(path, record=False)
            out[row["video"]] = row["subset"]
    return out


def convert(paths: list[str], ctx: Context, *, dataset: str) -> None:
    """Convert ActivityNet-1.3 / HACS detection annotations (see the module docstring)."""
    kinds = {p: kind_of(p) for p in paths}
    csvs = [p for p, k in kinds.items() if k == "csv"]
    subsets = _subsets_from_csv(csvs, ctx) if csvs else {}
    split = normalize_split(ctx.split)
    for path, kind in kinds.items():
        if kind == "csv":
            continue
        if kind != "json":
            raise InputError(f"{path}: {dataset} expects a .json annotation file (plus an optional .csv)")
        data = load_json(path)
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object")
        if "database" in data:
            db = data["database"]
            if not isinstance(db, dict):
                raise InputError(f"{path}: 'database' is not an object")
            check_videos(path, db, DATABASE_REQUIRED, ("subset",), "$.database.<video>")
            for vid, rec in db.items():
                ctx.count(path)
                loc = where(path, key=f"database.{vid}")
                if not isinstance(rec, dict):
                    ctx.report.add("missing_field", loc, vid, "video entry is not an object")
                    continue
                subset = rec.get("subset")
                subset = subset if isinstance(subset, str) and subset else "unspecified"
                if split is not None and subset != split:
                    ctx.report.add("other_split", loc, "subset", f"{subset!r} is not {split!r}")
                    continue
                emit_video(
                    ctx, vid, rec.get("duration"), rec.get("annotations"), loc, dataset=dataset, subset=subset
                )
        else:  # BSN / BMN layout
            if split is not None and not subsets:
                raise InputError(f"{path}: --split needs the video info csv (video, subset) for this layout")
            check_videos(path, data, BSN_REQUIRED, (), "$.<video>")
            for vid, rec in data.items():
                ctx.count(path)
                loc = where(path, key=vid)
                if not isinstance(rec, dict):
                    ctx.report.add("missing_field", loc, vid, "video entry is not an object")
                    continue
                subset = subsets.get(vid, "unspecified")
                if split is not None and subset != split:
                    ctx.report.add("other_split", loc, "subset", f"{subset!r} is not {split!r}")
                    continue
                dur = rec.get("duration_second", rec.get("duration"))
                emit_video(ctx, vid, dur, rec.get("annotations"), loc, dataset=dataset, subset=subset)
