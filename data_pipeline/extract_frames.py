"""``python -m data_pipeline.extract_frames``: videos -> sampled JPEG frames in sharded TFRecords + an index.

    python -m data_pipeline.extract_frames --videos /data/charades/videos --output /data/charades/frames \\
        --fps 2 --max-frames 448 [--only-samples charades_test.jsonl] [--workers 8]

- Decodes with PyAV in parallel worker processes (``--workers``; 0 decodes in this process), samples at
  ``--fps`` with a uniform cap of ``--max-frames`` (see ``data_pipeline.frames``), scales frames down to at
  most ``--max-pixels`` and stores them as JPEG, one record per video (format in ``data_pipeline.records``).
- Resumable: each shard and its index are committed atomically every ``--videos-per-shard`` videos; a rerun
  skips every video already in an index (and refuses different sampling settings for the same output).
- A corrupt, truncated (rule in ``data_pipeline.frames``) or unreadable video is reported and skipped, never
  aborting the run; the failures go to ``failed.jsonl`` and a summary to ``extract_summary.json``. A video
  whose frames end short of its header by less than the rule's tolerance is kept as the shorter video with a
  warning (printed, and listed under ``warnings`` in the summary). Exit 0, or 1 with ``--strict`` if any
  video failed, or 2 on bad usage or when there is nothing to extract (one-line reason).

Video ids are file stems (``v_abc.mp4`` -> ``v_abc``), matching the samples' ``video`` field.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import time
import uuid
from typing import Any

from data_pipeline import fileio, frames, records


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sampling settings recorded in ``frames-config.json`` (a resumed run must use the same)."""

    fps: float = 2.0
    max_frames: int = 448
    max_pixels: int = 768 * 28 * 28
    jpeg_qscale: int = 3


def list_videos(spec: str) -> list[str]:
    """Video paths from a directory (recursive), one video file, or a text list (one path per line)."""
    if os.path.isdir(spec):
        out = []
        for root, dirs, files in os.walk(spec):
            dirs.sort()
            out += [
                os.path.join(root, f) for f in sorted(files) if f.lower().endswith(frames.VIDEO_EXTENSIONS)
            ]
        return out
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"--videos {spec}: no such directory or file")
    if spec.lower().endswith(frames.VIDEO_EXTENSIONS):
        return [spec]
    base = os.path.dirname(os.path.abspath(spec))
    try:
        with open(spec, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
    except UnicodeDecodeError as e:
        raise ValueError(f"--videos {spec}: neither a video nor a UTF-8 text list of paths ({e.reason})") from None
    return [
        ln if os.path.isabs(ln) else os.path.join(base, ln) for ln in lines if ln and not ln.startswith("#")
    ]


def video_id(path: str) -> str:
    """The id of a video file: its name without the last extension."""
    name = os.path.basename(path)
    return name.rsplit(".", 1)[0] if "." in name else name


def _work(path: str, vid: str, settings: Settings) -> tuple[str, str, Any]:
    """Worker: ("ok", vid, ExtractedVideo) or ("failed", vid, reason)."""
    try:
        ev = frames.extract_video(
            path,
            vid,
            fps=settings.fps,
            max_frames=settings.max_frames,
            max_pixels=settings.max_pixels or None,
            jpeg_qscale=settings.jpeg_qscale,
        )
        return "ok", vid, ev
    except frames.VideoError as e:
        return "failed", vid, str(e)
    except Exception as e:  # noqa: BLE001 - a bad video must never abort the run
        return "failed", vid, f"{type(e).__name__}: {e}"


class ShardWriter:
    """Writes records into ``frames-<run>-<k>.tfrecord``; ``commit`` renames the shard, writes its index."""

    def __init__(self, out_dir: str, videos_per_shard: int, settings: Settings) -> None:
        self.out_dir, self.videos_per_shard, self.settings = out_dir, videos_per_shard, settings
        self.run = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.shards = 0
        self._writer = None
        self._entries: list[dict[str, Any]] = []
        self._offset = 0

    def _name(self) -> str:
        return f"frames-{self.run}-{self.shards:05d}{records.SHARD_SUFFIX}"

    def add(self, ev: frames.ExtractedVideo) -> None:
        """Append one video; commits the shard when it is full."""
        import tensorflow as tf

        data = records.serialize(ev, fps=self.settings.fps, max_frames=self.settings.max_frames)
        if self._writer is None:
            self._writer = tf.io.TFRecordWriter(fileio.join(self.out_dir, self._name() + ".tmp"))
            self._offset = 0
        self._writer.write(data)
        self._entries.append(
            {
                "video": ev.video,
                "shard": self._name(),
                "offset": self._offset,
                "length": len(data),
                "num_frames": len(ev.jpegs),
                "duration": ev.duration,
                "width": ev.width,
                "height": ev.height,
                "source_fps": ev.source_fps,
                "fps": self.settings.fps,
                "max_frames": self.settings.max_frames,
                "path": ev.path,
            }
        )
        self._offset += records.record_size(len(data))
        if len(self._entries) >= self.videos_per_shard:
            self.commit()

    def commit(self) -> None:
        """Close the open shard (if any), move it in place, then write its index (the commit point)."""
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        name = self._name()
        fileio.rename(fileio.join(self.out_dir, name + ".tmp"), fileio.join(self.out_dir, name))
        index = fileio.join(self.out_dir, name[: -len(records.SHARD_SUFFIX)] + records.INDEX_SUFFIX)
        with fileio.open_file(index + ".tmp", "w") as f:
            for e in self._entries:
                f.write(json.dumps(e) + "\n")
        fileio.rename(index + ".tmp", index)
        self._entries = []
        self.shards += 1


def _check_settings(out_dir: str, settings: Settings) -> None:
    path = fileio.join(out_dir, records.CONFIG_NAME)
    if fileio.exists(path):
        with fileio.open_file(path, "r") as f:
            try:
                old = json.load(f)
            except json.JSONDecodeError as e:
                where = f"{path}:{e.lineno}:{e.colno}"
                raise ValueError(f"{where}: not valid JSON ({e.msg}); not an extract_frames output?") from None
        if old != dataclasses.asdict(settings):
            raise ValueError(
                f"{path}: this output was extracted with {old}; now asked for "
                f"{dataclasses.asdict(settings)} (use another --output or the same settings)"
            )
    else:
        with fileio.open_file(path, "w") as f:
            json.dump(dataclasses.asdict(settings), f)


def run(
    videos: list[str],
    out_dir: str,
    settings: Settings,
    *,
    workers: int = 0,
    videos_per_shard: int = 64,
    only: set[str] | None = None,
    annotated: dict[str, list[tuple[str, float]]] | None = None,
    progress: bool = True,
    log=sys.stderr,
) -> dict[str, Any]:
    """Extract ``videos`` into ``out_dir``; returns the summary (also written as extract_summary.json).

    annotated: video id -> [(sample id, annotated duration s)] (``sample_videos``): the samples annotated
    longer than their extracted video (``frames.shorter_than_annotation``) are counted in the summary."""
    fileio.makedirs(out_dir)
    _check_settings(out_dir, settings)
    start = time.time()
    seen: dict[str, str] = {}
    duplicates = []
    todo: list[tuple[str, str]] = []
    done = set(records.load_index(out_dir))
    skipped_done = 0
    for path in videos:
        vid = video_id(path)
        if vid in seen:
            duplicates.append({"video": vid, "path": path, "error": f"duplicate video id; kept {seen[vid]}"})
            continue
        seen[vid] = path
        if only is not None and vid not in only:
            continue
        if vid in done:
            skipped_done += 1
            continue
        todo.append((path, vid))
    missing = sorted(only - set(seen)) if only is not None else []
    failures: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    writer = ShardWriter(out_dir, videos_per_shard, settings)
    n_frames = 0
    extracted = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="extract_frames", unit="video", file=log, disable=None)

    def handle(result) -> None:
        nonlocal n_frames, extracted
        status, vid, payload = result
        if status == "ok":
            if payload.warning:
                warnings.append({"video": vid, "path": seen[vid], "warning": payload.warning})
                print(f"extract_frames: warning: {seen[vid]}: {payload.warning}", file=log)
            writer.add(payload)
            n_frames += len(payload.jpegs)
            extracted += 1
        else:
            failures.append({"video": vid, "path": seen[vid], "error": payload})
            print(f"extract_frames: skipped {seen[vid]}: {payload}", file=log)
        if bar is not None:
            bar.update(1)

    try:
        if workers <= 0:
            for path, vid in todo:
                handle(_work(path, vid, settings))
        else:
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                window: collections.deque = collections.deque()
                it = iter(todo)
                for path, vid in it:  # bounded look-ahead, results consumed in input order
                    window.append(pool.submit(_work, path, vid, settings))
                    if len(window) >= 2 * workers:
                        handle(window.popleft().result())
                while window:
                    handle(window.popleft().result())
    finally:
        writer.commit()
        if bar is not None:
            bar.close()
    summary = {
        "videos_listed": len(videos),
        "to_extract": len(todo),
        "extracted": extracted,
        "already_done": skipped_done,
        "failed": len(failures),
        "kept_shorter": len(warnings),
        "duplicates": len(duplicates),
        "missing_for_samples": len(missing),
        "frames_written": n_frames,
        "shards_written": writer.shards,
        "seconds": round(time.time() - start, 3),
        "settings": dataclasses.asdict(settings),
        "failures": failures + duplicates,
        "warnings": warnings,
        "missing_examples": missing[:50],
    }
    summary |= shorter_than_samples(records.load_index(out_dir), annotated or {})
    with fileio.open_file(fileio.join(out_dir, "failed.jsonl"), "w") as f:
        for item in failures + duplicates:
            f.write(json.dumps(item) + "\n")
    with fileio.open_file(fileio.join(out_dir, "extract_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def shorter_than_samples(index: dict[str, dict[str, Any]],
                         annotated: dict[str, list[tuple[str, float]]]) -> dict[str, Any]:
    """``{"shorter_than_samples": samples, "shorter_videos": videos, "shorter_examples": [...]}``: samples whose
    annotated duration exceeds their extracted video's by more than ``frames.ANNOTATION_SLACK_S``."""
    rows = []
    for vid in sorted(set(index) & set(annotated)):
        got = float(index[vid]["duration"])
        rows += [{"video": vid, "id": sid, "annotated": d, "extracted": got}
                 for sid, d in annotated[vid] if frames.shorter_than_annotation(d, got)]
    return {"shorter_than_samples": len(rows), "shorter_videos": len({r["video"] for r in rows}),
            "shorter_examples": rows[:50]}


def _parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m data_pipeline.extract_frames",
        description="Sample video frames into sharded TFRecords (+ index) with PyAV.",
    )
    p.add_argument(
        "--videos",
        required=True,
        help="a directory (searched recursively), a video file, or a "
        "text file listing one video path per line",
    )
    p.add_argument("--output", required=True, help="output directory (local or gs://)")
    p.add_argument("--fps", type=float, default=d.fps, help="sampling rate in frames per second (default 2)")
    p.add_argument(
        "--max-frames", type=int, default=d.max_frames, help="uniform cap on frames per video (default 448)"
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=d.max_pixels,
        help="scale stored frames down to at most "
        "this many pixels; 0 keeps the source size (default 768*28*28)",
    )
    p.add_argument("--jpeg-qscale", type=int, default=d.jpeg_qscale, help="JPEG quantizer 2 (best) .. 31")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (0: inline)")
    p.add_argument("--videos-per-shard", type=int, default=64, help="videos per TFRecord shard")
    p.add_argument(
        "--only-samples",
        nargs="+",
        default=None,
        metavar="SAMPLES.jsonl",
        help="extract only the videos these samples files refer to",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 if any video failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF writes the shards: keep its start-up chatter out
    err = sys.stderr
    try:
        if args.fps <= 0 or args.max_frames < 1 or args.max_pixels < 0 or not 2 <= args.jpeg_qscale <= 31:
            raise ValueError("need --fps > 0, --max-frames >= 1, --max-pixels >= 0, --jpeg-qscale in 2..31")
        if args.videos_per_shard < 1:
            raise ValueError("--videos-per-shard must be >= 1")
        videos = list_videos(args.videos)
        if not videos:
            exts = " ".join(frames.VIDEO_EXTENSIONS)
            raise ValueError(f"--videos {args.videos}: no video found (a directory is searched for {exts})")
        annotated = sample_videos(args.only_samples) if args.only_samples else None
        only = set(annotated) if annotated is not None else None
        settings = Settings(args.fps, args.max_frames, args.max_pixels, args.jpeg_qscale)
        summary = run(
            videos,
            args.output,
            settings,
            workers=args.workers,
            videos_per_shard=args.videos_per_shard,
            only=only,
            annotated=annotated,
            progress=not args.no_progress,
            log=err,
        )
    except (ValueError, OSError, KeyError) as e:
        print(f"extract_frames: error: {e}", file=err)
        return 2
    s = summary
    print(
        f"extract_frames: {s['videos_listed']} videos listed: {s['extracted']} extracted, "
        f"{s['already_done']} "
        f"already done, {s['failed']} failed, {s['duplicates']} duplicate ids skipped"
        + (f", {s['missing_for_samples']} sample videos not found" if only is not None else "")
        + (f", {s['kept_shorter']} kept shorter than their header says" if s["kept_shorter"] else "")
        + f"; {s['frames_written']} frames in {s['shards_written']} new shard(s), {s['seconds']:.1f} s "
        f"-> {args.output}",
        file=err,
    )
    if s["shorter_than_samples"]:
        e = s["shorter_examples"][0]
        print(
            f"extract_frames: warning: {s['shorter_than_samples']} samples ({s['shorter_videos']} videos) are "
            f"annotated longer than their extracted video by more than {frames.ANNOTATION_SLACK_S:g} s (e.g. "
            f"{e['id']!r}: {e['annotated']:g} s annotated, video {e['video']!r} {e['extracted']:g} s): their ground "
            f"truth may lie past the last frame; listed in {fileio.join(args.output, 'extract_summary.json')} "
            "(the trainer's config.data.short_videos keeps, skips or refuses them)",
            file=err,
        )
    if s["failed"] or s["duplicates"]:
        print(
            f"extract_frames: see {fileio.join(args.output, 'failed.jsonl')} for the skipped videos", file=err
        )
    if args.strict and s["failed"]:
        print(f"extract_frames: error: --strict: {s['failed']} video(s) failed", file=err)
        return 1
    return 0


def sample_videos(paths: list[str]) -> dict[str, list[tuple[str, float]]]:
    """video id -> [(sample id, annotated duration s)] of samples JSONL files; ``ValueError("--only-samples
    FILE:LINE: ...")`` on a bad line, or when the files hold no sample (extracting nothing would be useless)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for path in paths:
        if not fileio.exists(path):
            raise ValueError(f"--only-samples {path}: file not found")
        try:
            with fileio.open_file(path, "r") as f:
                for lineno, line in enumerate(f, 1):
                    line = line.rstrip("\r\n")  # the rest kept, so a JSON error's column is the file's
                    if line.strip():
                        vid, sid, duration = _sample_video(line, f"--only-samples {path}:{lineno}")
                        out.setdefault(vid, []).append((sid, duration))
        except UnicodeDecodeError as e:
            raise ValueError(f"--only-samples {path}: not UTF-8 text ({e.reason})") from None
    if not out:
        raise ValueError(f"--only-samples {' '.join(paths)}: no sample in the file(s): nothing to extract")
    return out


def _sample_video(line: str, where: str) -> tuple[str, str, float]:
    """(video, id, duration) of one samples line (id and duration as far as they are usable here: the
    samples format is checked by the readers of the samples)."""
    try:
        sample = json.loads(line)
    except json.JSONDecodeError as e:
        what = e.msg.removesuffix(" at")  # "Unterminated string starting at" + " at column N"
        raise ValueError(f"{where}: not valid JSON ({what} at column {e.colno})") from None
    vid = sample.get("video") if isinstance(sample, dict) else None
    if not isinstance(vid, str) or not vid:
        raise ValueError(f"{where}: field 'video': {vid!r} is not a video id")
    duration = sample.get("duration")
    ok = isinstance(duration, int | float) and not isinstance(duration, bool) and duration == duration
    return vid, str(sample.get("id", where)), float(duration) if ok else 0.0


if __name__ == "__main__":
    sys.exit(main())
