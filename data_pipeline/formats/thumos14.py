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
"""

from __future__ import annotations

import os
import re

from data_pipeline.formats.common import Context, csv_header, iter_csv, kind_of, load_json, read_text
from data_pipeline.formats.detection import emit_video
from data_pipeline.schema import InputError, Report, clean_duration, to_float, where

DATASET = "thumos14"
AMBIGUOUS = "Ambiguous"


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


def _durations(paths: list[str], report: Report) -> dict[str, float]:
    out: dict[str, float] = {}
    for path in paths:
        header = csv_header(path)
        if {"video", "fps", "count"} <= set(header):
            for line, row in iter_csv(path, ("video", "fps", "count")):
                fps, count = to_float(row["fps"]), to_float(row["count"])
                value = count / fps if fps and count is not None and fps > 0 else None
                d = clean_duration(value, report, where(path, line), "count/fps")
                if d is not None:
                    out.setdefault(row["video"], d)
        else:
            for line, row in iter_csv(path, ("video-name", "video-duration")):
                d = clean_duration(row["video-duration"], report, where(path, line), "video-duration")
                if d is not None:
                    out.setdefault(row["video-name"], d)
    return out


def _evalkit_files(paths: list[str]) -> list[str]:
    files = []
    for p in paths:
        if os.path.isdir(p):
            names = [f for f in os.listdir(p) if re.fullmatch(r".+_(test|val)\.txt", f)]
            files += sorted(os.path.join(p, f) for f in names)
        else:
            if not re.fullmatch(r".+_(test|val)\.txt", os.path.basename(p)):
                raise InputError(f"{p}: evalkit files are named <Class>_test.txt or <Class>_val.txt")
            files.append(p)
    return files


def convert(paths: list[str], ctx: Context) -> None:
    """Convert THUMOS14 annotations (see the module docstring)."""
    kinds = {p: kind_of(p) for p in paths}
    split = _norm_split(ctx.split)
    duration_csvs, instance_csvs = [], []
    for p, k in kinds.items():
        if k != "csv":
            continue
        header = set(csv_header(p))
        if {"video", "type", "start", "end"} <= header:
            instance_csvs.append(p)
        elif {"video", "fps", "count"} <= header or {"video-name", "video-duration"} <= header:
            duration_csvs.append(p)
        else:
            raise InputError(f"{p}:1: unrecognised THUMOS14 csv header {sorted(header)}")
    if not duration_csvs:
        raise InputError(
            "thumos14 needs a durations csv in --input (video,fps,count as in "
            "test_video_info.csv, or video-name,video-duration as in "
            "thumos14_test_groundtruth.csv)"
        )
    durations = _durations(duration_csvs, ctx.report)

    # video -> split, annotations and their locations; every source is gathered first, then emitted sorted.
    videos: dict[str, dict] = {}

    def add(vid: str, vsplit: str, label: str, seg, loc: str) -> None:
        ctx.report.records_read += 1
        if split is not None and vsplit != split:
            ctx.report.add("other_split", loc, "split", f"{vsplit!r} is not {split!r}")
            return
        v = videos.setdefault(vid, {"split": vsplit, "annotations": [], "locs": []})
        v["annotations"].append({"segment": seg, "label": label})
        v["locs"].append(loc)

    for path in instance_csvs:
        for line, row in iter_csv(path, ("video", "type", "start", "end")):
            add(
                row["video"],
                _split_of_video(row["video"]),
                row["type"],
                [row["start"], row["end"]],
                where(path, line),
            )
    txts = [p for p, k in kinds.items() if k in ("txt", "dir")]
    for path in _evalkit_files(txts):
        name = os.path.basename(path)
        label, fsplit = name[: -len(".txt")].rsplit("_", 1)
        for lineno, line in enumerate(read_text(path).splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                ctx.report.records_read += 1
                ctx.report.add("bad_line", where(path, lineno), "line", f"{line!r} is not 'video start end'")
                continue
            add(parts[0], fsplit, label, parts[1:], where(path, lineno))
    for path, kind in kinds.items():
        if kind != "json":
            continue
        data = load_json(path)
        db = data.get("database") if isinstance(data, dict) else None
        if not isinstance(db, dict):
            raise InputError(f"{path}: expected an ActivityNet-style {{'database': {{video: ...}}}} json")
        for vid, rec in db.items():
            anns = rec.get("annotations") if isinstance(rec, dict) else None
            vsplit = _norm_split(str(rec.get("subset"))) if isinstance(rec, dict) else "unspecified"
            for i, ann in enumerate(anns if isinstance(anns, list) else []):
                ann = ann if isinstance(ann, dict) else {}
                add(
                    vid,
                    vsplit,
                    ann.get("label"),
                    ann.get("segment"),
                    where(path, key=f"database.{vid}.annotations[{i}]"),
                )
    unknown = [p for p, k in kinds.items() if k not in ("csv", "txt", "dir", "json")]
    if unknown:
        raise InputError(f"thumos14: unsupported input(s) {unknown}")

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
