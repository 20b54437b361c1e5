"""Host-side (numpy) position tables: LLM M-RoPE ids and the ViT's attention layout.

Nothing here imports JAX: these run in the input pipeline / on the host and produce arrays that the jitted
model consumes with static shapes.

``get_rope_index`` follows the original Qwen2.5-VL rule (Qwen's HF PR #35569, HF <= 4.57, vLLM): a text run
after a visual block restarts at ``max(position ids of that block) + 1``; the temporal id of temporal patch k
of a video is ``s + floor(k * second_per_grid_ts * tokens_per_second)`` with a float ``second_per_grid_ts``
(float32 arithmetic, as HF and vLLM). HF 5.x deviates for text after a video (notes/qwen25vl.md trap 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from tempr1_jax.models.qwen25vl.config import Qwen25VLConfig, VisionConfig


def _grids(grids, what: str) -> list[tuple[int, int, int]]:
    if grids is None:
        return []
    arr = np.asarray(grids, dtype=np.int64)
    if arr.size == 0:
        return []
    arr = arr.reshape(-1, 3)
    if np.any(arr <= 0):
        raise ValueError(f"{what} must be positive, got {arr.tolist()}")
    return [tuple(int(v) for v in row) for row in arr]


def get_rope_index(
    cfg: Qwen25VLConfig,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    *,
    image_grid_thw: Sequence | np.ndarray | None = None,
    video_grid_thw: Sequence | np.ndarray | None = None,
    second_per_grid_ts: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """M-RoPE position ids for a batch.

    input_ids: int [B, L]; attention_mask: [B, L] (1 = token, 0 = padding, left or right); grids in the order
    the visual blocks appear in the batch (row-major), (t, h, w) in 14-px patch units; second_per_grid_ts: one
    float per video (seconds per temporal patch).

    Returns (position_ids int32 [3, B, L] with 0 at padding, rope_deltas int32 [B]). A token generated after
    the prompt at cache length n (counting only non-padding tokens) gets position ``n + rope_deltas[b]`` on
    all 3 axes.
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"get_rope_index: input_ids must be [B, L], got shape {ids.shape}")
    b, seq = ids.shape
    mask = (
        np.ones_like(ids, dtype=bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    )
    if mask.shape != ids.shape:
        raise ValueError(f"get_rope_index: attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    images = iter(_grids(image_grid_thw, "image_grid_thw"))
    videos = _grids(video_grid_thw, "video_grid_thw")
    if videos and second_per_grid_ts is None:
        raise ValueError(
            "get_rope_index: second_per_grid_ts is required with videos (seconds per temporal patch, "
            "2 / fps); "
            "it sets the absolute-time temporal ids"
        )
    spg = [] if second_per_grid_ts is None else [float(s) for s in np.asarray(second_per_grid_ts).reshape(-1)]
    if len(spg) != len(videos):
        raise ValueError(f"get_rope_index: {len(videos)} videos but {len(spg)} second_per_grid_ts values")
    if any(not (math.isfinite(s) and s >= 0) for s in spg):
        raise ValueError(f"get_rope_index: second_per_grid_ts must be finite and >= 0, got {spg}")
    video_iter = iter(zip(videos, spg, strict=True))
    merge = cfg.vision.spatial_merge_size
    tps = np.float32(cfg.vision.tokens_per_second)
    img_id, vid_id = cfg.image_token_id, cfg.video_token_id

    pos = np.zeros((3, b, seq), np.int64)
    deltas = np.zeros((b,), np.int64)
    for bi in range(b):
        toks = ids[bi][mask[bi]]
        n = toks.shape[0]
        out = np.zeros((3, n), np.int64)
        s = 0  # next free position
        i = 0
        while i < n:
            tok = toks[i]
            if tok == img_id or tok == vid_id:
                is_video = tok == vid_id
                try:
                    if is_video:
                        (t, h, w), sec = next(video_iter)
                    else:
                        (t, h, w), sec = next(images), 0.0
                except StopIteration:
                    kind = "video" if is_video else "image"
                    raise ValueError(
                        f"get_rope_index: sample {bi} has more {kind} blocks than {kind}_grid_thw entries"
                    ) from None
                if h % merge or w % merge:
                    raise ValueError(f"get_rope_index: grid {(t, h, w)} not divisible by merge size {merge}")
                lh, lw = h // merge, w // merge
                count = t * lh * lw
                block = toks[i : i + count]
                if block.shape[0] != count or np.any(block != tok):
                    raise ValueError(
                        f"get_rope_index: sample {bi} token {i}: expected {count} consecutive "
                        f"{'video' if is_video else 'image'} pad tokens for grid {(t, h, w)}, "
                        f"found {int(np.sum(block == tok))} (of {block.shape[0]} left in the sequence)"
                    )
                if is_video:
                    interval = tps * np.float32(sec)
                    tt = np.floor(np.arange(t, dtype=np.float32) * interval).astype(np.int64)
                else:
                    tt = np.zeros((t,), np.int64)
                pt = np.broadcast_to(tt[:, None, None], (t, lh, lw)).reshape(-1)
                ph = np.broadcast_to(np.arange(lh)[None, :, None], (t, lh, lw)).reshape(-1)
                pw = np.broadcast_to(np.arange(lw)[None, None, :], (t, lh, lw)).reshape(-1)
                out[:, i : i + count] = np.stack([pt, ph, pw]) + s
                s = int(out[:, i : i + count].max()) + 1
                i += count
            else:
                j = i
                while j < n and toks[j] != img_id and toks[j] != vid_id:
                    j += 1
                out[:, i:j] = np.arange(s, s + j - i)[None, :]
                s += j - i
                i = j
        pos[:, bi, mask[bi]] = out
        deltas[bi] = (int(out.max()) + 1 - n) if n else 0
    leftover = sum(1 for _ in images), sum(1 for _ in video_iter)
    if any(leftover):
        raise ValueError(
            f"get_rope_index: {leftover[0]} image and {leftover[1]} video grids were not used by any "
            "pad block"
        )
    return pos.astype(np.int32), deltas.astype(np.int32)


def text_positions(attention_mask: np.ndarray) -> np.ndarray:
    """(3, B, L) positions for text-only batches: running count of non-padding tokens (0 at padding)."""
    mask = np.asarray(attention_mask).astype(np.int64)
    p = np.where(mask > 0, np.cumsum(mask, axis=1) - 1, 0)
    return np.broadcast_to(p[None], (3, *p.shape)).astype(np.int32)


# ----------------------------------------------------------------------------------------------------
# ViT layout: rope coordinates and gather tables for window / per-frame-pair attention


@dataclasses.dataclass(frozen=True)
class VisionSizes:
    """Static sizes of a packed vision batch (choose them per bucket; all jitted shapes derive from these).

    num_patches: patch rows (multiple of 4); num_windows: window blocks of ``window_patches`` (64) slots;
    num_frames: frame-pair blocks; frame_patches: slots per frame-pair block (>= the largest h * w).
    """

    num_patches: int
    num_windows: int
    num_frames: int
    frame_patches: int

    def fits(self, other: VisionSizes) -> bool:
        return all(getattr(self, f.name) >= getattr(other, f.name) for f in dataclasses.fields(self))


def required_vision_sizes(vcfg: VisionConfig, grids: Sequence) -> VisionSizes:
    """The smallest ``VisionSizes`` that holds these (t, h, w) grids."""
    gl = _grids(grids, "grid_thw")
    m, wm = vcfg.spatial_merge_size, vcfg.window_merged
    bad = [g for g in gl if g[1] % m or g[2] % m]
    if bad:
        raise ValueError(f"grid_thw {bad}: h and w must be multiples of the merge size {m}")
    n_patch = sum(t * h * w for t, h, w in gl)
    n_win = sum(t * -(-(h // m) // wm) * -(-(w // m) // wm) for t, h, w in gl)
    n_frames = sum(t for t, _, _ in gl)
    fp = max((h * w for _, h, w in gl), default=0)
    return VisionSizes(max(n_patch, 4), max(n_win, 1), max(n_frames, 1), max(fp, 1))


def bucket_vision_sizes(
    req: VisionSizes, *, patch_multiple: int = 256, block_multiple: int = 8, frame_multiple: int = 64
) -> VisionSizes:
    """Round sizes up so that batches of similar size share one compiled program.

    num_patches rounds up to ``patch_multiple``, num_windows / num_frames to ``block_multiple``, frame_patches
    to ``frame_multiple``.
    """

    def up(x: int, k: int) -> int:
        return -(-x // k) * k

    return VisionSizes(
        up(req.num_patches, patch_multiple),
        up(req.num_windows, block_multiple),
        up(req.num_frames, block_multiple),
        up(req.frame_patches, frame_multiple),
    )


def vision_layout(vcfg: VisionConfig, grids: Sequence, sizes: VisionSizes) -> dict[str, np.ndarray]:
    """Tables for the packed patch sequence of these visual inputs (concatenated in order).

    Returns int32 arrays:
      pos [P, 2]: (row, col) of each patch in 14-px units for the 2-D rope (0 for padding rows);
      win_index [W, 64], win_len [W]: per window block, the patch rows it holds (valid slots first) and
        their count;
      win_inverse [P]: flat slot (block * 64 + j) holding each patch row (padding rows point at slot 0);
      frame_index [F, S], frame_len [F], frame_inverse [P]: the same for per-frame-pair ("full") attention.
    Windows follow the reference: 4x4 merged units tiled over each temporal patch's merged grid, edge windows
    smaller; patches inside a window are ordered merged-unit-major as in HF.
    """
    gl = _grids(grids, "grid_thw")
    req = required_vision_sizes(vcfg, gl)
    if not sizes.fits(req):
        raise ValueError(f"vision_layout: grids {gl} need {req}, larger than the bucket {sizes}")
    m, wm, mu = vcfg.spatial_merge_size, vcfg.window_merged, vcfg.merge_unit
    wp = vcfg.window_patches
    P, W, F, S = sizes.num_patches, sizes.num_windows, sizes.num_frames, sizes.frame_patches
    pos = np.zeros((P, 2), np.int32)
    win_index = np.zeros((W, wp), np.int32)
    win_len = np.ones((W,), np.int32)  # empty blocks attend to one dummy slot (no NaNs)
    win_inverse = np.zeros((P,), np.int32)
    frame_index = np.zeros((F, S), np.int32)
    frame_len = np.ones((F,), np.int32)
    frame_inverse = np.zeros((P,), np.int32)

    off = 0  # patch row offset
    wb = 0  # window block counter
    fb = 0  # frame block counter
    for t, h, w in gl:
        lh, lw = h // m, w // m
        # Patch rows of this item, in processor order: (t, lh, lw, m, m).
        rows = off + np.arange(t * h * w).reshape(t, lh, lw, m, m)
        r = np.arange(lh)[:, None, None, None] * m + np.arange(m)[None, None, :, None]
        c = np.arange(lw)[None, :, None, None] * m + np.arange(m)[None, None, None, :]
        rr = np.broadcast_to(r, (lh, lw, m, m))
        cc = np.broadcast_to(c, (lh, lw, m, m))
        pos[off : off + t * h * w, 0] = np.broadcast_to(rr, (t, lh, lw, m, m)).reshape(-1)
        pos[off : off + t * h * w, 1] = np.broadcast_to(cc, (t, lh, lw, m, m)).reshape(-1)
        for ti in range(t):
            frame_rows = rows[ti].reshape(-1)
            frame_index[fb, : frame_rows.size] = frame_rows
            frame_len[fb] = frame_rows.size
            frame_inverse[frame_rows] = fb * S + np.arange(frame_rows.size)
            fb += 1
            for wi in range(-(-lh // wm)):
                for wj in range(-(-lw // wm)):
                    blk = rows[ti, wi * wm : (wi + 1) * wm, wj * wm : (wj + 1) * wm].reshape(-1)
                    win_index[wb, : blk.size] = blk
                    win_len[wb] = blk.size
                    win_inverse[blk] = wb * wp + np.arange(blk.size)
                    wb += 1
        off += t * h * w
    assert off % mu == 0
    return {
        "pos": pos,
        "win_index": win_index,
        "win_len": win_len,
        "win_inverse": win_inverse,
        "frame_index": frame_index,
        "frame_len": frame_len,
        "frame_inverse": frame_inverse,
    }


def pack_vision(
    cfg: Qwen25VLConfig,
    items: Sequence[tuple[np.ndarray, Sequence[int]]],
    sizes: VisionSizes | None = None,
) -> dict[str, np.ndarray]:
    """Pack visual inputs into the model's static-shape vision batch (numpy, host side).

    items: (pixel_values float [n_i, 1176], grid_thw (t, h, w)) in the order their pad blocks appear in the
    batch (row-major over samples, then position). ``preprocess.VideoInputs`` / ``ImageInputs`` work too.
    sizes: the static bucket (default: exactly what the items need, which recompiles for every new shape).
    Returns ``vision_layout``'s tables plus pixel_values float32 [P, 1176] (zero rows at the end).
    """
    pix, grids = [], []
    for k, item in enumerate(items):
        if hasattr(item, "pixel_values"):
            pv, g = item.pixel_values, item.grid_thw
        else:
            pv, g = item
        pv = np.asarray(pv, np.float32)
        g = tuple(int(x) for x in np.asarray(g).reshape(3))
        if pv.ndim != 2 or pv.shape[1] != cfg.vision.patch_dim:
            raise ValueError(
                f"pack_vision: item {k} pixel_values shape {pv.shape}, want [n, {cfg.vision.patch_dim}]"
            )
        if pv.shape[0] != g[0] * g[1] * g[2]:
            raise ValueError(
                f"pack_vision: item {k} has {pv.shape[0]} patch rows but grid {g} needs {np.prod(g)}"
            )
        pix.append(pv)
        grids.append(g)
    req = required_vision_sizes(cfg.vision, grids)
    sizes = req if sizes is None else sizes
    out = vision_layout(cfg.vision, grids, sizes)
    pixel_values = np.zeros((sizes.num_patches, cfg.vision.patch_dim), np.float32)
    if pix:
        cat = np.concatenate(pix, axis=0)
        pixel_values[: cat.shape[0]] = cat
    out["pixel_values"] = pixel_values
    return out


def check_vision_tokens(cfg: Qwen25VLConfig, input_ids: np.ndarray, grids: Sequence) -> None:
    """Raise if the image/video pad tokens in ``input_ids`` do not match the merged-token count of
    ``grids``."""
    ids = np.asarray(input_ids)
    n_tok = int(np.sum((ids == cfg.image_token_id) | (ids == cfg.video_token_id)))
    m = cfg.vision.merge_unit
    n_feat = sum(t * h * w // m for t, h, w in _grids(grids, "grid_thw"))
    if n_tok != n_feat:
        raise ValueError(
            f"{n_tok} image/video pad tokens in input_ids but the visual inputs give {n_feat} features"
        )


def expand_vision_pads(
    cfg: Qwen25VLConfig, input_ids: Sequence[int], token_counts: Sequence[int]
) -> list[int]:
    """Repeat each single image/video pad token (as a chat template emits it) to its visual token count.

    input_ids: one prompt's token ids with one ``<|image_pad|>`` / ``<|video_pad|>`` per visual input, in
    order; token_counts: LLM tokens of each visual input in the same order (``VideoInputs.num_tokens``).
    """
    counts = list(token_counts)
    out: list[int] = []
    k = 0
    for tok in input_ids:
        if tok in (cfg.image_token_id, cfg.video_token_id):
            if k >= len(counts):
                raise ValueError(
                    f"expand_vision_pads: more visual pad tokens than the {len(counts)} counts given"
                )
            out.extend([int(tok)] * int(counts[k]))
            k += 1
        else:
            out.append(int(tok))
    if k != len(counts):
        raise ValueError(f"expand_vision_pads: {len(counts)} counts given but {k} visual pad tokens found")
    return out


def pack_padded_vision(
    cfg: Qwen25VLConfig,
    pixel_values: np.ndarray,
    grid_thw: np.ndarray,
    sizes: VisionSizes | None = None,
    input_ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``pack_vision`` for a batch that stores one video per row, padded: pixel_values [B, N, 1176] (the first
    t*h*w rows of each are real) and grid_thw [B, 3] (a row of zeros = no video), as the data pipeline emits.

    sizes defaults to ``bucket_vision_sizes`` of what the batch needs. With ``input_ids`` [B, L], each row's
    image/video pad count is checked against its grid.
    """
    pv = np.asarray(pixel_values)
    grids = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    if pv.ndim != 3 or pv.shape[0] != grids.shape[0]:
        raise ValueError(f"pack_padded_vision: pixel_values {pv.shape} and grid_thw {grids.shape} disagree")
    items = []
    for b, g in enumerate(grids):
        n = int(np.prod(g))
        if n == 0:
            continue
        if n > pv.shape[1]:
            raise ValueError(
                f"pack_padded_vision: row {b} grid {g.tolist()} needs {n} patches, have {pv.shape[1]}"
            )
        items.append((pv[b, :n], tuple(int(x) for x in g)))
    if input_ids is not None:
        ids = np.asarray(input_ids)
        for b, g in enumerate(grids):
            have = int(np.sum((ids[b] == cfg.image_token_id) | (ids[b] == cfg.video_token_id)))
            want = int(np.prod(g)) // cfg.vision.merge_unit
            if have != want:
                raise ValueError(
                    f"pack_padded_vision: row {b} has {have} visual pad tokens, grid gives {want}"
                )
    if sizes is None:
        sizes = bucket_vision_sizes(required_vision_sizes(cfg.vision, [g for _, g in items]))
    return pack_vision(cfg, items, sizes)
