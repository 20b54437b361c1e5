"""Host-side Qwen2.5-VL visual preprocessing: frames -> resized frames -> normalized patches.

numpy only (no JAX, no TF, no torch, no PIL): the data pipeline calls this inside tf.data / worker processes.

The rules follow Qwen2.5-VL's processor and qwen-vl-utils (which VideoChat-R1 / TempR1 use):

- ``smart_resize``: round height and width to multiples of ``factor`` = patch 14 x merge 2 = 28 px, then scale
  down (floor) / up (ceil) to stay within [min_pixels, max_pixels] keeping the aspect ratio.
- ``video_resize_target``: the per-frame pixel cap under a total budget, as qwen-vl-utils computes it:
  ``max(min(max_pixels, total_pixels / num_frames * 2), int(1.05 * min_pixels))``. TempR1 uses 2 fps, at
  most 448 frames, ``total_pixels = 3584 * 28 * 28`` (3584 visual tokens), ``min_pixels = 16 * 28 * 28``.
- Resampling: antialiased bicubic (Keys a = -0.5, support scaled by the downscale factor), two separable
  passes with a uint8 intermediate, as PIL / torchvision ``antialias=True`` do on uint8 frames.
- Normalization: ``(x - 255 * mean) / (255 * std)`` in float32 with the OpenAI-CLIP statistics.
- Temporal pairing: frames (0, 1), (2, 3), ... form one temporal patch; an odd frame count is padded by
  repeating the last frame (as HF does).
- Patch layout: (t, h/28, w/28, 2, 2) merge-unit-major rows, each row flattened in (C, T, 14, 14) order, so
  four consecutive rows form one 2x2 merge unit (one LLM token).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28 px: one LLM token covers a 28x28 area of one temporal patch
PATCH_DIM = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE  # 1176
FRAME_FACTOR = 2
MAX_RATIO = 200

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

# qwen-vl-utils defaults.
IMAGE_MIN_PIXELS = 4 * 28 * 28
IMAGE_MAX_PIXELS = 16384 * 28 * 28
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28

# TempR1 (paper section 3.2 / VideoChat-R1 recipe): 2 fps, <= 448 frames, 3584 visual tokens in total.
TEMPR1_FPS = 2.0
TEMPR1_MAX_FRAMES = 448
TEMPR1_MIN_PIXELS = 16 * 28 * 28
TEMPR1_MAX_PIXELS = VIDEO_MAX_PIXELS
TEMPR1_TOTAL_PIXELS = 3584 * 28 * 28


@dataclasses.dataclass(frozen=True)
class VideoInputs:
    """One preprocessed video.

    pixel_values: float32 [N, 1176], N = t * h * w patches (normalized, (C, T, 14, 14) per row).
    grid_thw: int64 [3] = (t temporal patches, h patch rows, w patch cols) in 14-px patch units.
    second_per_grid_ts: seconds covered by one temporal patch (2 frames), e.g. 1.0 at 2 fps.
    """

    pixel_values: np.ndarray
    grid_thw: np.ndarray
    second_per_grid_ts: float

    @property
    def num_tokens(self) -> int:
        """LLM tokens (``<|video_pad|>`` count) after the 2x2 merge."""
        return num_video_tokens(self.grid_thw)


@dataclasses.dataclass(frozen=True)
class ImageInputs:
    """One preprocessed image: pixel_values float32 [N, 1176], grid_thw int64 [3] = (1, h, w)."""

    pixel_values: np.ndarray
    grid_thw: np.ndarray

    @property
    def num_tokens(self) -> int:
        """LLM tokens (``<|image_pad|>`` count) after the 2x2 merge."""
        return num_video_tokens(self.grid_thw)


def num_video_tokens(grid_thw) -> int:
    """LLM tokens for one visual input: t * (h / 2) * (w / 2) for grid_thw = (t, h, w) in patch units."""
    t, h, w = (int(v) for v in np.asarray(grid_thw).reshape(3))
    if h % MERGE_SIZE or w % MERGE_SIZE:
        raise ValueError(f"grid_thw {(t, h, w)}: h and w must be multiples of the merge size {MERGE_SIZE}")
    return t * (h // MERGE_SIZE) * (w // MERGE_SIZE)


def smart_resize(
    height: int,
    width: int,
    factor: int = FACTOR,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen's resize rule: (h, w) multiples of ``factor`` with min_pixels <= h * w <= max_pixels (near)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"smart_resize: height and width must be positive, got {height}x{width}")
    if min_pixels <= 0 or max_pixels < min_pixels:
        raise ValueError(f"smart_resize: need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"smart_resize: aspect ratio {max(height, width) / min(height, width):.1f} of {height}x{width} "
            f"exceeds {MAX_RATIO}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_max_pixels_per_frame(
    num_frames: int, *, min_pixels: int, max_pixels: int, total_pixels: int
) -> int:
    """qwen-vl-utils' per-frame pixel cap for ``num_frames`` frames under a ``total_pixels`` budget.

    The frame count is rounded up to even first (frames are paired), so an odd count never overshoots.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    n = num_frames + num_frames % FRAME_FACTOR
    cap = max(min(max_pixels, total_pixels / n * FRAME_FACTOR), int(min_pixels * 1.05))
    return int(cap)


def video_resize_target(
    num_frames: int, height: int, width: int, *, min_pixels: int, max_pixels: int, total_pixels: int
) -> tuple[int, int]:
    """Per-frame (h, w) for a video of ``num_frames`` frames of ``height x width`` under a total-pixel budget.

    With TempR1's settings (min 16*28*28, max 768*28*28, total 3584*28*28) a video yields at most 3584 LLM
    tokens when its frames are at least min_pixels in area; smaller frames are scaled up with ceil and extreme
    aspect ratios hit the 28-px floor, which can overshoot slightly, exactly as upstream qwen-vl-utils does.
    """
    cap = video_max_pixels_per_frame(
        num_frames, min_pixels=min_pixels, max_pixels=max_pixels, total_pixels=total_pixels
    )
    return smart_resize(height, width, FACTOR, min_pixels=min_pixels, max_pixels=cap)


# ----------------------------------------------------------------------------------------------------
# Resampling (antialiased bicubic, numpy)


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(
        x < 1.0,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0),
    )


def _resample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] float64 weights of PIL-style antialiased bicubic resampling along one axis."""
    scale = in_size / out_size
    support_scale = max(scale, 1.0)
    support = 2.0 * support_scale
    centers = (np.arange(out_size) + 0.5) * scale
    lo = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    src = np.arange(in_size)[None, :]
    w = _cubic((src - centers[:, None] + 0.5) / support_scale)
    w = np.where((src >= lo[:, None]) & (src < hi[:, None]), w, 0.0)
    return w / w.sum(axis=1, keepdims=True)


def resize_frames(frames: np.ndarray, height: int, width: int, *, chunk: int = 16) -> np.ndarray:
    """Antialiased bicubic resize of uint8 frames [T, H, W, 3] to [T, height, width, 3] (uint8).

    Two separable passes (width, then height) with a rounded uint8 intermediate, as PIL and torchvision do for
    uint8 input; results agree with them to within 1 gray level.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"resize_frames: frames must be [T, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"resize_frames: frames must be uint8, got {frames.dtype}")
    t, h_in, w_in, _ = frames.shape
    if (h_in, w_in) == (height, width):
        return frames.copy()
    wh = _resample_matrix(h_in, height).astype(np.float32)
    ww = _resample_matrix(w_in, width).astype(np.float32)
    out = np.empty((t, height, width, 3), np.uint8)
    for s in range(0, t, chunk):
        x = frames[s : s + chunk].astype(np.float32)
        n = x.shape[0]
        # Width pass as one GEMM: [n, H, 3, W] @ [W, w] -> [n, H, 3, w], rounded to uint8 levels like PIL.
        x = (x.transpose(0, 1, 3, 2).reshape(-1, w_in) @ ww.T).reshape(n, h_in, 3, width)
        x = np.clip(np.rint(x), 0, 255)
        # Height pass: [n, 3, w, H] @ [H, h] -> [n, 3, w, h] -> [n, h, w, 3].
        x = (x.transpose(0, 2, 3, 1).reshape(-1, h_in) @ wh.T).reshape(n, 3, width, height)
        out[s : s + chunk] = np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(0, 3, 2, 1)
    return out


# ----------------------------------------------------------------------------------------------------
# Normalization and patchify


def normalize(frames: np.ndarray) -> np.ndarray:
    """uint8 or float [.., 3] in 0..255 -> float32 ``(x - 255 mean) / (255 std)`` (CLIP statistics)."""
    mean = np.asarray(IMAGE_MEAN, np.float32) * np.float32(255.0)
    std = np.asarray(IMAGE_STD, np.float32) * np.float32(255.0)
    return (np.asarray(frames, np.float32) - mean) / std


def _patchify(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalized float32 [T, h, w, 3] (T even) -> ([t*gh*gw, 1176], grid (t, gh, gw))."""
    t2, h, w, c = frames.shape
    gt, gh, gw = t2 // TEMPORAL_PATCH_SIZE, h // PATCH_SIZE, w // PATCH_SIZE
    x = frames.reshape(
        gt,
        TEMPORAL_PATCH_SIZE,
        gh // MERGE_SIZE,
        MERGE_SIZE,
        PATCH_SIZE,
        gw // MERGE_SIZE,
        MERGE_SIZE,
        PATCH_SIZE,
        c,
    )
    # (t, tp, bh, ih, ph, bw, iw, pw, c) -> (t, bh, bw, ih, iw, c, tp, ph, pw)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return np.ascontiguousarray(x.reshape(gt * gh * gw, PATCH_DIM)), np.array([gt, gh, gw], np.int64)


def _check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what}: frames must be [T, H, W, 3] RGB, got shape {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError(f"{what}: got zero frames")
    if frames.dtype != np.uint8 and not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"{what}: frames must be uint8 or float (0..255), got {frames.dtype}")
    return frames


def second_per_grid_from_times(frame_times: np.ndarray, *, fps: float | None = None) -> float:
    """Seconds per temporal patch (2 frames): ``2 * mean frame spacing``, or ``2 / fps`` if given."""
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        return TEMPORAL_PATCH_SIZE / float(fps)
    times = np.asarray(frame_times, np.float64).reshape(-1)
    if times.size < 2:
        raise ValueError(
            f"frame_times has {times.size} entry; the spacing of one frame is unknown, pass fps= explicitly"
        )
    span = float(times[-1] - times[0])
    if span <= 0:
        raise ValueError(f"frame_times span {times[0]}..{times[-1]} s is not positive; pass fps= explicitly")
    return TEMPORAL_PATCH_SIZE * span / (times.size - 1)


def patchify_video(frames: np.ndarray, frame_times: np.ndarray, *, fps: float | None = None) -> VideoInputs:
    """Frames already at a valid size -> ``VideoInputs``.

    frames: uint8 or float32 (0..255) [T, h, w, 3] with h, w multiples of 28.
    frame_times: [T] timestamps in seconds (non-decreasing); they give ``second_per_grid_ts = 2 * spacing``.
    fps: optional sampling rate overriding the spacing (qwen-vl-utils passes its effective fps).
    An odd T is padded by repeating the last frame.
    """
    frames = _check_frames(frames, "patchify_video")
    t, h, w, _ = frames.shape
    if h % FACTOR or w % FACTOR:
        raise ValueError(f"patchify_video: frame size {h}x{w} must be multiples of {FACTOR}; resize first")
    times = np.asarray(frame_times, np.float64).reshape(-1)
    if times.size != t:
        raise ValueError(f"patchify_video: {t} frames but {times.size} frame_times")
    if not np.all(np.isfinite(times)):
        raise ValueError("patchify_video: frame_times contain NaN or inf")
    if np.any(np.diff(times) < 0):
        raise ValueError(f"patchify_video: frame_times must be non-decreasing, got {times.tolist()[:8]}...")
    spg = second_per_grid_from_times(times, fps=fps)
    if t % TEMPORAL_PATCH_SIZE:
        frames = np.concatenate([frames, frames[-1:]], axis=0)
    pixel_values, grid = _patchify(normalize(frames))
    return VideoInputs(pixel_values=pixel_values, grid_thw=grid, second_per_grid_ts=spg)


def preprocess_video(
    frames: np.ndarray,
    frame_times: np.ndarray,
    *,
    min_pixels: int = TEMPR1_MIN_PIXELS,
    max_pixels: int = TEMPR1_MAX_PIXELS,
    total_pixels: int = TEMPR1_TOTAL_PIXELS,
    fps: float | None = None,
) -> VideoInputs:
    """uint8 frames [T, H, W, 3] + timestamps [T] (s) -> resize under the token budget -> ``VideoInputs``."""
    frames = _check_frames(frames, "preprocess_video")
    if frames.dtype != np.uint8:
        raise ValueError(f"preprocess_video: frames must be uint8, got {frames.dtype}")
    t, h, w, _ = frames.shape
    th, tw = video_resize_target(
        t, h, w, min_pixels=min_pixels, max_pixels=max_pixels, total_pixels=total_pixels
    )
    return patchify_video(resize_frames(frames, th, tw), frame_times, fps=fps)


def preprocess_image(
    image: np.ndarray, *, min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = IMAGE_MAX_PIXELS
) -> ImageInputs:
    """uint8 image [H, W, 3] -> smart_resize -> normalized patches (the frame is duplicated in time)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"preprocess_image: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    th, tw = smart_resize(
        image.shape[0], image.shape[1], FACTOR, min_pixels=min_pixels, max_pixels=max_pixels
    )
    frame = resize_frames(image[None], th, tw)
    pixel_values, grid = _patchify(normalize(np.concatenate([frame, frame], axis=0)))
    return ImageInputs(pixel_values=pixel_values, grid_thw=grid)
