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

def colour_query(colour: str) -> str:
    """The query of a tg / vhd / dtg interval: when the square of that colour is on screen."""
    return f"the {colour} square is on screen"


SQUARE_QUERY = colour_query("red")
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
    return marker_frame(second, "red" if visible else None, size=size)


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


# ----------------------------------------------------------------------------------------------------------
# The five-task world of the demo: a coloured marker on the same burned-in clock, one state per second.
#
# Second s of a video shows the clock marker in cell s of the 4 x 4 grid (as ``square_frame``); its colour is
# what is on screen during that second: one of ``COLOURS`` (a coloured square) or white (nothing). A video is a
# timeline, one colour name or None per whole second, drawn for one task; every answer is a function of the
# runs of colours in that timeline, so it is readable from the one visual token per second plus the clock.

MULTITASK_VERSION = 5  # bump when the videos or samples change: cached copies are keyed by it
COLOURS = {
    "red": _RED,
    "green": (20, 200, 20),
    "blue": (30, 60, 240),
    "yellow": (230, 220, 20),
    "cyan": (20, 210, 230),
    "magenta": (220, 30, 220),
}
_WHITE = (255, 255, 255)  # the clock marker alone: nothing on screen
GVQA_QUESTION = "which colour comes right after the red square?"
TAL_ACTION = "yellow flash"
MULTITASK_TASKS = ("tg", "dtg", "vhd", "gvqa", "tal")


def marker_frame(second: int, colour: str | None, *, size: int = 56) -> np.ndarray:
    """uint8 [size, size, 3] frame at whole second ``second`` (0..15): the clock marker in cell ``second`` of the
    4 x 4 grid, coloured ``COLOURS[colour]``, or white when ``colour`` is None (``square_frame`` is the red /
    white case)."""
    if not 0 <= second < _GRID * _GRID:
        raise ValueError(f"the clock shows seconds 0..{_GRID * _GRID - 1}, got {second}")
    if colour is not None and colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected None or one of {sorted(COLOURS)}")
    img = np.full((size, size, 3), _BACKGROUND, np.uint8)
    cell = size // _GRID
    r, c = (second // _GRID) * cell, (second % _GRID) * cell
    img[r : r + cell, c : c + cell] = _WHITE if colour is None else COLOURS[colour]
    return img


def read_marker(frame: np.ndarray) -> tuple[int, str | None]:
    """(second, colour name or None for white) shown by a ``marker_frame`` frame [H, W, 3], also after lossy
    coding or resizing: the cell farthest from the background, its centre's nearest palette colour."""
    frame = np.asarray(frame, np.float32)
    h, w = frame.shape[:2]
    ch, cw = h // _GRID, w // _GRID
    cells = frame[: ch * _GRID, : cw * _GRID].reshape(_GRID, ch, _GRID, cw, 3)
    centre = cells[:, ch // 4 : ch - ch // 4, :, cw // 4 : cw - cw // 4].mean(axis=(1, 3)).reshape(-1, 3)
    second = int(np.argmax(np.abs(centre - _BACKGROUND).sum(axis=1)))
    names = [None, *COLOURS]
    palette = np.asarray([_WHITE, *COLOURS.values()], np.float32)
    return second, names[int(np.argmin(((palette - centre[second]) ** 2).sum(axis=1)))]


def _true_runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """(start, end) indices of the maximal runs of True in ``flags`` (end exclusive)."""
    runs, start = [], None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _place(rng: np.random.Generator, d: int, lengths: Sequence[int], min_gap: int = 0) -> list[int]:
    """Starts of runs of ``lengths`` seconds, in order, at least ``min_gap`` apart, inside [0, d), uniformly
    over all such placements (the free seconds are split among the k + 1 gaps by stars and bars)."""
    k = len(lengths)
    slack = d - int(sum(lengths)) - min_gap * (k - 1)
    if slack < 0:
        raise ValueError(f"runs of {list(lengths)} s with gaps >= {min_gap} s do not fit in {d} s")
    bars = np.sort(rng.choice(slack + k, size=k, replace=False))
    gaps = np.diff(np.concatenate([[-1], bars, [slack + k]])) - 1  # k + 1 parts summing to slack
    starts, t = [], int(gaps[0])
    for j, length in enumerate(lengths):
        starts.append(t)
        t += int(length) + min_gap + int(gaps[j + 1])
    return starts


def _fitting(rng: np.random.Generator, d: int, k: int, low: int, high: int, min_gap: int) -> list[int]:
    """k run lengths in [low, high] s, dropping runs until they fit in d s with gaps >= min_gap."""
    lengths = [int(x) for x in rng.integers(low, high + 1, size=k)]
    while len(lengths) > 1 and sum(lengths) + min_gap * (len(lengths) - 1) > d:
        lengths.pop()
    return lengths


def _paint(timeline: list, colour: str, starts: Sequence[int], lengths: Sequence[int]) -> list[list[float]]:
    for s, n in zip(starts, lengths, strict=True):
        timeline[s : s + n] = [colour] * n
    return [[float(s), float(s + n)] for s, n in zip(starts, lengths, strict=True)]


def _world(task: str, rng: np.random.Generator, d: int, index: int, margin: int = 0) -> tuple[list, dict, list[str]]:
    """One task's timeline (d entries), its sample fields and the colours distractors may take. The answer's
    runs lie in [margin, d - margin). gvqa takes its option count and answer letter from ``index`` (3 and 4
    options alternate, the letters cycle), so every letter is equally frequent per option count and a
    letter-guessing policy scores chance."""
    tl: list[str | None] = [None] * d
    others = [c for c in COLOURS if c != "red"]
    inner = d - 2 * margin

    def place(lengths: Sequence[int], min_gap: int = 0) -> list[int]:
        return [margin + s for s in _place(rng, inner, lengths, min_gap)]

    if task == "tg":  # one red interval, as the square task: 2 s .. half the video + 1 s
        n = min(int(rng.integers(2, max(2, inner // 2 + 1) + 1)), inner)
        return tl, {"segments": _paint(tl, "red", place([n]), [n]), "query": SQUARE_QUERY}, others
    if task == "dtg":  # two colours, one interval of 1-2 s each, in query (= temporal) order
        colours = [str(c) for c in rng.choice(list(COLOURS), size=2, replace=False)]
        lengths = [int(x) for x in rng.integers(1, 3, size=2)]
        starts = place(lengths)
        segs = [_paint(tl, c, [s], [n])[0] for c, s, n in zip(colours, starts, lengths, strict=True)]
        queries = [colour_query(c) for c in colours]
        return tl, {"segments": segs, "queries": queries}, [c for c in COLOURS if c not in colours]
    if task == "vhd":  # 1-3 red intervals, at least 1 s apart: the highlight is their union
        lengths = _fitting(rng, inner, int(rng.integers(1, 4)), 1, 3, 1)
        segs = _paint(tl, "red", place(lengths, 1), lengths)
        return tl, {"segments": segs, "query": SQUARE_QUERY}, others
    if task == "gvqa":  # red, then at once the answer colour; evidence: both; options: 3-4 non-red colours
        k, answer = 3 + index % 2, (index // 2) % (3 + index % 2)
        options = [str(c) for c in rng.choice(others, size=k, replace=False)]
        lr, lx = (int(x) for x in rng.integers(1, 4, size=2))
        lx = max(1, min(lx, inner - lr))  # both runs fit inside the margins
        lr = min(lr, inner - lx)
        (a,) = place([lr + lx])
        _paint(tl, "red", [a], [lr])
        _paint(tl, options[answer], [a + lr], [lx])
        fields = {
            "segments": [[float(a), float(a + lr + lx)]],
            "question": GVQA_QUESTION,
            "options": options,
            "answer": "ABCDEFGH"[answer],
        }
        return tl, fields, [c for i, c in enumerate(options) if i != answer]
    if task == "tal":  # 1-4 yellow flashes of 1-2 s, at least 1 s apart
        lengths = _fitting(rng, inner, int(rng.integers(1, 5)), 1, 2, 1)
        segs = _paint(tl, "yellow", place(lengths, 1), lengths)
        return tl, {"segments": segs, "action": TAL_ACTION}, [c for c in COLOURS if c != "yellow"]
    raise ValueError(f"unknown task {task!r}; expected one of {MULTITASK_TASKS}")


def _distract(rng: np.random.Generator, timeline: list, colours: Sequence[str], rate: float) -> None:
    """In place: each maximal run of empty seconds gets, with probability ``rate``, one distractor run (a random
    colour of ``colours``, random length and offset inside the gap). Targets never touch a run of their own
    colour because distractor colours exclude every target colour."""
    for start, end in _true_runs([c is None for c in timeline]):
        if not colours or rng.random() >= rate:
            continue
        n = int(rng.integers(1, end - start + 1))
        s = start + int(rng.integers(0, end - start - n + 1))
        timeline[s : s + n] = [str(rng.choice(list(colours)))] * n


def multitask_sample(
    task: str,
    split: str,
    index: int,
    *,
    min_seconds: int = 8,
    max_seconds: int = 15,
    distractors: float = 0.5,
    margin: int = 0,
    seed: int = 0,
) -> tuple[list[str | None], dict]:
    """(timeline, sample) of video ``index`` of ``task`` in ``split``: one colour name or None (white) per second,
    and its sample (docs/formats.md). Drawn from its own random stream (seed, task, split, index), so one video does not
    depend on the counts or the other tasks asked for. ``distractors``: the chance that a run of empty seconds
    shows a distractor colour (one that no answer of the sample is about). ``margin``: seconds at each end of the
    video that no answer run touches (so that an interval's true boundaries are never the video's own)."""
    if task not in MULTITASK_TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {MULTITASK_TASKS}")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    rng = np.random.default_rng([seed, MULTITASK_TASKS.index(task), ("train", "val").index(split), index])
    d = int(rng.integers(min_seconds, max_seconds + 1))
    timeline, fields, distractor_colours = _world(task, rng, d, index, margin)
    _distract(rng, timeline, distractor_colours, distractors)
    vid = f"{split}_{task}{index}"
    sid = {"tg": f"{vid}#0", "dtg": vid, "vhd": f"{vid}#0", "gvqa": f"{vid}_0", "tal": f"{vid}#{TAL_ACTION}"}[task]
    sample = {
        "id": sid,
        "task": task,
        "video": vid,
        "duration": float(d),
        **fields,
        "source": f"synthetic_multitask:{split}",
    }
    return timeline, sample


def make_multitask_dataset(
    root: str,
    *,
    num_train: int = 236,
    num_val: int = 64,
    tasks: Sequence[str] = MULTITASK_TASKS,
    min_seconds: int = 8,
    max_seconds: int = 15,
    size: int = 56,
    distractors: float = 0.5,
    margin: int = 0,
    seed: int = 0,
    tokenizer: bool = True,
) -> dict[str, str]:
    """The demo's five-task world, fully offline: ``num_train`` + ``num_val`` videos PER TASK, one sample each.

    Each video lasts a whole number of seconds in [min_seconds, max_seconds] and shows ``multitask_sample``'s
    timeline on the clock (``marker_frame``, 2 frames per second). Writes ``root/videos/<split>_<task><i>.mp4``,
    ``root/frames/`` (``extract_frames`` at 2 fps), ``root/train.jsonl`` and ``root/val.jsonl`` (the tasks
    interleaved, split by video) and, with ``tokenizer``, ``root/tokenizer`` (the tiny tokenizer). Returns
    those paths under ``videos``, ``frames``, ``train``, ``val``, ``tokenizer``. Deterministic in its arguments.
    """
    import os

    from data_pipeline import extract_frames
    from data_pipeline.schema import validate_sample, write_jsonl

    tasks = tuple(tasks)
    if not tasks or len(set(tasks)) != len(tasks) or not set(tasks) <= set(MULTITASK_TASKS):
        raise ValueError(f"tasks must be distinct names among {MULTITASK_TASKS}, got {tasks}")
    if not 6 <= min_seconds <= max_seconds <= _GRID * _GRID:
        raise ValueError(f"need 6 <= min_seconds <= max_seconds <= 16, got {min_seconds}, {max_seconds}")
    if num_train < 1 or num_val < 0:
        raise ValueError(f"need num_train >= 1 and num_val >= 0, got {num_train}, {num_val}")
    if not 0.0 <= distractors <= 1.0:
        raise ValueError(f"distractors is a probability in [0, 1], got {distractors}")
    if not 0 <= margin or min_seconds - 2 * margin < 4:
        raise ValueError(f"margin must be >= 0 and leave >= 4 s inside the shortest video, got {margin}")
    if size < _GRID * 2 or size % _GRID:
        raise ValueError(f"size must be a multiple of {_GRID} and >= {_GRID * 2} px, got {size}")
    vdir, fdir = os.path.join(root, "videos"), os.path.join(root, "frames")
    os.makedirs(vdir, exist_ok=True)
    out = {"videos": vdir, "frames": fdir}
    world = dict(min_seconds=min_seconds, max_seconds=max_seconds, distractors=distractors, margin=margin, seed=seed)
    for split, count in (("train", num_train), ("val", num_val)):
        samples = []
        for i in range(count):
            for task in tasks:
                timeline, sample = multitask_sample(task, split, i, **world)
                validate_sample(sample)
                frames = (marker_frame(s, c, size=size) for s, c in enumerate(timeline) for _ in range(2))
                write_frames(os.path.join(vdir, sample["video"] + ".mp4"), frames, fps=2, size=(size, size))
                samples.append(sample)
        out[split] = os.path.join(root, f"{split}.jsonl")
        write_jsonl(out[split], samples)
    settings = extract_frames.Settings(fps=2.0, max_frames=448)
    with open(os.devnull, "w") as quiet:
        extract_frames.run(extract_frames.list_videos(vdir), fdir, settings, progress=False, log=quiet)
    if tokenizer:
        from data_pipeline.tiny_tokenizer import build_tiny_tokenizer

        out["tokenizer"] = build_tiny_tokenizer(os.path.join(root, "tokenizer"))
    return out
