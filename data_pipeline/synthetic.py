"""Synthetic videos written with PyAV, for tests, benchmarks and the offline demo (numpy + PyAV only).

Frame ``k`` of a synthetic video shows its own index: the left half has gray level ``16 * (k % 16) + 8``
and the right half ``16 * (k // 16) + 8`` (256 distinguishable frames, robust to lossy coding), so a test can
read back which source frame a stored frame came from with ``frame_index``.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def frame_pattern(k: int, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3] frame that encodes the index ``k`` (0 <= k < 256)."""
    img = np.empty((height, width, 3), np.uint8)
    img[:, : width // 2] = 16 * (k % 16) + 8
    img[:, width // 2 :] = 16 * ((k // 16) % 16) + 8
    return img


def frame_index(frame: np.ndarray) -> int:
    """Read back the index of a (possibly resized / lossy) ``frame_pattern`` frame [H, W, 3]."""
    frame = np.asarray(frame, np.float32)
    w = frame.shape[1]
    left = frame[:, : max(1, w // 2 - 2)].mean()
    right = frame[:, w // 2 + 2 :].mean() if w > 8 else frame[:, w // 2 :].mean()
    lo = int(np.clip(np.rint((left - 8) / 16), 0, 15))
    hi = int(np.clip(np.rint((right - 8) / 16), 0, 15))
    return lo + 16 * hi


def write_video(
    path: str,
    *,
    seconds: float,
    fps: float = 10.0,
    width: int = 64,
    height: int = 48,
    codec: str = "mpeg4",
    pattern: str = "index",
    seed: int = 0,
) -> int:
    """Write a synthetic video; returns the number of frames.

    pattern: ``index`` (``frame_pattern``, at most 256 frames) or ``noise`` (random textures: realistic
    JPEG sizes / decode cost for benchmarks).
    """

    n = int(round(seconds * fps))
    if pattern == "index" and n > 256:
        raise ValueError(f"an index-pattern video holds at most 256 frames, asked for {n}")
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)

    def frame(k: int) -> np.ndarray:
        if pattern == "index":
            return frame_pattern(k, width, height)
        return np.roll(base, k, axis=1).repeat(8, 0).repeat(8, 1)[:height, :width]

    return write_frames(path, (frame(k) for k in range(n)), fps=fps, codec=codec, size=(height, width))


def truncate_file(src: str, dst: str, fraction: float = 0.5) -> None:
    """Copy the first ``fraction`` of a file's bytes (a truncated, corrupt video)."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])


def make_dataset(
    root: str,
    *,
    num_videos: int = 6,
    min_seconds: float = 4.0,
    max_seconds: float = 10.0,
    width: int = 64,
    height: int = 48,
    video_fps: float = 10.0,
    extract_fps: float = 2.0,
    max_frames: int = 448,
    seed: int = 0,
    tokenizer: bool = True,
) -> dict[str, str]:
    """A complete tiny dataset, fully offline: videos, extracted frames, samples of all five tasks, tokenizer.

    Writes ``root/videos/syn<i>.mp4``, ``root/frames/`` (``extract_frames`` output), ``root/samples.jsonl``
    (per video one tg, dtg, vhd, gvqa and tal sample) and, with ``tokenizer``, ``root/tokenizer`` (the tiny
    tokenizer). Returns their paths under the keys ``videos``, ``frames``, ``samples``, ``tokenizer``.
    """
    import os

    from data_pipeline import extract_frames
    from data_pipeline.schema import dumps, validate_sample

    rng = np.random.default_rng(seed)
    vdir, fdir = os.path.join(root, "videos"), os.path.join(root, "frames")
    os.makedirs(vdir, exist_ok=True)
    samples = []
    for i in range(num_videos):
        vid = f"syn{i}"
        n = int(round(float(rng.uniform(min_seconds, max_seconds)) * video_fps))
        n = min(n, 256)
        write_video(
            os.path.join(vdir, vid + ".mp4"), seconds=n / video_fps, fps=video_fps, width=width, height=height
        )
        d = n / video_fps
        a = round(d * float(rng.uniform(0.1, 0.3)), 2)
        b = round(a + d * float(rng.uniform(0.1, 0.3)), 2)
        c = round(b + d * float(rng.uniform(0.1, 0.3)), 2)
        src = "synthetic:train"
        samples += [
            {
                "id": f"{vid}#0",
                "task": "tg",
                "video": vid,
                "duration": d,
                "segments": [[a, b]],
                "query": "the left half of the picture gets brighter",
                "source": src,
            },
            {
                "id": vid,
                "task": "dtg",
                "video": vid,
                "duration": d,
                "segments": [[0.0, a], [a, c]],
                "queries": ["the picture is dark", "the picture brightens"],
                "source": src,
            },
            {
                "id": f"{vid}_vhd",
                "task": "vhd",
                "video": vid,
                "duration": d,
                "segments": [[a, b], [b, c]],
                "query": "bright frames",
                "source": src,
            },
            {
                "id": f"{vid}_q",
                "task": "gvqa",
                "video": vid,
                "duration": d,
                "segments": [[a, c]],
                "question": "which half of the picture changes fastest?",
                "options": ["left", "right", "neither"],
                "answer": "A",
                "source": src,
            },
            {
                "id": f"{vid}#Brightening",
                "task": "tal",
                "video": vid,
                "duration": d,
                "segments": [[0.0, a], [b, c]],
                "action": "Brightening",
                "source": src,
            },
        ]
    path = os.path.join(root, "samples.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            validate_sample(s)
            f.write(dumps(s) + "\n")
    settings = extract_frames.Settings(fps=extract_fps, max_frames=max_frames)
    with open(os.devnull, "w") as quiet:
        extract_frames.run(extract_frames.list_videos(vdir), fdir, settings, progress=False, log=quiet)
    out = {"videos": vdir, "frames": fdir, "samples": path}
    if tokenizer:
        from data_pipeline.tiny_tokenizer import build_tiny_tokenizer

        out["tokenizer"] = build_tiny_tokenizer(os.path.join(root, "tokenizer"))
    return out


# ----------------------------------------------------------------------------------------------------------
# The demo's learnable temporal-grounding task: when is the red square on screen?

SQUARE_QUERY = "the red square is on screen"
SQUARE_VERSION = 2  # bump when the videos change: cached copies are keyed by it
_BACKGROUND = 40
_RED = (230, 20, 20)
_GRID = 4  # the clock: a marker steps through a 4 x 4 grid of cells, one cell per second 0..15


def square_frame(second: int, visible: bool, *, size: int = 56) -> np.ndarray:
    """uint8 [size, size, 3] frame of the square task at whole second ``second`` (0 <= second < 16).

    The frame is a 4 x 4 grid of ``size / 4`` px cells on a dark background. A marker steps through the cells
    in reading order, one per second (cell ``second``: row ``second // 4``, column ``second % 4``): a burned-in
    clock, as NumPro overlays frame numbers on videos. The marker is a red square when ``visible``, else a white
    one. Where the event is and when it happens are thus one local pattern (a red cell at the cell of its
    second), which a tiny randomly initialized vision tower can tell apart linearly.
    """
    if not 0 <= second < _GRID * _GRID:
        raise ValueError(f"the clock shows seconds 0..{_GRID * _GRID - 1}, got {second}")
    img = np.full((size, size, 3), _BACKGROUND, np.uint8)
    cell = size // _GRID
    r, c = (second // _GRID) * cell, (second % _GRID) * cell
    img[r : r + cell, c : c + cell] = _RED if visible else 255
    return img


def best_constant_iou(samples: Sequence[Mapping], step: float = 0.5) -> tuple[tuple[float, float], float]:
    """The best video-blind constant answer for single-interval samples, and its mean IoU.

    Tries every interval [a, b] (a < b) on a grid of ``step`` seconds in [0, max duration], each clipped to the
    sample's duration as the rewards clip predictions, scored by IoU with the sample's first segment. Returns
    ((a, b), mean IoU) of the best: the baseline a model that ignores the pixels can reach with one answer.
    """
    gt = np.asarray([s["segments"][0] for s in samples], np.float64)
    dur = np.asarray([s["duration"] for s in samples], np.float64)
    if gt.size == 0:
        raise ValueError("best_constant_iou needs at least one sample")
    grid = np.arange(0.0, dur.max() + step / 2, step)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    keep = a < b
    a, b = a[keep], b[keep]  # [C]
    pa, pb = np.minimum(a[:, None], dur), np.minimum(b[:, None], dur)  # [C, N]
    gs, ge = np.minimum(gt[:, 0], dur), np.minimum(gt[:, 1], dur)
    inter = np.clip(np.minimum(pb, ge) - np.maximum(pa, gs), 0.0, None)
    union = np.maximum(pb, ge) - np.minimum(pa, gs)
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0).mean(axis=1)
    i = int(np.argmax(iou))
    return (float(a[i]), float(b[i])), float(iou[i])


def write_frames(
    path: str, frames: Iterable[np.ndarray], *, fps: float, codec: str = "mpeg4", size: tuple[int, int] | None = None
) -> int:
    """Encode uint8 frames [H, W, 3] (an array [T, H, W, 3] or any iterable, consumed one frame at a time) as a
    video at ``fps`` frames per second, high quality; ``size`` (H, W) defaults to the first frame's. Returns the
    number of frames."""
    import av

    rate = fractions.Fraction(fps).limit_denominator(1000)
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.qmin = stream.codec_context.qmax = 2
        for img in frames:
            img = np.ascontiguousarray(img, np.uint8)
            if n == 0:
                stream.height, stream.width = size or img.shape[:2]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
            n += 1
        if n == 0 and size is not None:
            stream.height, stream.width = size
        for packet in stream.encode():
            container.mux(packet)
    return n


def make_square_dataset(
    root: str,
    *,
    num_train: int = 256,
    num_val: int = 32,
    min_seconds: int = 6,
    max_seconds: int = 9,
    size: int = 56,
    video_fps: float = 2.0,
    seed: int = 0,
    tokenizer: bool = True,
) -> dict[str, str]:
    """The demo's task, fully offline: "when is the red square on screen?" over generated videos.

    Each video lasts a whole number of seconds in [min_seconds, max_seconds]; the red square is visible during
    one interval [a, b] of whole seconds (at least 2 s, at most half the video + 1 s), so the answer is
    determined by the pixels. Writes ``root/videos/sq<i>.mp4``, ``root/frames/`` (``extract_frames`` at
    ``video_fps``), ``root/train.jsonl`` and ``root/val.jsonl`` (``tg`` samples, split by video) and, with
    ``tokenizer``, ``root/tokenizer`` (the tiny tokenizer). Returns those paths under ``videos``, ``frames``,
    ``train``, ``val``, ``tokenizer``. Deterministic in its arguments.
    """
    import os

    from data_pipeline import extract_frames
    from data_pipeline.schema import validate_sample, write_jsonl

    if not 1 <= min_seconds <= max_seconds <= 15:
        raise ValueError(f"need 1 <= min_seconds <= max_seconds <= 15, got {min_seconds}, {max_seconds}")
    if num_train < 1 or num_val < 0:
        raise ValueError(f"need num_train >= 1 and num_val >= 0, got {num_train}, {num_val}")
    rng = np.random.default_rng(seed)
    vdir, fdir = os.path.join(root, "videos"), os.path.join(root, "frames")
    os.makedirs(vdir, exist_ok=True)
    splits: dict[str, list[dict]] = {"train": [], "val": []}
    per_second = max(1, int(round(video_fps)))
    for i in range(num_train + num_val):
        d = int(rng.integers(min_seconds, max_seconds + 1))
        length = int(rng.integers(2, max(2, d // 2 + 1) + 1))
        a = int(rng.integers(0, d - length + 1))
        b = a + length
        frames = np.stack([square_frame(s, a <= s < b, size=size) for s in range(d) for _ in range(per_second)])
        vid = f"sq{i}"
        write_frames(os.path.join(vdir, vid + ".mp4"), frames, fps=per_second)
        split = "train" if i < num_train else "val"
        sample = {
            "id": f"{vid}#0",
            "task": "tg",
            "video": vid,
            "duration": float(d),
            "segments": [[float(a), float(b)]],
            "query": SQUARE_QUERY,
            "source": f"synthetic_square:{split}",
        }
        validate_sample(sample)
        splits[split].append(sample)
    out = {"videos": vdir, "frames": fdir}
    for split, samples in splits.items():
        out[split] = os.path.join(root, f"{split}.jsonl")
        write_jsonl(out[split], samples)
    settings = extract_frames.Settings(fps=float(per_second), max_frames=448)
    with open(os.devnull, "w") as quiet:
        extract_frames.run(extract_frames.list_videos(vdir), fdir, settings, progress=False, log=quiet)
    if tokenizer:
        from data_pipeline.tiny_tokenizer import build_tiny_tokenizer

        out["tokenizer"] = build_tiny_tokenizer(os.path.join(root, "tokenizer"))
    return out
