"""Frame sampling and PyAV decoding (numpy + PyAV only: safe to import in worker processes).

Sampling rule (TempR1: 2 fps, at most 448 frames). For a video of ``duration`` seconds the target times are
``k / fps`` for ``k = 0 .. ceil(duration * fps) - 1``; when that is more than ``max_frames``, ``max_frames``
times spread uniformly instead: ``k * duration / max_frames``. Each target takes the decoded frame whose
timestamp is nearest, and the kept frame's own timestamp (seconds from the start of the stream) is recorded.

Truncation rule: a video whose decodable frames end short of what the file declares is rejected
(``VideoError("truncated: ...")``; ``extract_frames`` skips and lists it, and a rerun retries it). The decoded
end is the last frame's time plus one frame period. It is compared with

- the duration used for sampling (the largest of the stream, else container, duration and the lengths
  below; a container's duration may be an estimate, or cover a longer audio track): rejected below
  ``TRUNCATION_TOLERANCE`` of it minus 1 s;
- the video track's own length where the container's header states it (``declared_lengths``: the MP4 / MOV
  track duration, the Matroska / WebM track ``DURATION`` tag, the AVI header's frame count / frame rate):
  rejected when short by more than ``max(STREAM_SLACK_S, 2 frame periods)``.

A video that ends short by less than that (but by more than two frame periods and 0.01 s) is kept as the
shorter video, with ``ExtractedVideo.warning`` saying so.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
import re

import numpy as np

VIDEO_EXTENSIONS = (
    ".mp4",
    ".mkv",
    ".webm",
    ".avi",
    ".mov",
    ".m4v",
    ".flv",
    ".mpg",
    ".mpeg",
    ".3gp",
    ".wmv",
    ".ts",
    ".ogv",
)
# A decode that stops before this share of the announced duration (minus one second) is a truncated file.
TRUNCATION_TOLERANCE = 0.9
# A decode that ends more than this many seconds (or two frame periods) before the length the video track's
# own header declares is a truncated file (see ``declared_lengths``).
STREAM_SLACK_S = 1.0
# A sample whose annotated duration exceeds its extracted video's by more than this many seconds refers to
# time the frames do not show (a shorter or cut file than the one annotated): see shorter_than_annotation.
ANNOTATION_SLACK_S = 1.0


def shorter_than_annotation(annotated: float, video: float) -> bool:
    """Whether a video of ``video`` seconds is shorter than a sample annotated with ``annotated`` seconds by
    more than ``ANNOTATION_SLACK_S`` (extract_frames reports such samples; the stream keeps, skips or refuses
    them, ``config.data.short_videos``)."""
    return float(annotated) > float(video) + ANNOTATION_SLACK_S


class VideoError(Exception):
    """A video that cannot be used: unreadable, corrupt, truncated, or without a video stream."""


@dataclasses.dataclass
class ExtractedVideo:
    """Frames kept from one video.

    duration: seconds (container / stream metadata, or the decoded length if that is shorter).
    source_fps: the video's own average frame rate. width, height: size of the stored JPEG frames (px).
    frame_times: float64 [T] seconds of each kept frame. jpegs: T JPEG-encoded frames.
    warning: why the video was kept shorter than its file declares ("" when it was not).
    """

    video: str
    path: str
    duration: float
    source_fps: float
    width: int
    height: int
    frame_times: np.ndarray
    jpegs: list[bytes]
    warning: str = ""


def num_sampled(duration: float, fps: float, max_frames: int) -> int:
    """Number of target times for a ``duration``-second video at ``fps`` with at most ``max_frames``."""
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be positive, got {fps}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    n = max(1, math.ceil(duration * fps - 1e-6))
    return min(n, int(max_frames))


def sample_times(duration: float, fps: float, max_frames: int) -> np.ndarray:
    """Target timestamps (float64 seconds, from 0): ``k / fps``, or uniform over the video past the cap."""
    n = num_sampled(duration, fps, max_frames)
    if n == max_frames and math.ceil(duration * fps - 1e-6) > max_frames:
        return np.arange(n, dtype=np.float64) * (duration / n)
    return np.arange(n, dtype=np.float64) / fps


def nearest_indices(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target, the index of the nearest time (``times`` sorted ascending; ties go to the earlier)."""
    times = np.asarray(times, np.float64)
    j = np.clip(np.searchsorted(times, targets, side="left"), 1, max(len(times) - 1, 1))
    if len(times) == 1:
        return np.zeros(len(targets), np.int64)
    left, right = times[j - 1], times[j]
    return np.where(np.abs(targets - left) <= np.abs(right - targets), j - 1, j).astype(np.int64)


def select_frames(frame_times: np.ndarray, duration: float, fps: float, max_frames: int) -> np.ndarray:
    """Indices of stored frames to use at a (lower) ``fps`` / ``max_frames`` than the extraction's.

    Returns all indices when the stored frames are no more than the target count (never duplicates frames),
    else the frame nearest to each target time. The count is ``min(num_sampled(...), len(frame_times))``.
    """
    n = len(frame_times)
    want = num_sampled(duration, fps, max_frames)
    if want >= n:
        return np.arange(n, dtype=np.int64)
    return nearest_indices(np.asarray(frame_times, np.float64), sample_times(duration, fps, max_frames))


def output_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """Stored frame size: the source size scaled down (aspect kept) to at most ``max_pixels``; even sides."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    w, h = float(width), float(height)
    if max_pixels and width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        w, h = width * scale, height * scale
    return max(2, int(w) // 2 * 2), max(2, int(h) // 2 * 2)


def _probe_duration(container, stream) -> float | None:
    """Duration from the stream, else the container, else by demuxing every packet (no decoding)."""
    tb = stream.time_base
    if stream.duration is not None and tb is not None and stream.duration > 0:
        return float(stream.duration * tb)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000.0
    end = None
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base is not None:
            t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            end = t if end is None else max(end, t)
    container.seek(0)
    return end


def _parse_clock(text: str) -> float | None:
    """``HH:MM:SS.fraction`` (Matroska's DURATION tag) -> seconds, else None."""
    m = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*", str(text))
    if not m:
        return None
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def declared_lengths(container, stream, fps: float) -> dict[str, float]:
    """The video track's own length (seconds) as the file's header states it, keyed by where it comes from.

    MP4 / MOV: the track duration (after edit lists; the frame count is not used, it includes the frames an
    edit list hides). Matroska / WebM: the track's ``DURATION`` tag. AVI: the header's frame count / frame
    rate (its stream and container durations are rebuilt from what is left of the index, or the bit rate).
    Other containers: none (their durations may be estimates).
    """
    families = set((container.format.name or "").split(","))
    out: dict[str, float] = {}
    tb = stream.time_base
    if families & {"mov", "mp4"} and stream.duration and tb is not None and stream.duration > 0:
        out["MP4/MOV track duration"] = float(stream.duration * tb)
    if families & {"matroska", "webm"}:
        tag = next((v for k, v in stream.metadata.items() if k.upper().split("-")[0] == "DURATION"), None)
        d = _parse_clock(tag) if tag else None
        if d:
            out["Matroska track DURATION tag"] = d
    if "avi" in families and stream.frames and fps > 0:
        out[f"AVI header ({stream.frames} frames at {fps:g} fps)"] = stream.frames / fps
    return out


def _jpeg_encoder(width: int, height: int, qscale: int):
    import av

    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = fractions.Fraction(1, 25)
    ctx.qmin = ctx.qmax = int(qscale)
    return ctx


def _check_complete(end: float, duration: float, declared: dict[str, float], period: float, short: bool) -> str:
    """The truncation rule (module docstring) for a stream that ended at ``end`` s; ``short``: before the last
    sampling target. Raises ``VideoError``; returns a warning ("" if none) when the end is short by more than two
    frame periods (and 0.01 s, so the two values print differently) but within the tolerance."""
    slack = max(STREAM_SLACK_S, 2 * period)
    for name, length in declared.items():
        if end < length - slack:
            raise VideoError(f"truncated: frames stop at {end:.2f} s but the {name} says {length:.2f} s")
    if short and end < TRUNCATION_TOLERANCE * duration - 1.0:
        raise VideoError(f"truncated: frames stop at {end:.2f} s of a {duration:.2f} s video")
    name, length = max((declared or {"container's duration": duration}).items(), key=lambda kv: kv[1])
    if end < length - max(2 * period, 0.01):
        return f"frames stop at {end:.2f} s but the {name} says {length:.2f} s: kept as a {end:.2f} s video"
    return ""


def _decode(container, stream, targets: np.ndarray, horizon: float, period: float, keep) -> tuple:
    """Decode in order, calling ``keep(item)`` with the (ordinal, time, frame) nearest to each target.

    Decoding goes on past the last target up to ``horizon`` seconds (so the truncation checks can see where
    the frames end). Returns (targets kept, last item or None, whether the stream ended before ``horizon``).
    A decode error before the last target raises ``VideoError``; after it, it ends the stream.
    """
    import av

    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    prev = None  # (ordinal, time, frame) of the previous decoded frame
    j, ordinal = 0, 0
    try:
        for frame in container.decode(stream):
            if frame.time is not None:
                t = float(frame.time) - start
            else:
                t = prev[1] + period if prev is not None else 0.0
            cur = (ordinal, t, frame)
            while j < len(targets) and targets[j] <= t:
                nearer_prev = prev is not None and targets[j] - prev[1] <= t - targets[j]
                keep(prev if nearer_prev else cur)
                j += 1
            prev = cur
            ordinal += 1
            if j >= len(targets) and t + period >= horizon:
                return j, prev, False
    except av.FFmpegError as e:
        if j < len(targets):
            at = prev[1] if prev is not None else 0.0
            raise VideoError(f"decoding failed after {ordinal} frames ({at:.2f} s): {e}") from None
    return j, prev, True


def extract_video(
    path: str,
    video: str,
    *,
    fps: float = 2.0,
    max_frames: int = 448,
    max_pixels: int | None = 602112,
    jpeg_qscale: int = 3,
) -> ExtractedVideo:
    """Decode ``path`` with PyAV and keep the sampled frames as JPEG (see the module docstring).

    max_pixels: stored frames are scaled down to at most this many pixels (None keeps the source size);
    the default 768 * 28 * 28 is the largest per-frame size Qwen2.5-VL's video budget ever uses.
    jpeg_qscale: ffmpeg's JPEG quantizer, 2 (best) .. 31. Raises ``VideoError`` for an unusable video.
    """
    import av

    if not 2 <= jpeg_qscale <= 31:
        raise ValueError(f"jpeg_qscale must be in 2..31, got {jpeg_qscale}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"cannot open: {e}") from None
    try:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_w, src_h = stream.codec_context.width, stream.codec_context.height
        if not src_w or not src_h:
            raise VideoError(f"video stream has no frame size ({src_w}x{src_h})")
        rate = stream.average_rate or stream.guessed_rate
        source_fps = float(rate) if rate else 0.0
        period = 1.0 / source_fps if source_fps else 0.0
        declared = declared_lengths(container, stream, source_fps)
        duration = _probe_duration(container, stream)
        if duration is None or not duration > 0:
            raise VideoError("cannot determine the duration (no timestamps)")
        duration = max([duration, *declared.values()])  # the AVI header outlives a lost index
        targets = sample_times(duration, fps, max_frames)
        out_w, out_h = output_size(src_w, src_h, max_pixels)
        encoder = _jpeg_encoder(out_w, out_h, jpeg_qscale)
        times: list[float] = []
        jpegs: list[bytes] = []
        cached: tuple[int, bytes] | None = None  # (frame ordinal, JPEG): two targets may take one frame

        def keep(item) -> None:
            nonlocal cached
            if cached is None or cached[0] != item[0]:
                packets = encoder.encode(item[2].reformat(width=out_w, height=out_h, format="yuvj420p"))
                cached = (item[0], b"".join(bytes(p) for p in packets))
            times.append(item[1])
            jpegs.append(cached[1])

        horizon = duration - 2 * period  # decoding that far settles the truncation checks
        j, prev, ended = _decode(container, stream, targets, horizon, period, keep)
        if prev is None:
            raise VideoError("no frame could be decoded")
        warning = ""
        if ended:
            end = prev[1] + period  # the last frame is shown for one frame period
            warning = _check_complete(end, duration, declared, period, short=j < len(targets))
            while j < len(targets) and targets[j] < end:
                keep(prev)
                j += 1
            duration = min(duration, max(end, times[-1] if times else end))
        if not jpegs:
            raise VideoError("no frame kept")
        return ExtractedVideo(
            video=video,
            path=str(path),
            duration=float(duration),
            source_fps=source_fps,
            width=out_w,
            height=out_h,
            frame_times=np.asarray(times, np.float64),
            jpegs=jpegs,
            warning=warning,
        )
    finally:
        container.close()
