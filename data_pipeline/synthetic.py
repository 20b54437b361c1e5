"""Synthetic videos written with PyAV, for tests, benchmarks and the offline demo (numpy + PyAV only).

Frame ``k`` of a synthetic video shows its own index: the left half has gray level ``16 * (k % 16) + 8``
and the right half ``16 * (k // 16) + 8`` (256 distinguishable frames, robust to lossy coding), so a test can
read back which source frame a stored frame came from with ``frame_index``.
"""

from __future__ import annotations

import fractions

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
    import av

    n = int(round(seconds * fps))
    if pattern == "index" and n > 256:
        raise ValueError(f"an index-pattern video holds at most 256 frames, asked for {n}")
    rng = np.random.default_rng(seed)
    rate = fractions.Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.qmin = stream.codec_context.qmax = 2
        base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        for k in range(n):
            if pattern == "index":
                img = frame_pattern(k, width, height)
            else:
                tile = np.roll(base, k, axis=1).repeat(8, 0).repeat(8, 1)[:height, :width]
                img = np.ascontiguousarray(tile)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return n


def truncate_file(src: str, dst: str, fraction: float = 0.5) -> None:
    """Copy the first ``fraction`` of a file's bytes (a truncated, corrupt video)."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
