"""TempR1's rule-based rewards (docs/rewards.md): host parsing, jitted and vmapped scoring.

Completions are untrusted text. They are parsed on the host by plain Python that never raises, packed into
padded float32 arrays with boolean masks at bucketed shapes, and scored by pure, jit-compatible array
functions batched with ``vmap``:

    one_to_one    tg, dtg    mean index-paired IoU
    many_to_one   vhd, gvqa  IoU of the unions of both sides
    many_to_many  tal        count reward + F1 of the order-preserving matching (DP over sorted lists)
    none          mcq        (evaluation-only multiple choice: format and answer rewards, localization 0)

``compute_rewards(completions, samples)`` is the whole path (parse + score). Times are seconds. This module
imports only numpy, jax and the sample rules of ``data_pipeline.schema`` (stdlib + numpy): no TensorFlow, Flax
or transformers, so it can be used on its own:

    python -m tempr1_jax.rewards --completions COMP.jsonl --samples SAMPLES.jsonl [--output FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline.schema import OPTION_LETTERS, THINK_MODES, check_ground_truth
from data_pipeline.schema import TASKS as TASK_IDS

# --------------------------------------------------------------------------------------------------------
# The task table: one row per task. Adding a task is adding a row.
# --------------------------------------------------------------------------------------------------------

TAGS = ("<think>", "</think>", "<answer>", "</answer>", "<evidence>", "</evidence>")
REWARD_KEYS = ("format", "localization", "answer")
LETTERS = OPTION_LETTERS


@dataclasses.dataclass(frozen=True)
class TaskRule:
    """How one task's completions are laid out, parsed and scored.

    localization: "one_to_one" | "many_to_one" | "many_to_many" (the correspondence type), or "none" (no
      intervals: the localization reward is 0).
    intervals_block: the block whose INTERVALS payload is localized: "answer", or "evidence" (then the
      completion template is ``[think] answer evidence`` and the evidence block is required), or None (none).
    answer_rule: None, "letter" (the answer block holds an option letter, ``parse_letter``) or "choice" (a
      leading option letter, ``parse_option``); either is scored by the answer reward.
    count_ok: (n_pred, n_gt) -> whether the format reward accepts that many predicted intervals.
    (How many ground-truth segments a valid sample has is a sample rule: ``data_pipeline.schema``.)
    """

    localization: str
    intervals_block: str | None
    answer_rule: str | None
    count_ok: Callable[[int, int], bool]


TASKS: dict[str, TaskRule] = {
    "tg": TaskRule("one_to_one", "answer", None, lambda p, g: p == 1),
    "dtg": TaskRule("one_to_one", "answer", None, lambda p, g: p == g),
    "vhd": TaskRule("many_to_one", "answer", None, lambda p, g: p >= 1),
    "gvqa": TaskRule("many_to_one", "evidence", "letter", lambda p, g: p >= 1),
    "tal": TaskRule("many_to_many", "answer", None, lambda p, g: True),
    "mcq": TaskRule("none", None, "choice", lambda p, g: True),
}
assert tuple(TASKS) == TASK_IDS, "one rule per task id of data_pipeline.schema.TASKS"

# --------------------------------------------------------------------------------------------------------
# Host side: samples and completions -> numbers. Nothing here touches JAX.
# --------------------------------------------------------------------------------------------------------

_NUM = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
_ITEM = rf"{_NUM}\s*(?:to|-)\s*{_NUM}"
_INTERVALS_RE = re.compile(rf"{_ITEM}(?:\s*[,;]\s*{_ITEM})*")
_LETTER_RE = re.compile(rf"([{LETTERS}])|\(([{LETTERS}])\)|([{LETTERS}])\.")
# mcq: a letter alone, or leading the reply as "B.", "B)" or "(B)" (then anything: usually the option's text)
_OPTION_RE = re.compile(rf"([{LETTERS}])|\(([{LETTERS}])\)(?:\s.*)?|([{LETTERS}])[.)].*", re.DOTALL)
_TAG_SPLIT_RE = re.compile("(" + "|".join(re.escape(t) for t in TAGS) + ")")

Intervals = list[tuple[float, float]]  # host-side intervals: (start, end) seconds


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """A validated sample: its task rule, duration (s) and segments ((start, end) s, clipped to the duration)."""

    task: str
    rule: TaskRule
    duration: float
    segments: Intervals
    answer: str | None


@dataclasses.dataclass(frozen=True)
class ParsedCompletion:
    """What the completion rules (docs/rewards.md) read from one completion.

    format: the format reward (docs/rewards.md) as a bool.
    intervals: float64 [K, 2] seconds clipped to [0, duration], from the last ``<answer>`` block (gvqa: the
      last ``<evidence>`` block); None when that block is missing or its payload is unparsable.
    letter: gvqa / mcq only: the option letter of the last answer block, or None when missing or unparsable.
      (mcq has no intervals: ``intervals`` is None.)
    """

    format: bool
    intervals: np.ndarray | None
    letter: str | None


class Ragged(NamedTuple):
    """Rows of intervals stored flat: row b is values[offsets[b] : offsets[b] + counts[b]].

    counts: int64 [B], -1 where the row has no parsable intervals (missing block or unparsable payload).
    values: float64 [N, 2] seconds; offsets: int64 [B].
    """

    counts: np.ndarray
    values: np.ndarray
    offsets: np.ndarray

    def row(self, b: int) -> np.ndarray | None:
        return None if self.counts[b] < 0 else self.values[self.offsets[b]: self.offsets[b] + self.counts[b]]


def _is_real(x: object) -> bool:
    return type(x) in (int, float) or (
        isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_)))


def check_sample(sample: Mapping, index: int | None = None) -> GroundTruth:
    """Validates one sample mapping (``data_pipeline.schema.check_ground_truth``: the rules every reader of samples
    shares) and returns its ground truth.

    Ground-truth segments are clipped to [0, duration] like predictions, so copying the ground truth back as a
    completion scores the maximum. Raises ValueError naming the sample, field and value on a malformed sample.
    """
    where = "sample" if index is None else f"sample {index}"
    if not isinstance(sample, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(sample).__name__}")
    if "id" in sample:
        where += f" (id {sample['id']!r})"
    try:
        task, duration, segs = check_ground_truth(sample)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    rule = TASKS[task]
    segs = [(min(s, duration), min(e, duration)) for s, e in segs]
    answer = sample["answer"] if rule.answer_rule is not None else None
    return GroundTruth(task, rule, duration, segs, answer)


def _last_block(text: str, tag: str) -> str | None:
    """Content of the last match of ``<tag>(.*?)</tag>`` (DOTALL) as ``re.findall`` scans it; linear time."""
    opening, closing = f"<{tag}>", f"</{tag}>"
    content, pos = None, 0
    while True:
        i = text.find(opening, pos)
        if i < 0:
            return content
        j = text.find(closing, i + len(opening))
        if j < 0:
            return content
        content, pos = text[i + len(opening): j], j + len(closing)


def parse_interval_payloads(payloads: Sequence[str | None], durations: Sequence[float]) -> Ragged:
    """INTERVALS payloads (None: block missing) -> their intervals in seconds, clipped to [0, duration].

    Grammar (docs/rewards.md): zero or more items ``NUMBER to NUMBER`` / ``NUMBER - NUMBER`` separated by ``,``
    or ``;``, optional whitespace, NUMBER a non-negative decimal. One malformed item or one item with
    start > end makes the whole payload unparsable (count -1). Each payload costs one regex match and one
    split; the numbers of the whole batch are converted and checked by numpy at once.
    """
    counts = np.full(len(payloads), -1, np.int64)
    tokens: list[str] = []
    for b, payload in enumerate(payloads):
        if payload is None:
            continue
        payload = payload.strip()
        if payload and _INTERVALS_RE.fullmatch(payload) is None:
            continue
        # A valid payload minus its separators is exactly its numbers (NUMBER has no sign).
        for sep in ("to", "-", ",", ";"):
            payload = payload.replace(sep, " ")
        numbers = payload.split()
        tokens.extend(numbers)
        counts[b] = len(numbers) // 2
    values = np.array(tokens, np.float64).reshape(-1, 2)
    sizes = np.maximum(counts, 0)
    row = np.repeat(np.arange(len(payloads)), sizes)
    reversed_rows = np.bincount(row, values[:, 0] > values[:, 1], minlength=len(payloads)) > 0
    np.minimum(values, np.repeat(np.asarray(durations, np.float64), sizes)[:, None], out=values)
    offsets = np.cumsum(sizes) - sizes
    return Ragged(np.where(reversed_rows, -1, counts), values, offsets)


def parse_intervals(payload: str, duration: float) -> np.ndarray | None:
    """One INTERVALS payload -> float64 [K, 2] seconds clipped to [0, duration], or None when unparsable."""
    return parse_interval_payloads([payload], [float(duration)]).row(0)


def parse_letter(payload: str) -> str | None:
    """gvqa answer payload -> option letter ``A``-``H`` (also ``(B)`` or ``B.``), or None."""
    m = _LETTER_RE.fullmatch(payload.strip())
    return None if m is None else next(g for g in m.groups() if g)


def parse_option(payload: str) -> str | None:
    """mcq answer payload -> option letter ``A``-``H``, or None: the letter alone (``B``, ``(B)``, ``B.``, ``B)``)
    or leading the reply as ``B.`` / ``B)`` / ``(B) `` followed by anything (``B. dunking a basketball``), the
    rule-based match of the benchmarks' own scripts (TempCompass ``eval_multi-choice.py``). Never raises."""
    m = _OPTION_RE.fullmatch(payload.strip())
    return None if m is None else next(g for g in m.groups() if g)


def _parse_answer(rule: TaskRule, payload: str) -> str | None:
    return parse_option(payload) if rule.answer_rule == "choice" else parse_letter(payload)


@functools.cache
def _layouts(intervals_block: str | None, think: str) -> frozenset[tuple[str, ...]]:
    """The tag sequences a well-formatted completion may have, e.g. (<think>, </think>, <answer>, </answer>)."""
    tail = ("<answer>", "</answer>") + (("<evidence>", "</evidence>") if intervals_block == "evidence" else ())
    with_think = ("<think>", "</think>") + tail
    return frozenset({"optional": [tail, with_think], "required": [with_think], "forbidden": [tail]}[think])


def _layout_ok(text: str, rule: TaskRule, think: str) -> bool:
    """The block-layout half of the format reward: the stripped text is exactly the blocks the think mode and
    the task allow, in order, separated by whitespace only, and no block contains any of the six tags."""
    parts = _TAG_SPLIT_RE.split(text)  # [gap, tag, body, tag, gap, tag, body, tag, gap, ...]
    if tuple(parts[1::2]) not in _layouts(rule.intervals_block, think):
        return False
    return all(not parts[i].strip() for i in range(0, len(parts), 4))


def _parse_batch(texts: Sequence[str], gts: Sequence[GroundTruth], think: str
                 ) -> tuple[np.ndarray, Ragged, list[str | None]]:
    """(format reward bool [B], intervals of each last localization block, gvqa letters or None)."""
    blocks = [None if g.rule.intervals_block is None else _last_block(t, g.rule.intervals_block)
              for t, g in zip(texts, gts, strict=True)]
    intervals = parse_interval_payloads(blocks, [g.duration for g in gts])
    letters: list[str | None] = []
    fmt = np.zeros(len(texts), bool)
    for b, (text, gt) in enumerate(zip(texts, gts, strict=True)):
        rule, n = gt.rule, int(intervals.counts[b])
        letter = None
        if rule.answer_rule is not None:
            answer = _last_block(text, "answer")
            letter = None if answer is None else _parse_answer(rule, answer)
        letters.append(letter)
        # When the layout holds every block occurs once, so the last blocks parsed above are the blocks.
        intervals_ok = rule.intervals_block is None or (n >= 0 and rule.count_ok(n, len(gt.segments)))
        fmt[b] = (intervals_ok and (rule.answer_rule is None or letter is not None)
                  and _layout_ok(text, rule, think))
    return fmt, intervals, letters


def _check_think(think: str) -> None:
    if think not in THINK_MODES:
        raise ValueError(f"think must be one of {THINK_MODES}, got {think!r}")


def parse_completion(text: str, sample: Mapping, *, think: str = "optional") -> ParsedCompletion:
    """Parses one completion against its sample by the completion rules (docs/rewards.md). Never raises on ``text``."""
    _check_think(think)
    if not isinstance(text, str):
        raise ValueError(f"completion must be a string, got {type(text).__name__}")
    fmt, intervals, letters = _parse_batch([text], [check_sample(sample)], think)
    return ParsedCompletion(bool(fmt[0]), intervals.row(0), letters[0])


# --------------------------------------------------------------------------------------------------------
# Device side: pure array functions. pred [B, P, 2], gt [B, M, 2] float32 seconds; masks bool [B, P] / [B, M]
# with the valid entries packed at the front in output order. Inputs are already parsed and clipped.
# --------------------------------------------------------------------------------------------------------


def interval_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Temporal IoU of intervals a [..., 2] and b [..., 2] (broadcasting); 0 where the union length is 0."""
    inter = jnp.maximum(jnp.minimum(a[..., 1], b[..., 1]) - jnp.maximum(a[..., 0], b[..., 0]), 0.0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _one_to_one_single(pred, pred_mask, gt, gt_mask):
    k = min(pred.shape[0], gt.shape[0])
    paired = interval_iou(pred[:k], gt[:k]) * (pred_mask[:k] & gt_mask[:k])
    n_gt = gt_mask.sum()
    return jnp.where(n_gt > 0, paired.sum() / jnp.maximum(n_gt, 1), 0.0)


def _precedes(iv):
    """before [N, N] bool: before[i, k] iff row k of iv [N, >=2] sorts before row i by (start, end, index).

    Pairwise comparisons instead of lax.sort: at the sizes used here (N <= 64) they are cheaper on CPU, and
    the rank of row i is before[i].sum().
    """
    start, end = iv[:, 0], iv[:, 1]
    idx = jnp.arange(iv.shape[0])
    s_i, s_k, e_i, e_k = start[:, None], start[None, :], end[:, None], end[None, :]
    return (s_k < s_i) | ((s_k == s_i) & ((e_k < e_i) | ((e_k == e_i) & (idx[None, :] < idx[:, None]))))


def _sorted(iv, before):
    """iv [N, C] reordered by ``before``: row r is the entry with r predecessors (ranks are a permutation)."""
    rank = before.sum(axis=1)
    return jnp.zeros_like(iv).at[rank].set(iv, unique_indices=True)


def _disjoint_pieces(iv, mask):
    """Intervals cut into disjoint pieces with the same union: piece i = [lo_i, max(e_i, lo_i)] with
    lo_i = max(s_i, reach_i), reach_i the largest end among the intervals sorting before i by (start, index):
    the cumulative max of ends in sorted order, computed without sorting."""
    iv = jnp.where(mask[:, None], iv, 0.0)  # padding becomes [0, 0], which covers nothing
    start, end = iv[:, 0], iv[:, 1]
    idx = jnp.arange(iv.shape[0])
    earlier = (start[None, :] < start[:, None]) | ((start[None, :] == start[:, None]) & (idx[None, :] < idx[:, None]))
    reach = jnp.where(earlier, end[None, :], -jnp.inf).max(axis=1)
    lo = jnp.maximum(start, reach)
    return lo, jnp.maximum(end, lo)


def _many_to_one_single(pred, pred_mask, gt, gt_mask):
    plo, phi = _disjoint_pieces(pred, pred_mask)
    glo, ghi = _disjoint_pieces(gt, gt_mask)
    overlap = jnp.minimum(phi[:, None], ghi[None, :]) - jnp.maximum(plo[:, None], glo[None, :])
    inter = jnp.maximum(overlap, 0.0).sum()
    union = (phi - plo).sum() + (ghi - glo).sum() - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _running_max(x):
    """Inclusive cumulative max of x [N] by log2(N) shift-and-max steps (x >= 0, so 0 pads safely)."""
    shift = 1
    while shift < x.shape[0]:
        x = jnp.maximum(x, jnp.pad(x[:-shift], (shift, 0)))
        shift *= 2
    return x


def _many_to_many_single(pred, pred_mask, gt, gt_mask, sigma):
    # Sort both sides by (start, end). Padding is zeroed and its IoU masked to 0: a row or column of zeros
    # never changes an order-preserving maximum (the matching can always skip it), so it may sort anywhere.
    pred = jnp.concatenate([jnp.where(pred_mask[:, None], pred, 0.0), pred_mask[:, None]], axis=1)
    gt = jnp.concatenate([jnp.where(gt_mask[:, None], gt, 0.0), gt_mask[:, None]], axis=1)
    pred, gt = _sorted(pred, _precedes(pred)), _sorted(gt, _precedes(gt))  # [N, 3]: start, end, valid
    iou = interval_iou(pred[:, None, :2], gt[None, :, :2]) * (pred[:, None, 2] * gt[None, :, 2])

    def row(prev, iou_i):  # prev = D[i-1][0..M]; D[i][j] = cummax_j(max(D[i-1][j], D[i-1][j-1] + IoU[i][j]))
        cand = jnp.concatenate([prev[:1], jnp.maximum(prev[1:], prev[:-1] + iou_i)])
        return _running_max(cand), None

    d_last, _ = jax.lax.scan(row, jnp.zeros(gt.shape[0] + 1, jnp.float32), iou)
    s_iou = d_last[-1]
    n_pred, n_gt = pred_mask.sum().astype(jnp.float32), gt_mask.sum().astype(jnp.float32)
    r_num = jnp.exp(-jnp.abs(n_pred - n_gt) / jnp.maximum(jnp.minimum(n_gt, 3.0) * sigma, 1e-12))
    r_match = jnp.where(n_pred > 0, 2.0 * s_iou / jnp.maximum(n_pred + n_gt, 1.0), 0.0)
    no_gt = jnp.where(n_pred == 0, 2.0, 0.0)  # N_gt = 0: R_num = R_match = 1 iff N_pred = 0, else both 0
    return jnp.where(n_gt > 0, r_num + r_match, no_gt)


@jax.jit
def one_to_one(pred: jax.Array, pred_mask: jax.Array, gt: jax.Array, gt_mask: jax.Array) -> jax.Array:
    """tg / dtg: (1 / N_gt) * sum_{i < min(N_pred, N_gt)} IoU(pred_i, gt_i); 0 when N_gt = 0. Returns [B]."""
    return jax.vmap(_one_to_one_single)(pred, pred_mask, gt, gt_mask)


@jax.jit
def many_to_one(pred: jax.Array, pred_mask: jax.Array, gt: jax.Array, gt_mask: jax.Array) -> jax.Array:
    """vhd / gvqa: |U_pred ∩ U_gt| / |U_pred ∪ U_gt| of the unions; 0 when the union length is 0. [B]."""
    return jax.vmap(_many_to_one_single)(pred, pred_mask, gt, gt_mask)


@jax.jit
def many_to_many(pred: jax.Array, pred_mask: jax.Array, gt: jax.Array, gt_mask: jax.Array,
                 sigma: float | jax.Array = 1.0) -> jax.Array:
    """tal: R_num + R_match in [0, 2] (count reward + F1 of the order-preserving max-IoU matching). [B].

    sigma is traced, so changing it does not recompile.
    """
    sigma = jnp.asarray(sigma, jnp.float32)
    return jax.vmap(_many_to_many_single, in_axes=(0, 0, 0, 0, None))(pred, pred_mask, gt, gt_mask, sigma)


LOCALIZATION_FNS = {"one_to_one": one_to_one, "many_to_one": many_to_one, "many_to_many": many_to_many}

# --------------------------------------------------------------------------------------------------------
# Packing: ragged host lists -> padded arrays at a small set of static shapes (powers of two), so jit
# compiles once per bucket and never per batch.
# --------------------------------------------------------------------------------------------------------

MIN_BUCKET = 4  # smallest padded size of P and M
MIN_ROWS = 8  # smallest padded batch
SHARED_MAX_P = 64  # rows predicting more intervals than this are scored in batches of their own bucket


def bucket(n: int, minimum: int = MIN_BUCKET) -> int:
    """Smallest power of two >= max(n, minimum): the padded size used for n intervals."""
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def bucket_rows(n: int) -> int:
    """Padded batch size for n rows: the smallest of 8, 12, 16, 24, 32, 48, ... (2^k and 3 * 2^(k-1)) >= n."""
    size = bucket(n, MIN_ROWS)
    return size * 3 // 4 if n <= size * 3 // 4 and size > MIN_ROWS else size


def ragged(rows: Sequence[Sequence]) -> Ragged:
    """Rows of (start, end) pairs (lists or [K, 2] arrays) -> Ragged."""
    rows = [r.tolist() if isinstance(r, np.ndarray) else r for r in rows]
    counts = np.array([len(r) for r in rows], np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(rows)), np.float64,
                       2 * int(counts.sum()))
    return Ragged(counts, flat.reshape(-1, 2), np.cumsum(counts) - counts)


def pack(data: Ragged, rows: np.ndarray, size: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Selected rows of a Ragged -> (float32 [n_rows, size, 2], bool [n_rows, size]): valid entries packed at
    the front in order, entries beyond ``size`` cut, rows past len(rows) all padding."""
    counts = np.minimum(np.maximum(data.counts[rows], 0), size)
    row = np.repeat(np.arange(len(rows)), counts)
    col = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.zeros((n_rows, size, 2), np.float32)
    mask = np.zeros((n_rows, size), bool)
    out[row, col] = data.values[np.repeat(data.offsets[rows], counts) + col]
    mask[row, col] = True
    return out, mask


def pack_intervals(rows: Sequence[Sequence], size: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged rows of (start, end) pairs -> (float32 [n_rows, size, 2], bool [n_rows, size]) (see ``pack``)."""
    return pack(ragged(rows), np.arange(len(rows)), size, n_rows)


def _localization(pred: Ragged, gt: Ragged, kinds: Sequence[str], sigma: float) -> np.ndarray:
    """R_loc per row; rows whose localization block is missing or unparsable (count -1) score 0."""
    loc = np.zeros(len(kinds), np.float32)
    kinds = np.asarray(kinds)
    for kind, fn in LOCALIZATION_FNS.items():
        rows = np.flatnonzero((kinds == kind) & (pred.counts >= 0))
        if not len(rows):
            continue
        n_pred = pred.counts[rows]
        if kind == "one_to_one":  # predictions past the ground-truth count are ignored by the rule
            n_pred = np.minimum(n_pred, gt.counts[rows])
        sizes = np.array([bucket(int(n)) for n in n_pred])
        # rows with very many predictions are scored in batches of their own bucket, not everyone's
        shared = sizes <= SHARED_MAX_P
        groups = [shared] + [sizes == size for size in np.unique(sizes[~shared])]
        for k, select in enumerate(groups):
            group = rows[select]
            if not len(group):
                continue
            p_size = bucket(int(n_pred[select].max()))
            m_size = bucket(int(gt.counts[group].max()))
            # The shared group is padded to the whole batch's row bucket, not to its own row count: how many
            # completions parse (or belong to this kind) changes from batch to batch, the batch size does not,
            # so a training loop compiles each kind once instead of once per parsable-row count.
            n_rows = bucket_rows(len(kinds) if k == 0 else len(group))
            args = (*pack(pred, group, p_size, n_rows), *pack(gt, group, m_size, n_rows))
            args += (np.float32(sigma),) if kind == "many_to_many" else ()
            loc[group] = np.asarray(fn(*args))[: len(group)]
    return loc


def _check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    out = dict.fromkeys(REWARD_KEYS, 1.0)
    for key, value in (weights or {}).items():
        if key not in out:
            raise ValueError(f"weights: unknown key {key!r}; expected some of {REWARD_KEYS}")
        if not _is_real(value) or not math.isfinite(value):
            raise ValueError(f"weights[{key!r}] must be a finite number, got {value!r}")
        out[key] = float(value)
    return out


def compute_rewards(completions: Sequence[str], samples: Sequence[Mapping], *, think: str = "optional",
                    weights: Mapping[str, float] | None = None, sigma: float = 1.0) -> dict[str, np.ndarray]:
    """Scores completions against their samples (docs/rewards.md).

    completions: B raw model outputs (untrusted; never raises on their content).
    samples: B mappings with ``task``, ``duration`` (s), ``segments`` ([[start, end], ...] s) and, for gvqa,
      ``answer`` (letter). Row b of completions is scored against row b of samples.
    Returns float32 [B] arrays under "format", "localization", "answer", "total"
    (total = w_format * format + w_loc * localization + w_answer * answer; weights default to 1).
    Raises ValueError on malformed samples, a length mismatch, or bad think / weights / sigma.
    """
    _check_think(think)
    w = _check_weights(weights)
    if not _is_real(sigma) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if len(completions) != len(samples):
        raise ValueError(f"got {len(completions)} completions but {len(samples)} samples")
    seen: dict[int, GroundTruth] = {}  # the G completions of a prompt usually share one sample object
    gts = [seen.get(id(s)) or seen.setdefault(id(s), check_sample(s, i)) for i, s in enumerate(samples)]
    for i, text in enumerate(completions):
        if not isinstance(text, str):
            raise ValueError(f"completion {i} must be a string, got {type(text).__name__}")
    fmt, intervals, letters = _parse_batch(completions, gts, think)
    answer = np.array([gt.answer is not None and letter == gt.answer for letter, gt in zip(letters, gts, strict=True)],
                      np.float32)
    loc = _localization(intervals, ragged([g.segments for g in gts]), [g.rule.localization for g in gts],
                        float(sigma))
    fmt = fmt.astype(np.float32)
    total = w["format"] * fmt + w["localization"] * loc + w["answer"] * answer
    return {"format": fmt, "localization": loc, "answer": answer, "total": total.astype(np.float32)}


# --------------------------------------------------------------------------------------------------------
# Command line: score a file of completions from any model with these rules.
# --------------------------------------------------------------------------------------------------------


class InputError(ValueError):
    """Bad input file content; the message names the file and line."""


def read_jsonl(path: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file (UTF-8, read line by line).

    InputError names FILE:LINE, with the column of a JSON error or the byte offset (in the file) of a byte
    that is not UTF-8."""
    rows = []
    try:
        with open(path, "rb") as f:
            offset = 0
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise InputError(f"{path}:{lineno}: not UTF-8 text ({e.reason}: {raw[e.start:e.end]!r} at byte "
                                     f"{offset + e.start} of the file, byte {e.start + 1} of the line)") from None
                offset += len(raw)
                if lineno == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    what = e.msg.removesuffix(" at")  # "Unterminated string starting at" + " at column N"
                    raise InputError(f"{path}:{lineno}: invalid JSON ({what} at column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                rows.append((lineno, obj))
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    return rows


def _parse_weights(text: str) -> dict[str, float]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"--weights: {item!r} is not KEY=NUMBER") from None
    return out


def score_files(completions_path: str, samples_path: str, *, think: str = "optional",
                weights: Mapping[str, float] | None = None, sigma: float = 1.0,
                chunk: int = 8192) -> list[dict]:
    """Scores a completions JSONL (``id``, ``completion``) against a samples JSONL; one result row per line."""
    samples: dict[str, tuple[int, dict]] = {}
    for lineno, obj in read_jsonl(samples_path):
        sid = obj.get("id")
        if not isinstance(sid, str):
            raise InputError(f"{samples_path}:{lineno}: field 'id' must be a string, got {sid!r}")
        if sid in samples:
            raise InputError(f"{samples_path}:{lineno}: duplicate id {sid!r} (first on line {samples[sid][0]})")
        try:
            check_sample(obj)
        except ValueError as e:
            raise InputError(f"{samples_path}:{lineno}: {e}") from None
        samples[sid] = (lineno, obj)
    if not samples:
        raise InputError(f"{samples_path}: no sample in the file (nothing to score against)")
    rows = []
    for lineno, obj in read_jsonl(completions_path):
        cid, text = obj.get("id"), obj.get("completion")
        if not isinstance(cid, str):
            raise InputError(f"{completions_path}:{lineno}: field 'id' must be a string, got {cid!r}")
        if cid not in samples:
            raise InputError(f"{completions_path}:{lineno}: id {cid!r} is not in {samples_path}")
        if not isinstance(text, str):
            raise InputError(f"{completions_path}:{lineno}: field 'completion' must be a string, got {text!r}")
        rows.append((cid, text))
    if not rows:
        raise InputError(f"{completions_path}: no completion in the file (nothing to score)")
    results = []
    for lo in range(0, len(rows), chunk):
        part = rows[lo: lo + chunk]
        r = compute_rewards([t for _, t in part], [samples[c][1] for c, _ in part], think=think,
                            weights=weights, sigma=sigma)
        for k, (cid, _) in enumerate(part):
            results.append({"id": cid, "task": samples[cid][1]["task"],
                            **{key: round(float(r[key][k]), 6) for key in (*REWARD_KEYS, "total")}})
    return results


def summary_table(results: Sequence[Mapping]) -> str:
    """Per-task mean rewards as a fixed-width text table (plus an ``all`` row)."""
    keys = (*REWARD_KEYS, "total")
    lines = [f"{'task':<6}{'n':>8}" + "".join(f"{k:>14}" for k in keys)]
    for task in [t for t in TASKS if any(r["task"] == t for r in results)] + ["all"]:
        rs = [r for r in results if task in ("all", r["task"])]
        means = [sum(r[k] for r in rs) / max(len(rs), 1) for k in keys]
        lines.append(f"{task:<6}{len(rs):>8}" + "".join(f"{m:>14.4f}" for m in means))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tempr1_jax.rewards",
        description="Score model completions with TempR1's rule-based rewards (format, localization, answer).")
    parser.add_argument("--completions", required=True, help="JSONL with 'id' and 'completion' per line")
    parser.add_argument("--samples", required=True, help="samples JSONL (id, task, duration, segments, answer)")
    parser.add_argument("--output", help="per-row rewards JSONL (default: COMPLETIONS with .rewards.jsonl)")
    parser.add_argument("--think", default="optional", choices=THINK_MODES)
    parser.add_argument("--sigma", type=float, default=1.0, help="count-reward width for tal (default 1.0)")
    parser.add_argument("--weights", default="", help="e.g. format=1,localization=1,answer=1")
    args = parser.parse_args(argv)
    output = args.output or re.sub(r"(\.jsonl)?$", ".rewards.jsonl", args.completions, count=1)
    try:
        results = score_files(args.completions, args.samples, think=args.think,
                              weights=_parse_weights(args.weights), sigma=args.sigma)
        with open(output, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_table(results))
    print(f"wrote {len(results)} rows to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
