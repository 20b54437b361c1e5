"""Benchmark metrics for the TempR1 tasks, equal to the community's official evaluators (plain numpy).

Every number is a percentage in [0, 100] (unrounded float). Times are seconds. Nothing here imports JAX or
TensorFlow; string parsing happens before this module (``tempr1_jax.evaluate``).

What each task reports (metric names: docs/formats.md; "official" = the script whose numbers we reproduce):

- ``tg`` / ``dtg``: ``R1@0.3``, ``R1@0.5``, ``R1@0.7``, ``mIoU``. ``tg``: the top-1 window (the first one, as
  in moment_detr / VTG-LLM) against the best-matching ground-truth window. ``dtg``: the i-th predicted window
  against the i-th query's window, averaged over queries (TempR1's paragraph protocol); missing windows are 0.
- ``vhd``: ``mIoU`` (IoU of the unions of predicted and ground-truth windows, TempR1's number) and the
  QVHighlights moment-retrieval metrics of jayleicn/moment_detr ``standalone_eval``: ``MR-R1@t``,
  ``MR-mAP@t`` for t in 0.5:0.05:0.95, ``MR-mAP`` (their average), ``MR-{short,middle,long}-mAP``; with
  saliency predictions ``HL-mAP-<level>`` and ``HL-HIT@1-<level>`` for Fair (>=2), Good (>=3), VeryGood (>=4).
- ``gvqa``: NExT-GQA (doc-doc/NExT-GQA ``eval_ground.py``): ``Acc``, ``mIoU``, ``IoU@0.3``, ``IoU@0.5``,
  ``mIoP``, ``IoP@0.3``, ``IoP@0.5``, ``Acc@GQA`` (correct and IoP >= 0.5), plus ReXTime's ``Acc&IoU@0.3``,
  ``Acc&IoU@0.5`` (correct and IoU >= t).
- ``tal``: ``F1@{0.1,0.3,0.5,0.7}`` and ``mF1`` (MUSEG / E.T.Bench per-sample F1 without one-to-one matching),
  detection ``mAP@t`` and ``mAP`` with the interpolated AP of the official ActivityNet code (classes are the
  samples' ``action``; ActivityNet-1.3 t = 0.5:0.05:0.95, THUMOS14 t = 0.3:0.1:0.7).
- ``mcq`` (evaluation only: TempCompass, MVBench, VideoMME, Perception Test): ``Acc`` and ``Acc/<category>``
  (top-1 accuracy overall and per value of the samples' ``category``).

Ground truth is the dataset's own: ``released_segments`` when a converter changed the segments (clipped them to
the video or dropped some for the rewards), else ``segments`` (docs/formats.md, "What the metrics score").

The rules for awkward predictions live in :class:`Rules`; each has the official behaviour as default unless
noted, and the alternatives MLLM-style scripts use. docs/evaluation.md has the table of rules.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from data_pipeline.schema import TASKS

R1_THRESHOLDS = (0.3, 0.5, 0.7)
# moment_detr rounds its thresholds to 2 decimals; the official ActivityNet code uses the raw linspace
# (its 0.9 is 0.8999999999999999) and AFSD's THUMOS14 script a literal list. We use each as the original does.
MR_THRESHOLDS = tuple(float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10))
ANET_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
THUMOS_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
F1_THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
GQA_THRESHOLDS = (0.3, 0.5)
HL_LEVELS = (("Fair", 2), ("Good", 3), ("VeryGood", 4))
MR_LENGTH_RANGES = (("short", 0.0, 10.0), ("middle", 10.0, 30.0), ("long", 30.0, 150.0))
CLIP_SECONDS = 2.0  # QVHighlights saliency clip length

# ----------------------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------------------

RULE_CHOICES: dict[str, tuple[Any, ...]] = {
    "missing": ("zero", "skip", "error"),
    "reversed": ("zero", "swap", "unparsable"),
    "threshold": ("ge", "gt"),
    "r1_window": ("first", "top_score"),
    "mr_empty": ("skip", "zero"),
    "map_zero_length": ("match", "miss"),
    "ties": ("official", "stable", "reverse"),
    "gvqa_span": ("hull", "first", "union"),
    "hl_saliency": ("given", "from_segments"),
    "tal_protocol": ("auto", "activitynet", "thumos14"),
    "unknown_ids": ("error", "ignore"),
}

RULE_HELP: dict[str, str] = {
    "missing": "a sample without a prediction: 'zero' scores it as a failure (MLLM scripts: TimeZero, "
    "Time-R1, E.T.Bench); 'skip' leaves it out of every denominator (NExT-GQA eval_ground, moment_detr "
    "match_number=False, VTG-LLM --sample); 'error' refuses (moment_detr match_number=True)",
    "reversed": "a parsed window with start > end: 'zero' keeps it but it overlaps nothing (moment_detr, "
    "VTG-LLM, TimeZero, NExT-GQA); 'swap' reorders it (THUMOS14 kit, E.T.Bench); 'unparsable' discards the "
    "whole prediction (docs/rewards.md, MUSEG)",
    "threshold": "'ge': IoU >= t counts (moment_detr, ActivityNet, NExT-GQA, VTG-LLM, TimeZero); 'gt': "
    "IoU > t (2D-TAN, Time-R1 eval_all, THUMOS14 kit)",
    "clip": "clip parsed 'segments' to [0, duration] (completions are always clipped by the completion parser; "
    "no official evaluator clips)",
    "r1_window": "window used for R1/mIoU of tg and MR-R1 of vhd: 'first' in output order (moment_detr "
    "compute_mr_r1, VTG-LLM) or 'top_score' (highest score, first on ties)",
    "max_windows": "MR-mAP keeps the first N windows of each prediction in list order, before sorting by "
    "score (moment_detr: 10); 0 keeps all",
    "mr_empty": "a vhd prediction with zero windows: 'skip' leaves the query out of MR-mAP (moment_detr) or "
    "'zero' counts AP 0 (R1 always counts it as a miss)",
    "map_zero_length": "in mAP matching a zero-length prediction against a zero-length ground truth "
    "(0/0 IoU): 'match' at every threshold (official ActivityNet and moment_detr, via NaN) or 'miss'",
    "ties": "order of equal-score predictions in mAP: 'official' = 'stable' for MR-mAP (moment_detr sorts "
    "stably) and 'reverse' for TAL mAP (ActivityNet's argsort()[::-1]: last in input first)",
    "gvqa_span": "several evidence windows in gvqa: 'hull' (their hull, scored by NExT-GQA's per-segment "
    "max IoU/IoP), 'first' (the first window, same scoring) or 'union' (IoU/IoP of the unions)",
    "hl_saliency": "highlight scores: 'given' uses the prediction's 'saliency'; 'from_segments' scores each "
    "2-s clip by how much of it the predicted windows cover",
    "tal_protocol": "mAP thresholds: 'activitynet' 0.5:0.05:0.95, 'thumos14' 0.3:0.1:0.7, 'auto' = thumos14 "
    "when every tal sample's source mentions THUMOS, else activitynet",
    "unknown_ids": "a prediction whose id is not in the annotations: 'error' or 'ignore' (AFSD drops them)",
}


@dataclasses.dataclass(frozen=True)
class Rules:
    """How awkward predictions are scored. Defaults reproduce the official evaluators (see RULE_HELP)."""

    missing: str = "zero"
    reversed: str = "zero"
    threshold: str = "ge"
    clip: bool = False
    r1_window: str = "first"
    max_windows: int = 10
    mr_empty: str = "skip"
    map_zero_length: str = "match"
    ties: str = "official"
    gvqa_span: str = "hull"
    hl_saliency: str = "given"
    tal_protocol: str = "auto"
    unknown_ids: str = "error"

    def __post_init__(self) -> None:
        for name, choices in RULE_CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"rule {name!r}: {value!r} is not one of {', '.join(map(repr, choices))}")
        if not isinstance(self.clip, bool):
            raise ValueError(f"rule 'clip': expected true or false, got {self.clip!r}")
        if isinstance(self.max_windows, bool) or not isinstance(self.max_windows, int) or self.max_windows < 0:
            raise ValueError(f"rule 'max_windows': expected an integer >= 0, got {self.max_windows!r}")

    @classmethod
    def make(cls, **rules: Any) -> Rules:
        """``Rules(**rules)`` with a clear error naming an unknown rule."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(rules) - names)
        if unknown:
            raise ValueError(f"unknown rule(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(names))}")
        return cls(**rules)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One sample's prediction, already parsed.

    segments: float64 [K, 2] seconds in output order, or None when unparsable (K = 0 is an empty answer).
    scores: float64 [K] confidences, or None (all equal: output order is the ranking).
    answer: gvqa / mcq option letter, or None when absent / unparsable.
    saliency: float64 [C] score per 2-second clip (vhd highlight metrics), or None.
    windows_given: False for a highlight-only vhd prediction (saliency but neither windows nor a completion):
        like moment_detr, window metrics are computed only when some prediction gives windows.
    """

    segments: np.ndarray | None
    scores: np.ndarray | None = None
    answer: str | None = None
    saliency: np.ndarray | None = None
    windows_given: bool = True


# ----------------------------------------------------------------------------------------------------------
# Temporal IoU. Two formulas, each as the evaluator it stands for computes it (they agree mathematically but
# not always in the last bit, and a last bit decides `IoU >= 0.7` for spans like (0, 2.1) vs (0, 3.0)).
# ----------------------------------------------------------------------------------------------------------


def iou_hull(ps: np.ndarray, pe: np.ndarray, gs: np.ndarray, ge: np.ndarray) -> np.ndarray:
    """IoU = inter / hull (moment_detr paired, VTG-LLM, TimeZero, NExT-GQA); broadcasting; 0 without overlap.

    A reversed prediction (start > end) never overlaps; zero-length spans score 0.
    """
    inter = np.minimum(pe, ge) - np.maximum(ps, gs)
    hull = np.maximum(pe, ge) - np.minimum(ps, gs)
    ok = inter > 0
    return np.where(ok, inter / np.where(ok, hull, 1.0), 0.0)


def iou_sum(ps: np.ndarray, pe: np.ndarray, gs: np.ndarray, ge: np.ndarray, zero_length: str = "miss") -> np.ndarray:
    """IoU = inter / (len_p + len_g - inter) (ActivityNet segment_iou, moment_detr cross IoU); broadcasting.

    ``zero_length="match"`` returns +inf where both spans have zero length (the official code's 0/0 = NaN,
    which passes every threshold and sorts first); otherwise 0 there. A reversed prediction scores 0.
    """
    inter = np.minimum(pe, ge) - np.maximum(ps, gs)
    ok = inter > 0
    union = (pe - ps) + (ge - gs) - inter
    iou = np.where(ok, inter / np.where(ok, union, 1.0), 0.0)
    if zero_length == "match":
        iou = np.where((pe == ps) & (ge == gs), np.inf, iou)
    return iou


def _passes(values: np.ndarray, threshold: float, op: str) -> np.ndarray:
    return values > threshold if op == "gt" else values >= threshold


def _pct(x: Any) -> float:
    return float(100.0 * np.mean(x)) if np.size(x) else 0.0


def threshold_name(t: float) -> str:
    """0.5 -> '0.5', 0.55 -> '0.55', 0.8999999999999999 -> '0.9' (up to two decimals)."""
    return f"{t:.2f}".rstrip("0").rstrip(".")


# ----------------------------------------------------------------------------------------------------------
# Segmented helpers (groups are contiguous runs of a sorted group-id array)
# ----------------------------------------------------------------------------------------------------------


def _group_starts(group: np.ndarray, n_groups: int) -> np.ndarray:
    """Index of each group's first element in a non-decreasing group-id array (len(group) if empty)."""
    return np.searchsorted(group, np.arange(n_groups), side="left")


def _segmented_reverse_cummax(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """out[..., i] = max(values[..., j] for j >= i in i's group); exact (log-step suffix max, no sorting)."""
    out = np.array(values, dtype=np.float64, copy=True)
    n = group.shape[0]
    longest = int(np.bincount(group).max()) if n else 0
    shift = 1
    while shift < longest:
        same = group[:-shift] == group[shift:]
        np.maximum(out[..., :-shift], np.where(same, out[..., shift:], -np.inf), out=out[..., :-shift])
        shift *= 2
    return out


def _ranks(group: np.ndarray, n_groups: int) -> np.ndarray:
    """0-based position of each element within its group (group ids non-decreasing)."""
    return np.arange(len(group)) - _group_starts(group, n_groups)[group]


def _pad_flat(group: np.ndarray, rows: np.ndarray, n_groups: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Flattened [M, 2] rows of sorted groups -> padded [n_groups, width, 2] (zeros) and mask [n_groups, width]."""
    out = np.zeros((n_groups, width, 2))
    mask = np.zeros((n_groups, width), bool)
    r = _ranks(group, n_groups)
    out[group, r] = rows
    mask[group, r] = True
    return out, mask


def union_lengths(group: np.ndarray, starts: np.ndarray, ends: np.ndarray, n_groups: int) -> np.ndarray:
    """Length of the union of each group's intervals (reversed ones ignored, touching ones merge). [G]."""
    keep = ends >= starts
    group, starts, ends = group[keep], starts[keep], ends[keep]
    out = np.zeros(n_groups)
    if len(group) == 0:
        return out
    order = np.lexsort((starts, group))
    g, s, e = group[order], starts[order], ends[order]
    uniq, inv = np.unique(np.concatenate([s, e]), return_inverse=True)
    rs, re_ = inv[: len(s)].astype(np.int64), inv[len(s) :].astype(np.int64)
    off = g.astype(np.int64) * (len(uniq) + 1)
    prev_max_end = np.concatenate([[-1], np.maximum.accumulate(re_ + off)[:-1]])
    new_block = (rs + off) > prev_max_end
    first = np.flatnonzero(new_block)
    block_len = np.maximum.reduceat(e, first) - s[first]
    np.add.at(out, g[first], block_len)
    return out


def _flatten(segs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """List of [K_i, 2] arrays -> (group id [M], starts [M], ends [M])."""
    sizes = np.fromiter((len(s) for s in segs), dtype=np.int64, count=len(segs))
    group = np.repeat(np.arange(len(segs)), sizes)
    cat = np.concatenate([np.asarray(s, np.float64).reshape(-1, 2) for s in segs]) if segs else np.zeros((0, 2))
    return group, cat[:, 0], cat[:, 1]


def _union_overlap(
    preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: |U_p ∩ U_g|, |U_p| and |U_p ∪ U_g| of the unions of each side's intervals. 3 x [N]."""
    n = len(preds)
    gp, sp, ep = _flatten(preds)
    gg, sg, eg = _flatten(gts)
    lp = union_lengths(gp, sp, ep, n)
    lg = union_lengths(gg, sg, eg, n)
    la = union_lengths(np.concatenate([gp, gg]), np.concatenate([sp, sg]), np.concatenate([ep, eg]), n)
    return lp + lg - la, lp, la


def union_iou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> np.ndarray:
    """Per-sample |U_p ∩ U_g| / |U_p ∪ U_g| of the unions of each side's intervals (many-to-one). [N]."""
    inter, _, la = _union_overlap(preds, gts)
    ok = la > 0
    return np.where(ok, inter / np.where(ok, la, 1.0), 0.0)


def _pad(segs: Sequence[np.ndarray], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """List of [K_i, 2] -> padded [N, W, 2] (zeros) and mask [N, W]."""
    sizes = np.array([len(s) for s in segs], dtype=np.int64)
    w = max(int(sizes.max()) if len(sizes) else 0, 1) if width is None else width
    out = np.zeros((len(segs), w, 2))
    mask = np.arange(w)[None, :] < sizes[:, None]
    if len(segs):
        out[mask] = np.concatenate([np.asarray(s, np.float64).reshape(-1, 2) for s in segs])
    return out, mask


# ----------------------------------------------------------------------------------------------------------
# Greedy detection matching + interpolated AP (ActivityNet / moment_detr compute_average_precision_detection)
# ----------------------------------------------------------------------------------------------------------


def greedy_match(
    group: np.ndarray,
    pred: np.ndarray,
    gt_group: np.ndarray,
    gt: np.ndarray,
    n_groups: int,
    thresholds: Sequence[float],
    op: str = "ge",
    zero_length: str = "match",
) -> np.ndarray:
    """True positives of the official greedy matching, vectorised over groups and thresholds.

    group: int [N] non-decreasing; within a group, predictions are in processing order (highest score first).
    pred: float [N, 2] seconds. gt_group: int [M] non-decreasing, gt: float [M, 2]: each group's ground truth.
    Each prediction takes the unmatched ground truth of its group with the highest IoU (``iou_sum``; among
    equal IoUs the last one, as ``argsort()[::-1]`` visits them) if that IoU passes the threshold; that ground
    truth is then locked. Returns bool [T, N].
    """
    thr = np.asarray(thresholds, np.float64)
    n_t, n = len(thr), len(group)
    tp = np.zeros((n_t, n), bool)
    if n == 0:
        return tp
    starts = _group_starts(group, n_groups)
    n_pred = np.bincount(group, minlength=n_groups)
    n_gt = np.bincount(gt_group, minlength=n_groups)
    cap = np.where(n_gt <= 1, 1, 2 ** np.ceil(np.log2(np.maximum(n_gt, 1))).astype(np.int64))
    active = n_pred > 0
    for c in np.unique(cap[active]):
        c = int(c)
        idx = np.flatnonzero(active & (cap == c))
        idx = idx[np.argsort(-n_pred[idx], kind="stable")]  # most predictions first: active set is a prefix
        local = np.full(n_groups, -1)
        local[idx] = np.arange(len(idx))
        sel = local[gt_group] >= 0
        sub_group = local[gt_group[sel]]
        order = np.argsort(sub_group, kind="stable")
        gt_pad, gt_mask = _pad_flat(sub_group[order], gt[sel][order], len(idx), c)
        locked = np.zeros((n_t, len(idx), c), bool)
        counts = n_pred[idx]
        for p in range(int(counts[0])):
            n_act = int(np.searchsorted(-counts, -p, side="left"))  # groups with more than p predictions
            rows = starts[idx[:n_act]] + p
            iou = iou_sum(
                pred[rows, 0][:, None],
                pred[rows, 1][:, None],
                gt_pad[:n_act, :, 0],
                gt_pad[:n_act, :, 1],
                zero_length,
            )  # [A, C]
            ok = gt_mask[:n_act][None] & ~locked[:, :n_act]
            ok &= (iou[None] > thr[:, None, None]) if op == "gt" else (iou[None] >= thr[:, None, None])
            score = np.where(ok, iou[None], -np.inf)
            j = c - 1 - np.argmax(score[..., ::-1], axis=-1)  # [T, A], last index among equal IoUs
            hit = ok.any(-1)
            tp[:, rows] = hit
            t_i, a_i = np.nonzero(hit)
            locked[t_i, a_i, j[t_i, a_i]] = True
    return tp


def interpolated_ap(group: np.ndarray, tp: np.ndarray, npos: np.ndarray) -> np.ndarray:
    """VOC2011 all-point interpolated AP per group (ActivityNet ``interpolated_prec_rec``).

    group: int [N] non-decreasing, predictions ranked within each group. tp: bool [T, N]. npos: [G] number of
    ground truths per group. AP = sum over true positives of max(precision at this rank or below) / npos.
    Returns [T, G] (0 for a group without predictions or without ground truth).
    """
    n_groups = len(npos)
    n_t, n = tp.shape
    ap = np.zeros((n_t, n_groups))
    if n == 0:
        return ap
    starts = _group_starts(group, n_groups)
    cs = np.cumsum(tp, axis=1)
    base = np.where(starts > 0, cs[:, np.maximum(starts - 1, 0)], 0)  # [T, G]
    ctp = cs - base[:, group]
    rank = np.arange(n) - starts[group] + 1
    prec = ctp / rank
    mprec = _segmented_reverse_cummax(prec, group)
    contrib = np.where(tp, mprec, 0.0)
    for t in range(n_t):
        ap[t] = np.bincount(group, weights=contrib[t], minlength=n_groups)
    ok = npos > 0
    ap[:, ok] /= npos[ok]
    ap[:, ~ok] = 0.0
    return ap


def _rank_order(group: np.ndarray, scores: np.ndarray, ties: str) -> np.ndarray:
    """Permutation sorting by (group, -score) with equal scores in input order ('stable') or reversed."""
    idx = np.arange(len(group))
    return np.lexsort((idx if ties == "stable" else -idx, -scores, group))


# ----------------------------------------------------------------------------------------------------------
# Highlight detection AP (moment_detr utils.get_ap on sklearn's precision_recall_curve), vectorised over rows
# ----------------------------------------------------------------------------------------------------------


def highlight_ap(labels: np.ndarray, scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """QVHighlights highlight AP: mean over recall steps of interpolated precision (moment_detr ``get_ap``).

    labels: {0,1} [R, C], or [R, K, C] for K label rows sharing each row's scores; scores: [R, C];
    lengths: [R] valid clips per row (the rest is padding). All-negative label rows score 0 and all-positive
    ones 1, as ``get_ap`` does. Equal scores form one threshold (several positives may arrive in one recall
    step, which then counts once). Returns [R] or [R, K].
    """
    squeeze = labels.ndim == 2
    lab = (labels[:, None, :] if squeeze else labels).astype(np.int8)
    r, _, c = lab.shape
    col = np.arange(c)
    valid = col[None, :] < lengths[:, None]
    s = np.where(valid, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")  # one sort per row, shared by its K label rows
    s_sorted = np.take_along_axis(s, order, 1)  # padding (-inf) sorts last: valid clips stay a prefix
    differs = s_sorted[:, 1:] != s_sorted[:, :-1]
    edge = np.ones((r, 1), bool)
    is_end = valid & np.concatenate([differs, edge], 1)  # last clip of a group of equal scores
    is_start = valid & np.concatenate([edge, differs], 1)
    before = np.maximum.accumulate(np.where(is_start, col, 0), axis=1) - 1  # clip before the group, or -1
    y = np.take_along_axis(lab, order[:, None, :], 2) * valid[:, None, :]
    tp = np.cumsum(y, axis=2, dtype=np.int32)
    # A group adds recall iff it holds a positive: the last positive so far lies after the clip before it.
    last_pos = np.maximum.accumulate(np.where(y > 0, col, -1), axis=2)
    step = is_end[:, None, :] & (last_pos > before[:, None, :])
    prec = np.where(is_end[:, None, :], tp / (col + 1), -np.inf)
    interp = np.maximum.accumulate(prec[..., ::-1], axis=2)[..., ::-1]
    ap = np.where(step, interp, 0.0).sum(2) / np.maximum(step.sum(2), 1)
    npos = tp[..., -1]
    ap = np.where(npos == 0, 0.0, ap)
    ap = np.where((npos == lengths[:, None]) & (lengths[:, None] > 0), 1.0, ap)
    return ap[:, 0] if squeeze else ap


# ----------------------------------------------------------------------------------------------------------
# Per-task scoring
# ----------------------------------------------------------------------------------------------------------


def _segments_of(sample: Mapping) -> np.ndarray:
    """[K, 2] the ground truth scored: the dataset's own segments (``released_segments`` when a converter changed
    them, else ``segments``; docs/formats.md)."""
    return np.asarray(sample.get("released_segments", sample["segments"]), np.float64).reshape(-1, 2)


def _pred_segments(pred: Prediction | None) -> np.ndarray:
    """Windows of a prediction; a missing or unparsable one has none."""
    if pred is None or pred.segments is None:
        return np.zeros((0, 2))
    return pred.segments


def _top1(pred: Prediction | None, rule: str) -> np.ndarray:
    """[2] the window R1 uses, or NaNs (no window)."""
    segs = _pred_segments(pred)
    if len(segs) == 0:
        return np.full(2, np.nan)
    if rule == "top_score" and pred is not None and pred.scores is not None:
        return segs[int(np.argmax(pred.scores))]
    return segs[0]


def _best_iou(top1: np.ndarray, gts: Sequence[np.ndarray]) -> np.ndarray:
    """Per sample max hull IoU of one window against that sample's ground truths ([N, 2] -> [N])."""
    gt, mask = _pad(gts)
    iou = iou_hull(top1[:, None, 0], top1[:, None, 1], gt[..., 0], gt[..., 1])
    iou = np.where(mask & ~np.isnan(iou), iou, 0.0)
    return iou.max(1) if iou.shape[1] else np.zeros(len(gts))


def _r1_block(ious: np.ndarray, op: str, prefix: str = "R1") -> dict[str, float]:
    out = {f"{prefix}@{threshold_name(t)}": _pct(_passes(ious, t, op)) for t in R1_THRESHOLDS}
    out["mIoU"] = _pct(ious)
    return out


def score_tg(samples: Sequence[Mapping], preds: Sequence[Prediction | None], rules: Rules) -> dict[str, float]:
    """Temporal grounding: R1@{0.3,0.5,0.7} and mIoU of the top-1 window vs the best ground-truth window."""
    top1 = np.array([_top1(p, rules.r1_window) for p in preds]).reshape(-1, 2)
    ious = _best_iou(top1, [_segments_of(s) for s in samples])
    return _r1_block(ious, rules.threshold)


def score_dtg(samples: Sequence[Mapping], preds: Sequence[Prediction | None], rules: Rules) -> dict[str, float]:
    """Dense grounding: i-th predicted window vs i-th query's window, R1 and mIoU over all queries."""
    gts = [_segments_of(s) for s in samples]
    ps = []
    for g, p in zip(gts, preds, strict=True):
        segs = _pred_segments(p)[: len(g)]
        pad = np.full((len(g), 2), np.nan)
        pad[: len(segs)] = segs
        ps.append(pad)
    pc = np.concatenate(ps) if ps else np.zeros((0, 2))
    gc = np.concatenate(gts) if gts else np.zeros((0, 2))
    ious = iou_hull(pc[:, 0], pc[:, 1], gc[:, 0], gc[:, 1])
    ious = np.where(np.isnan(ious), 0.0, ious)
    return _r1_block(ious, rules.threshold)


def moment_retrieval(
    preds: Sequence[Prediction | None], gts: Sequence[np.ndarray], rules: Rules
) -> dict[str, dict[str, float]]:
    """QVHighlights moment retrieval exactly as moment_detr ``eval_moment_retrieval`` reports it.

    Returns ``{range: {"MR-mAP@t", "MR-mAP", "MR-R1@t"}}`` for range in full, short (0, 10], middle (10, 30],
    long (30, 150] (seconds of ground-truth window length; other windows are dropped and so are queries left
    without any; predictions are not filtered). R1 uses one window per query (``Rules.r1_window``) against
    its best ground truth; mAP the first ``Rules.max_windows`` windows, greedy matching and interpolated AP
    per query, averaged over queries (empty predictions left out under ``mr_empty="skip"``), then over t.
    """
    n = len(preds)
    top1 = np.array([_top1(p, rules.r1_window) for p in preds]).reshape(-1, 2)
    nonempty = np.array([p is None or p.segments is None or len(p.segments) > 0 for p in preds], bool)
    keep = nonempty if rules.mr_empty == "skip" else np.ones(n, bool)
    # Predicted windows, flattened and ranked within each query (moment_detr: stable sort by score).
    segs, scores = [], []
    for p in preds:
        w = _pred_segments(p)
        sc = p.scores if (p is not None and p.scores is not None) else np.zeros(len(w))
        if rules.max_windows:
            w, sc = w[: rules.max_windows], sc[: rules.max_windows]
        segs.append(w)
        scores.append(sc)
    pg, ps, pe = _flatten(segs)
    order = _rank_order(
        pg, np.concatenate(scores) if scores else np.zeros(0), "reverse" if rules.ties == "reverse" else "stable"
    )
    pg, pw = pg[order], np.stack([ps, pe], 1)[order]
    gg, gs, ge = _flatten(gts)
    gw = np.stack([gs, ge], 1)
    out: dict[str, dict[str, float]] = {}
    for name, lo, hi in (("full", None, None),) + MR_LENGTH_RANGES:
        m = np.ones(len(gg), bool) if lo is None else ((ge - gs) > lo) & ((ge - gs) <= hi)
        in_range = np.zeros(n, bool)
        in_range[gg[m]] = True
        idx = np.flatnonzero(in_range)
        if not len(idx):
            continue
        remap = np.full(n, -1)
        remap[idx] = np.arange(len(idx))
        sub_gg = remap[gg[m]]
        pm = in_range[pg]
        sub_pg = remap[pg[pm]]
        tp = greedy_match(
            sub_pg, pw[pm], sub_gg, gw[m], len(idx), MR_THRESHOLDS, rules.threshold, rules.map_zero_length
        )
        ap = interpolated_ap(sub_pg, tp, np.bincount(sub_gg, minlength=len(idx)).astype(np.float64))
        iou = iou_hull(top1[gg[m], 0], top1[gg[m], 1], gs[m], ge[m])
        r1_iou = np.maximum.reduceat(iou, _group_starts(sub_gg, len(idx)))
        k = keep[idx]
        block = {f"MR-mAP@{threshold_name(t)}": _pct(ap[j, k]) for j, t in enumerate(MR_THRESHOLDS)}
        block["MR-mAP"] = float(np.mean(list(block.values())))
        block.update({f"MR-R1@{threshold_name(t)}": _pct(_passes(r1_iou, t, rules.threshold)) for t in MR_THRESHOLDS})
        out[name] = block
    return out


def score_vhd(samples: Sequence[Mapping], preds: Sequence[Prediction | None], rules: Rules) -> dict[str, float]:
    """QVHighlights: mIoU of unions, MR R1/mAP (full and by GT length), HL mAP/HIT@1 given saliency."""
    out: dict[str, float] = {}
    if any(p is not None and p.windows_given for p in preds) or all(p is None for p in preds):
        gts = [_segments_of(s) for s in samples]
        out["mIoU"] = _pct(union_iou([_pred_segments(p) for p in preds], gts))
        mr = moment_retrieval(preds, gts, rules)
        out.update(mr["full"])
        for name, _, _ in MR_LENGTH_RANGES:
            if name in mr:
                out[f"MR-{name}-mAP"] = mr[name]["MR-mAP"]
    out.update(highlight(samples, preds, rules))
    return out


def _saliency_from_segments(segs: np.ndarray, n_clips: int) -> np.ndarray:
    """Fraction of each 2-s clip covered by the union of the windows. [n_clips]."""
    lo = np.arange(n_clips) * CLIP_SECONDS
    hi = lo + CLIP_SECONDS
    segs = segs[segs[:, 1] >= segs[:, 0]] if len(segs) else segs
    if len(segs) == 0:
        return np.zeros(n_clips)
    segs = segs[np.argsort(segs[:, 0], kind="stable")]
    merged = [list(segs[0])]
    for s, e in segs[1:]:
        if s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    m = np.asarray(merged)
    cover = np.clip(np.minimum(hi[:, None], m[None, :, 1]) - np.maximum(lo[:, None], m[None, :, 0]), 0, None)
    return cover.sum(1) / CLIP_SECONDS


def highlight(samples: Sequence[Mapping], preds: Sequence[Prediction | None], rules: Rules) -> dict[str, float]:
    """HL-mAP / HL-HIT@1 per level (moment_detr eval_highlight) over samples with saliency annotations.

    Ground truth: ``int(duration / 2)`` clips, annotator scores on ``relevant_clip_ids``, 0 elsewhere, a clip
    positive at a level when its score >= 2 (Fair), 3 (Good), 4 (VeryGood). mAP averages the AP of every
    (query, annotator) pair with the prediction truncated or zero-padded to the clip count; HIT@1 checks the
    first maximum of the untruncated prediction against any annotator. A query without saliency prediction
    scores 0 (or is left out under ``missing="skip"``).
    """
    from_segments = rules.hl_saliency == "from_segments"
    if not from_segments and not any(p is not None and p.saliency is not None for p in preds):
        return {}
    sel, prs = [], []
    for s, p in zip(samples, preds, strict=True):
        if "saliency_scores" not in s or "relevant_clip_ids" not in s:
            continue
        if from_segments:
            n_clips = int(float(s["duration"]) / CLIP_SECONDS)
            pr = None if p is None or p.segments is None else _saliency_from_segments(p.segments, n_clips)
        else:
            pr = None if p is None else p.saliency
        if pr is None and rules.missing == "skip":
            continue
        sel.append(s)
        prs.append(pr)
    if not sel:
        return {}
    q = len(sel)
    n_clips = np.array([int(float(s["duration"]) / CLIP_SECONDS) for s in sel], np.int64)
    c = max(int(n_clips.max()), 1)
    # Ground truth [Q, A, C] from the flattened relevant clips.
    counts = np.array([len(s["relevant_clip_ids"]) for s in sel], np.int64)
    rows = list(chain.from_iterable(s["saliency_scores"] for s in sel))
    per_sample = [len(s["saliency_scores"][0]) if len(s["saliency_scores"]) else 0 for s in sel]
    n_ann = max(per_sample) or 3
    if set(map(len, rows)) <= {n_ann}:
        sal = np.fromiter(chain.from_iterable(rows), np.float64, count=len(rows) * n_ann).reshape(-1, n_ann)
    else:
        sal = np.array([list(row) + [np.nan] * (n_ann - len(row)) for row in rows], np.float64)
    ids = np.fromiter(chain.from_iterable(s["relevant_clip_ids"] for s in sel), np.int64, count=int(counts.sum()))
    q_of = np.repeat(np.arange(q), counts)
    inside = ids < n_clips[q_of]
    gt = np.zeros((q, n_ann, c))
    gt[q_of[inside], :, ids[inside]] = sal[inside]
    ann_mask = np.arange(n_ann)[None, :] < np.array([a or n_ann for a in per_sample])[:, None]
    # Predictions: padded with -inf for the argmax, then truncated / zero-padded to the clip count.
    plen = np.array([0 if pr is None else len(pr) for pr in prs], np.int64)
    have = plen > 0
    width = max(int(plen.max()), c)
    full = np.full((q, width), -np.inf)
    if have.any():
        pg = np.repeat(np.arange(q), plen)
        full[pg, _ranks(pg, q)] = np.concatenate([np.asarray(pr, np.float64) for pr in prs if pr is not None])
    argmax = np.argmax(full, axis=1)  # first maximum, over the untruncated prediction
    pred = np.where(np.isfinite(full[:, :c]), full[:, :c], 0.0)
    levels = np.array([lvl for _, lvl in HL_LEVELS], np.float64)
    binary = gt[:, None] >= levels[None, :, None, None]  # bool [Q, L, A, C]
    ap = highlight_ap(binary.reshape(q, -1, c), pred, n_clips).reshape(q, len(levels), n_ann)
    ap = np.where(have[:, None, None], ap, 0.0)
    ok = have & (argmax < n_clips)
    hit = np.zeros((q, len(levels)))
    hit[ok] = binary[np.flatnonzero(ok), :, :, argmax[ok]].max(-1)
    out = {}
    for k, (name, _) in enumerate(HL_LEVELS):
        out[f"HL-mAP-{name}"] = _pct(ap[:, k][ann_mask])
        out[f"HL-HIT@1-{name}"] = _pct(hit[:, k])
    return out


def _gqa_span(pred: Prediction | None, rule: str) -> np.ndarray:
    """[2] the evidence window NExT-GQA scores (hull of the valid windows or the first), NaNs if none."""
    segs = _pred_segments(pred)
    if rule == "first":
        return segs[0] if len(segs) else np.full(2, np.nan)
    segs = segs[segs[:, 1] >= segs[:, 0]] if len(segs) else segs
    if len(segs) == 0:
        return np.full(2, np.nan)
    return np.array([segs[:, 0].min(), segs[:, 1].max()])


def nextgqa_iou_iop(span: np.ndarray, gts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """NExT-GQA get_tIoU, max over ground-truth segments taken separately for IoU and IoP (floored at 0).

    span: [N, 2] predicted window (NaN = none). IoU = inter / hull; IoP = inter / prediction length; a point
    prediction has IoU 0 and IoP 1 when it lies inside a segment (inclusive). Returns ([N], [N]).
    """
    gt, mask = _pad(gts)
    ps, pe = span[:, None, 0], span[:, None, 1]
    gs, ge = gt[..., 0], gt[..., 1]
    inter = np.minimum(ge, pe) - np.maximum(gs, ps)
    hull = np.maximum(ge, pe) - np.minimum(gs, ps)
    point = ps == pe
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(point, 0.0, np.where(hull > 0, inter / np.where(hull > 0, hull, 1.0), 0.0))
        plen = pe - ps
        iop = np.where(
            point,
            ((gs <= ps) & (ps <= ge)).astype(np.float64),
            np.where(plen > 0, inter / np.where(plen > 0, plen, 1.0), 0.0),
        )
    valid = mask & ~np.isnan(ps)
    iou = np.where(valid & (iou > 0), iou, 0.0)
    iop = np.where(valid & (iop > 0), iop, 0.0)
    return iou.max(1, initial=0.0), iop.max(1, initial=0.0)


def _union_iop(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    inter, lp, la = _union_overlap(preds, gts)
    iou = np.where(la > 0, inter / np.where(la > 0, la, 1.0), 0.0)
    iop = np.where(lp > 0, inter / np.where(lp > 0, lp, 1.0), 0.0)
    return iou, iop


def score_gvqa(samples: Sequence[Mapping], preds: Sequence[Prediction | None], rules: Rules) -> dict[str, float]:
    """Grounded QA (NExT-GQA): answer accuracy, evidence IoU/IoP, Acc@GQA; ReXTime's Acc&IoU@t."""
    gts = [_segments_of(s) for s in samples]
    correct = np.array(
        [
            p is not None and p.answer is not None and p.answer == str(s["answer"])
            for s, p in zip(samples, preds, strict=True)
        ],
        bool,
    )
    if rules.gvqa_span == "union":
        iou, iop = _union_iop([_pred_segments(p) for p in preds], gts)
    else:
        span = np.array([_gqa_span(p, rules.gvqa_span) for p in preds]).reshape(-1, 2)
        iou, iop = nextgqa_iou_iop(span, gts)
    op = rules.threshold
    out = {"Acc": _pct(correct), "mIoU": _pct(iou)}
    out.update({f"IoU@{threshold_name(t)}": _pct(_passes(iou, t, op)) for t in GQA_THRESHOLDS})
    out["mIoP"] = _pct(iop)
    out.update({f"IoP@{threshold_name(t)}": _pct(_passes(iop, t, op)) for t in GQA_THRESHOLDS})
    out["Acc@GQA"] = _pct(correct & _passes(iop, 0.5, op))
    out.update({f"Acc&IoU@{threshold_name(t)}": _pct(correct & _passes(iou, t, op)) for t in GQA_THRESHOLDS})
    return out


def tal_f1(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], op: str = "ge") -> np.ndarray:
    """Per-sample F1 at each of F1_THRESHOLDS (MUSEG ``eval_grounding.py`` tal). [T, N].

    recall = share of ground truths whose best IoU with any prediction passes t, precision = share of
    predictions whose best IoU with any ground truth passes t; F1 = 0 when no pair passes. No one-to-one
    matching (duplicates are not penalised). A sample without ground truth scores 1 if it predicts nothing.
    """
    n = len(preds)
    thr = np.asarray(F1_THRESHOLDS)
    n_p = np.array([len(p) for p in preds], np.int64)
    n_g = np.array([len(g) for g in gts], np.int64)
    pairs = n_p * n_g
    s_of = np.repeat(np.arange(n), pairs)
    start = np.concatenate([[0], np.cumsum(pairs)[:-1]]) if n else np.zeros(0, np.int64)
    local = np.arange(pairs.sum()) - np.repeat(start, pairs)
    gi = local // np.repeat(np.maximum(n_p, 1), pairs)
    pi = local % np.repeat(np.maximum(n_p, 1), pairs)
    p_off = np.concatenate([[0], np.cumsum(n_p)[:-1]]) if n else np.zeros(0, np.int64)
    g_off = np.concatenate([[0], np.cumsum(n_g)[:-1]]) if n else np.zeros(0, np.int64)
    pc = np.concatenate([p.reshape(-1, 2) for p in preds]) if n else np.zeros((0, 2))
    gc = np.concatenate([g.reshape(-1, 2) for g in gts]) if n else np.zeros((0, 2))
    prow, grow = p_off[s_of] + pi, g_off[s_of] + gi
    iou = iou_sum(pc[prow, 0], pc[prow, 1], gc[grow, 0], gc[grow, 1])
    best_g = np.zeros(len(gc))
    best_p = np.zeros(len(pc))
    np.maximum.at(best_g, grow, iou)
    np.maximum.at(best_p, prow, iou)
    g_sample = np.repeat(np.arange(n), n_g)
    p_sample = np.repeat(np.arange(n), n_p)
    f1 = np.zeros((len(thr), n))
    for k, t in enumerate(thr):
        rec = np.bincount(g_sample, _passes(best_g, t, op), minlength=n) / np.maximum(n_g, 1)
        prc = np.bincount(p_sample, _passes(best_p, t, op), minlength=n) / np.maximum(n_p, 1)
        ok = (rec > 0) & (prc > 0)
        f1[k] = np.where(ok, 2 * prc * rec / np.where(ok, prc + rec, 1.0), 0.0)
    f1[:, n_g == 0] = (n_p[n_g == 0] == 0).astype(np.float64)
    return f1


def _tal_thresholds(samples: Sequence[Mapping], protocol: str) -> tuple[float, ...]:
    if protocol == "auto":
        is_thumos = bool(samples) and all("thumos" in str(s.get("source", "")).lower() for s in samples)
        protocol = "thumos14" if is_thumos else "activitynet"
    return THUMOS_THRESHOLDS if protocol == "thumos14" else ANET_THRESHOLDS


def detection_map(
    preds: Sequence[Prediction | None],
    gts: Sequence[np.ndarray],
    labels: Sequence[str],
    thresholds: Sequence[float],
    rules: Rules,
) -> tuple[np.ndarray, list[str]]:
    """ActivityNet detection AP per class [T, n_classes] and the class names.

    Sample i holds the windows of class ``labels[i]`` in one video (ground truth ``gts[i]``, maybe none);
    its predictions are detections of that class in that video. Per class, detections are ranked by score
    (ties: see ``Rules.ties``), matched greedily (``greedy_match``) and scored with interpolated AP over all
    the class's ground truths. Classes are those with at least one ground truth; a class nobody predicts
    has AP 0.
    """
    names = sorted({lab for lab, g in zip(labels, gts, strict=True) if len(g)})
    cid = {n: i for i, n in enumerate(names)}
    keep = [i for i, lab in enumerate(labels) if lab in cid]
    npos = np.zeros(len(names))
    for i in keep:
        npos[cid[labels[i]]] += len(gts[i])
    segs, scores = [], []
    for i in keep:
        s = _pred_segments(preds[i])
        p = preds[i]
        segs.append(s)
        scores.append(p.scores if (p is not None and p.scores is not None) else np.zeros(len(s)))
    sample_of, st, en = _flatten(segs)
    cls = np.array([cid[labels[i]] for i in keep], np.int64)[sample_of] if keep else np.zeros(0, np.int64)
    sc = np.concatenate(scores) if scores else np.zeros(0)
    ties = "reverse" if rules.ties in ("official", "reverse") else "stable"
    ranked = _rank_order(cls, sc, ties)  # class-major, best first
    by_sample = ranked[np.argsort(sample_of[ranked], kind="stable")]  # sample-major, same relative order
    kg, kgs, kge = _flatten([gts[i] for i in keep])
    tp_s = greedy_match(
        sample_of[by_sample],
        np.stack([st, en], 1)[by_sample],
        kg,
        np.stack([kgs, kge], 1),
        len(keep),
        thresholds,
        rules.threshold,
        rules.map_zero_length,
    )
    tp = np.zeros_like(tp_s)
    tp[:, by_sample] = tp_s  # back to input index
    return interpolated_ap(cls[ranked], tp[:, ranked], npos), names


def score_tal(samples: Sequence[Mapping], preds: Sequence[Prediction | None], rules: Rules) -> dict[str, float]:
    """Action localisation: MUSEG mF1 over samples and ActivityNet-style detection mAP over classes."""
    gts = [_segments_of(s) for s in samples]
    f1 = tal_f1([_pred_segments(p) for p in preds], gts, rules.threshold)
    out = {"mF1": float(100.0 * f1.mean()) if f1.size else 0.0}
    out.update({f"F1@{threshold_name(t)}": _pct(f1[k]) for k, t in enumerate(F1_THRESHOLDS)})
    thresholds = _tal_thresholds(samples, rules.tal_protocol)
    ap, names = detection_map(preds, gts, [str(s.get("action", "")) for s in samples], thresholds, rules)
    per_t = [_pct(ap[k]) for k in range(len(thresholds))]
    out["mAP"] = float(np.mean(per_t)) if names else 0.0
    out.update({f"mAP@{threshold_name(t)}": v for t, v in zip(thresholds, per_t, strict=True)})
    return out


def score_mcq(samples: Sequence[Mapping], preds: Sequence[Prediction | None], rules: Rules) -> dict[str, float]:
    """Multiple choice: ``Acc`` (top-1 accuracy) and ``Acc/<category>`` per value of the samples' ``category``
    (TempCompass dimension, MVBench task, VideoMME task type, Perception Test area), sorted by name."""
    correct = np.array(
        [p is not None and p.answer is not None and p.answer == str(s["answer"]) for s, p in zip(samples, preds,
                                                                                                 strict=True)],
        bool,
    )
    cats = np.array([str(s.get("category", "")) for s in samples])
    out = {"Acc": _pct(correct)}
    out.update({f"Acc/{c}": _pct(correct[cats == c]) for c in sorted(set(cats.tolist())) if c})
    return out


SCORERS = {"tg": score_tg, "dtg": score_dtg, "vhd": score_vhd, "gvqa": score_gvqa, "tal": score_tal, "mcq": score_mcq}


def is_unparsable(task: str, pred: Prediction) -> bool:
    """A prediction whose task-relevant payload could not be parsed (gvqa: the letter or the evidence; mcq: the
    letter)."""
    if task == "mcq":
        return pred.answer is None
    if task == "gvqa":
        return pred.segments is None or pred.answer is None
    if task == "vhd" and not pred.windows_given:
        return pred.saliency is None
    return pred.segments is None


def score(
    samples: Sequence[Mapping], predictions: Mapping[str, Prediction], rules: Rules | None = None
) -> dict[str, dict[str, Any]]:
    """All metrics for validated samples and parsed predictions keyed by sample id.

    Returns ``{task: {metric: percent}, ..., "counts": {task: {"total", "missing", "unparsable", "empty"}}}``
    for every task present in ``samples``. The iteration order of ``predictions`` is the input order used to
    break score ties in mAP. Raises ValueError when ``rules.missing == "error"`` and a prediction is missing.
    """
    rules = rules or Rules()
    by_task: dict[str, list[Mapping]] = defaultdict(list)
    for s in samples:
        by_task[s["task"]].append(s)
    position = {k: i for i, k in enumerate(predictions)}
    result: dict[str, dict[str, Any]] = {}
    counts: dict[str, dict[str, int]] = {}
    for task in TASKS:
        if task not in by_task:
            continue
        task_samples = by_task[task]
        missing = [str(s["id"]) for s in task_samples if str(s["id"]) not in predictions]
        if missing and rules.missing == "error":
            raise ValueError(
                f"{len(missing)} {task} sample(s) have no prediction (first: {missing[0]!r}); "
                "use missing='zero' or 'skip' to score partial predictions"
            )
        present = [predictions.get(str(s["id"])) for s in task_samples]
        counts[task] = {
            "total": len(task_samples),
            "missing": len(missing),
            "unparsable": sum(1 for p in present if p is not None and is_unparsable(task, p)),
            "empty": sum(1 for p in present if p is not None and p.segments is not None and len(p.segments) == 0),
        }
        pairs = list(zip(task_samples, present, strict=True))
        if rules.missing == "skip":
            pairs = [(s, p) for s, p in pairs if p is not None]
        # Input order of predictions (tie-breaking in mAP), then samples without prediction.
        pairs.sort(key=lambda sp: position.get(str(sp[0]["id"]), len(position)))
        if not pairs:
            result[task] = {}
            continue
        ss, ps = zip(*pairs, strict=True)
        result[task] = SCORERS[task](list(ss), list(ps), rules)
    result["counts"] = counts
    return result


def metric_names(task: str) -> Iterable[str]:
    """The headline names of a task (docs/formats.md) (the order tables print them in)."""
    if task in ("tg", "dtg"):
        return ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU")
    if task == "vhd":
        return ("mIoU", "MR-R1@0.5", "MR-R1@0.7", "MR-mAP@0.5", "MR-mAP@0.75", "MR-mAP") + tuple(
            f"HL-{m}-{lvl}" for lvl, _ in HL_LEVELS for m in ("mAP", "HIT@1")
        )
    if task == "gvqa":
        return ("Acc", "mIoU", "IoU@0.3", "IoU@0.5", "mIoP", "IoP@0.3", "IoP@0.5", "Acc@GQA")
    if task == "tal":
        names = ("mF1", "F1@0.1", "F1@0.3", "F1@0.5", "F1@0.7", "mAP")
        names += tuple(f"mAP@{threshold_name(t)}" for t in sorted(set(ANET_THRESHOLDS + THUMOS_THRESHOLDS)))
        return tuple(dict.fromkeys(names))
    if task == "mcq":
        return ("Acc",)  # plus one Acc/<category> per category of the samples
    raise ValueError(f"unknown task {task!r}")
