"""THUMOS14 temporal annotations -> tal samples (one per video and class; ``Ambiguous`` instances excluded).

Instances, from any of:

- a csv with columns ``video, type, start, end`` (e.g. ``test_Annotation.csv``, ``val_Annotation.csv``);
- the original evalkit text files ``<Class>_<split>.txt`` (``video start end`` per line), or a directory that
  holds them (``Ambiguous_<split>.txt`` is read and counted as excluded; other files there are ignored);
- an ActivityNet-style ``{"database": {vid: {"subset", "annotations": [{"segment", "label"}]}}}`` json (e.g.
  ``thumos_gt.json``; its segments may be strings).

Durations (required, THUMOS annotations carry none), from a csv with either ``video, fps, count`` (duration =
count / fps, e.g. ``test_video_info.csv``) or ``video-name, video-duration`` (e.g.
``thumos14_test_groundtruth.csv``). ``--split test|val`` keeps one split (from the file name or the video id).
Samples are written sorted by (video, class), so every input form gives the same file.

A csv is told apart by its columns (``CSV_KINDS``): one that has any of a kind's columns must have all of
them; the json needs ``annotations`` per video and ``segment`` / ``label`` per annotation (``subset`` is
optional: else the split comes from the video id). A missing one fails with one line naming it. The same
instance in two inputs (the csv and the evalkit files hold the same annotations) fails: it would count twice.
"""

from __future__ import annotations

import os
import re

from data_pipeline.formats.common import Context, check_fields, csv_header, iter_csv, kind_of, load_json, read_text
from data_pipeline.formats.detection import check_videos, emit_video
from data_pipeline.schema import InputError, clean_duration, to_float, where

DATASET = "thumos14"
AMBIGUOUS = "Ambiguous"
# csv kind -> its columns, in the order the kinds are tried (the first whose distinctive columns are present)
CSV_KINDS = {
    "instances": ("video", "type", "start", "end"),
    "fps_count": ("video", "fps", "count"),
    "name_duration": ("video-name", "video-duration"),
}
_DISTINCT = {"instances": ("type", "start", "end"), "fps_count": ("fps", "count"), "name_duration": ("video-duration",)}


def csv_kind(path: str) -> str:
    """Which THUMOS14 csv ``path`` is (a ``CSV_KINDS`` key); fails naming the missing columns of the closest."""
    header = set(csv_header(path))
    for kind, cols in CSV_KINDS.items():
        if header & set(_DISTINCT[kind]):
            check_fields(path, header, cols)
            return kind
    forms = "; ".join(", ".join(c) for c in CSV_KINDS.values())
    raise InputError(f"{path}: not a THUMOS14 csv: header {sorted(header)} has none of the column sets ({forms})")


def _split_of_video(vid: str) -> str:
    if vid.startswith("video_test_"):
        return "test"
    if vid.startswith("video_validation_"):
        return "val"
    return "unspecified"


def _norm_split(split: str | None) -> str | None:
    if split is None:
        return None
    return {"testing": "test", "validation": "val", "train": "val", "training": "val"}.get(split, split)


def _durations(paths: list[str], ctx: Context) -> dict[str, float]:
    out: dict[str, float] = {}
    for path in paths:
        if csv_kind(path) == "fps_count":
            for line, row in iter_csv(path, CSV_KINDS["fps_count"]):
                ctx.count(path, record=False)
                fps, count = to_float(row["fps"]), to_float(row["count"])
                value = count / fps if fps and count is not None and fps > 0 else f"{row['count']}/{row['fps']}"
                d = clean_duration(value, ctx.report, where(path, line), "count/fps")
                if d is not None:
                    out.setdefault(row["video"], d)
        else:
            for line, row in iter_csv(path, CSV_KINDS["name_duration"]):
                ctx.count(path, record=False)
                d = clean_duration(row["video-duration"], ctx.report, where(path, line), "video-duration")
                if d is not None:
                    out.setdefault(row["video-name"], d)
    return out


def _evalkit_files(paths: list[str]) -> list[tuple[str, str]]:
    """(input given, evalkit file) for each ``<Class>_<split>.txt`` given or found in a directory given."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            names = [f for f in os.listdir(p) if re.fullmatch(r".+_(test|val)\.txt", f)]
            files += [(p, os.path.join(p, f)) for f in sorted(names)]
        else:
            if not re.fullmatch(r".+_(test|val)\.txt", os.path.basename(p)):
                raise InputError(f"{p}: evalkit files are named <Class>_test.txt or <Class>_val.txt")
            files.append((p, p))
    return files


def _json_instances(path: str, ctx: Context, add) -> None:
    data = load_json(path)
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise InputError(f"{path}: expected an ActivityNet-style {{'database': {{video: ...}}}} json")
    check_videos(path, db, ("annotations",), ("subset",), "$.database.<video>")
    for vid, rec in db.items():
        loc = where(path, key=f"database.{vid}")
        anns = rec.get("annotations") if isinstance(rec, dict) else None
        if not isinstance(anns, list) or not anns:
            ctx.count(path)
            if isinstance(anns, list):
                ctx.report.add("no_annotations", loc, "annotations", "video has no annotated instance")
            else:
                ctx.report.add("missing_field", loc, "annotations", "absent or not a list")
            continue
        subset = rec.get("subset")
        vsplit = _norm_split(subset) if isinstance(subset, str) and subset else _split_of_video(vid)
        for i, ann in enumerate(anns):
            ann = ann if isinstance(ann, dict) else {}
            add(path, vid, vsplit, ann.get("label"), ann.get("segment"), f"{loc}.annotations[{i}]")


def _gather(kinds: dict[str, str], instance_csvs: list[str], ctx: Context) -> dict[str, dict]:
    """video -> {split, annotations, locs} from every instance source (csv, evalkit txt, json)."""
    split = _norm_split(ctx.split)
    videos: dict[str, dict] = {}
    first: dict[tuple, tuple[str, str]] = {}  # (video, class, start, end) -> (input, location)

    def add(path: str, vid: str, vsplit: str, label: str, seg, loc: str) -> None:
        ctx.count(path)
        if split is not None and vsplit != split:
            ctx.report.add("other_split", loc, "split", f"{vsplit!r} is not {split!r}")
            return
        if isinstance(seg, (list, tuple)) and len(seg) == 2:
            key = (vid, label, to_float(seg[0]), to_float(seg[1]))
            given, at = first.setdefault(key, (path, loc))
            if given != path:  # within one file a repeated instance is the annotators', and kept
                raise InputError(
                    f"{loc}: {label} instance {list(key[2:])} of {vid} is also in {at}: the same annotations given "
                    "twice (in two forms?); pass one of them"
                )
        v = videos.setdefault(vid, {"split": vsplit, "annotations": [], "locs": []})
        v["annotations"].append({"segment": seg, "label": label})
        v["locs"].append(loc)

    for path in instance_csvs:
        for line, row in iter_csv(path, CSV_KINDS["instances"]):
            vid = row["video"]
            add(path, vid, _split_of_video(vid), row["type"], [row["start"], row["end"]], where(path, line))
    for given, path in _evalkit_files([p for p, k in kinds.items() if k in ("txt", "dir")]):
        label, fsplit = os.path.basename(path)[: -len(".txt")].rsplit("_", 1)
        for lineno, line in enumerate(read_text(path).splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                ctx.count(given)
                ctx.report.add("bad_line", where(path, lineno), "line", f"{line!r} is not 'video start end'")
                continue
            add(given, parts[0], fsplit, label, parts[1:], where(path, lineno))
    for path in [p for p, k in kinds.items() if k == "json"]:
        _json_instances(path, ctx, add)
    return videos


def convert(paths: list[str], ctx: Context) -> None:
    """Convert THUMOS14 annotations (see the module docstring)."""
    kinds = {p: kind_of(p) for p in paths}
    unknown = [p for p, k in kinds.items() if k not in ("csv", "txt", "dir", "json")]
    if unknown:
        raise InputError(f"thumos14: unsupported input(s) {unknown}")
    duration_csvs, instance_csvs = [], []
    for p, k in kinds.items():
        if k == "csv":
            (instance_csvs if csv_kind(p) == "instances" else duration_csvs).append(p)
    if not duration_csvs:
        raise InputError(
            "thumos14 needs a durations csv in --input (video,fps,count as in "
            "test_video_info.csv, or video-name,video-duration as in "
            "thumos14_test_groundtruth.csv)"
        )
    durations = _durations(duration_csvs, ctx)
    videos = _gather(kinds, instance_csvs, ctx)
    for vid in sorted(videos):
        v = videos[vid]
        # Sorted by class name (stable within a class), so samples come out in (video, class) order.
        order = sorted(range(len(v["annotations"])), key=lambda i: str(v["annotations"][i]["label"]))
        anns = [v["annotations"][i] for i in order]
        locs = [v["locs"][i] for i in order]
        if all(a["label"] == AMBIGUOUS for a in anns):
            for a, loc in zip(anns, locs, strict=True):
                ctx.report.add("ambiguous_excluded", loc, "label", f"{a['label']!r} instance excluded")
            continue
        if vid not in durations:
            ctx.report.add(
                "unknown_video",
                locs[0],
                "video",
                f"{vid!r} has no duration in the durations csv ({len(anns)} instances dropped)",
            )
            continue
        emit_video(
            ctx,
            vid,
            durations[vid],
            anns,
            locs[0],
            dataset=DATASET,
            subset=v["split"],
            ambiguous=(AMBIGUOUS,),
            ann_locs=locs,
        )
