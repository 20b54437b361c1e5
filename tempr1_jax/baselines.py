"""Pixel-blind bars: the best reward an answer that ignores the video reaches on a set of samples, per task.

A policy that never looks at the pixels still reads the prompt: the duration, how many queries there are
(dtg) and the options (gvqa). Its answer can depend on those only, so its best score is a bar a model has to
beat before it can be said to read the video. ``pixel_blind_bars`` searches one family of such answers per
task and scores the best with the project's own rewards (``tempr1_jax.rewards``):

    interval   "a to b" seconds on a grid, or "f*d to g*d" (fractions of the duration d on a grid), clipped
               to [0, d] as the rewards clip every prediction
    tg         one interval
    dtg        per query count N: N intervals, slot i the best single interval for the i-th ground truth
               (the one-to-one reward scores the slots independently, so this is the family's optimum)
    vhd        a union of up to ``max_intervals`` intervals, chosen greedily
    gvqa       per option count: the most frequent answer letter; evidence as vhd
    tal        a list of up to ``max_instances`` intervals (the empty list included), chosen greedily for
               R_num + R_match; the best prefix is kept

The search is fitted on the very samples it scores (an in-sample optimum of the family): an optimistic bar
for the family, never a claim about answers outside it (e.g. ones that read the query words). The search
scores candidates with the jitted array functions (``one_to_one`` / ``many_to_one`` / ``many_to_many``); the
reported numbers come from ``compute_rewards`` on the rendered completions. Times are seconds.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tempr1_jax import rewards

_ROWS = 4096  # rows per call of a jitted reward function (one compile per function and shape)
_NICE_STEPS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


def _num(x: float) -> str:
    """A non-negative time as the completion grammar takes it: at most 2 decimals, no trailing zeros."""
    text = f"{float(x):.2f}".rstrip("0").rstrip(".")
    return text or "0"


class _Candidates:
    """The interval family: C intervals, each a function of the duration (absolute or relative).

    ``values(d)`` gives float64 [C, N, 2] seconds (clipped to [0, d], relative ones rounded to 2 decimals as
    they are written); ``text(c, d)`` writes candidate c for a video of d seconds.
    """

    def __init__(self, max_duration: float, grid: int, fractions: int) -> None:
        step = next((s for s in _NICE_STEPS if max_duration / s <= grid), max_duration / grid)
        points = np.arange(0.0, max_duration + step / 2, step)
        a, b = np.meshgrid(points, points, indexing="ij")
        keep = a < b
        self.absolute = np.stack([a[keep], b[keep]], axis=1)  # [Ca, 2] seconds
        f = np.linspace(0.0, 1.0, fractions + 1)
        a, b = np.meshgrid(f, f, indexing="ij")
        keep = a < b
        self.relative = np.stack([a[keep], b[keep]], axis=1)  # [Cr, 2] fractions of the duration

    def values(self, durations: np.ndarray) -> np.ndarray:
        d = np.asarray(durations, np.float64)[None, :, None]
        absolute = np.minimum(self.absolute[:, None, :], d)
        relative = np.round(self.relative[:, None, :] * d, 2)
        return np.concatenate([np.broadcast_to(absolute, (len(self.absolute), d.shape[1], 2)), relative])

    def text(self, c: int, duration: float) -> str:
        if c < len(self.absolute):
            a, b = self.absolute[c]
            return f"{_num(a)} to {_num(b)}"
        a, b = np.round(self.relative[c - len(self.absolute)] * duration, 2)
        return f"{_num(a)} to {_num(b)}"

    def rule(self, c: int) -> str:
        if c < len(self.absolute):
            a, b = self.absolute[c]
            return f"{_num(a)} to {_num(b)}"
        a, b = self.relative[c - len(self.absolute)]
        return f"{a:.3g}*d to {b:.3g}*d"


def _pad(x: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """[R, K, 2] values and [R, K] mask padded along K to ``size``."""
    extra = size - x.shape[1]
    return (np.pad(x, ((0, 0), (0, extra), (0, 0))), np.pad(mask, ((0, 0), (0, extra))))


def _sum_scores(
    kind: str, cand: np.ndarray, base: np.ndarray, gt: np.ndarray, gt_mask: np.ndarray, sigma: float
) -> np.ndarray:
    """Summed localization reward over N samples of each candidate appended to ``base``: float64 [C].

    cand: [C, N, 2] seconds; base: [N, k, 2] intervals every candidate is added to (k may be 0); gt / gt_mask:
    [N, M, 2] / [N, M]. Rows go to the jitted reward function in calls of a fixed size.
    """
    fn = rewards.LOCALIZATION_FNS[kind]
    c_total, n = cand.shape[:2]
    k = base.shape[1]
    p_size, m_size = rewards.bucket(k + 1), rewards.bucket(gt.shape[1])
    gt_p, gm_p = _pad(gt.astype(np.float32), gt_mask, m_size)
    per_call = max(1, _ROWS // n)
    rows = max(_ROWS, rewards.bucket_rows(n))
    out = np.zeros(c_total, np.float64)
    extra = (np.float32(sigma),) if kind == "many_to_many" else ()
    for c0 in range(0, c_total, per_call):
        block = cand[c0 : c0 + per_call]  # [b, N, 2]
        b = len(block)
        pred = np.concatenate([np.broadcast_to(base, (b, n, k, 2)), block[:, :, None]], axis=2)
        pred, pmask = _pad(pred.reshape(b * n, k + 1, 2).astype(np.float32), np.ones((b * n, k + 1), bool), p_size)
        args = [pred, pmask, np.tile(gt_p, (b, 1, 1)), np.tile(gm_p, (b, 1))]
        args = [np.pad(a, ((0, rows - b * n),) + ((0, 0),) * (a.ndim - 1)) for a in args]
        out[c0 : c0 + b] = np.asarray(fn(*args, *extra))[: b * n].reshape(b, n).sum(axis=1)
    return out


def _mean_scores(
    kind: str, cand: np.ndarray, base: np.ndarray, gt: np.ndarray, gt_mask: np.ndarray, sigma: float
) -> np.ndarray:
    """Mean localization reward over N samples of each candidate appended to ``base`` (as ``_sum_scores``):
    float64 [C]. Samples are scored in groups of one ground-truth count bucket, so a few samples with very
    many instances (THUMOS14 has up to 218 of a class) do not make every row pay for their size."""
    counts = gt_mask.sum(axis=1)
    sizes = np.array([rewards.bucket(int(c)) for c in counts])
    total = np.zeros(cand.shape[0], np.float64)
    for size in np.unique(sizes):
        rows = np.flatnonzero(sizes == size)
        total += _sum_scores(kind, cand[:, rows], base[rows], gt[rows, :size], gt_mask[rows, :size], sigma)
    return total / len(counts)


def _gt_arrays(samples: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth segments clipped to each duration: float64 [N, M, 2] and bool [N, M]."""
    segs = [rewards.check_sample(s, i).segments for i, s in enumerate(samples)]
    m = max(1, max(len(x) for x in segs))
    gt = np.zeros((len(segs), m, 2))
    mask = np.zeros((len(segs), m), bool)
    for i, x in enumerate(segs):
        if x:
            gt[i, : len(x)] = x
            mask[i, : len(x)] = True
    return gt, mask


def _empty_score(gt_mask: np.ndarray, sigma: float) -> float:
    """Mean many_to_many reward of the empty prediction (R_num only; 2 where a sample has no instance)."""
    n_gt = gt_mask.sum(axis=1).astype(np.float64)
    r_num = np.exp(-n_gt / np.maximum(np.minimum(n_gt, 3.0) * sigma, 1e-12))
    return float(np.where(n_gt > 0, r_num, 2.0).mean())


def _greedy(
    kind: str,
    cands: _Candidates,
    durations: np.ndarray,
    gt: np.ndarray,
    gt_mask: np.ndarray,
    steps: int,
    sigma: float,
    allow_empty: bool,
) -> list[int]:
    """Candidate indices added one at a time, each the one that most raises the mean reward. Without
    ``allow_empty`` it stops when none raises it; with it, all ``steps`` are taken and the best prefix (the
    empty list included) is returned (tal: one more instance can lower R_num + R_match before it raises it)."""
    values = cands.values(durations)
    chosen: list[int] = []
    base = np.zeros((len(durations), 0, 2))
    best, best_len = (_empty_score(gt_mask, sigma), 0) if allow_empty else (-np.inf, 0)
    for _ in range(steps):
        scores = _mean_scores(kind, values, base, gt, gt_mask, sigma)
        c = int(np.argmax(scores))
        if not allow_empty and chosen and scores[c] <= best + 1e-9:
            break
        chosen.append(c)
        base = np.concatenate([base, values[c][:, None]], axis=1)
        if scores[c] > best + 1e-9:
            best, best_len = float(scores[c]), len(chosen)
    return chosen[:best_len]


def _fit(
    task: str, samples: Sequence[Mapping], cands: _Candidates, *, max_intervals: int, max_instances: int, sigma: float
) -> tuple[Callable[[Mapping], tuple[str, str | None]], str]:
    """The best blind answer of one task: (sample -> (intervals text, gvqa letter or None), rule text)."""
    durations = np.asarray([float(s["duration"]) for s in samples])
    gt, gt_mask = _gt_arrays(samples)
    if task in ("tg", "dtg"):
        slots: dict[int, list[int]] = {}  # query count N -> the best candidate of each slot
        counts = gt_mask.sum(axis=1)
        for n in sorted(set(counts.tolist())):
            rows = np.flatnonzero(counts == n)
            values, empty = cands.values(durations[rows]), np.zeros((len(rows), 0, 2))
            slot_gt = [(gt[rows, i : i + 1], gt_mask[rows, i : i + 1]) for i in range(n)]
            slots[n] = [int(np.argmax(_mean_scores("one_to_one", values, empty, *g, sigma))) for g in slot_gt]
        head = (lambda n: "") if task == "tg" else (lambda n: f"N={n}: ")
        rule = "; ".join(head(n) + ", ".join(cands.rule(c) for c in cs) for n, cs in slots.items())

        def answer(s: Mapping) -> tuple[str, None]:
            return ", ".join(cands.text(c, s["duration"]) for c in slots[len(s["segments"])]), None

        return answer, rule
    kind = "many_to_many" if task == "tal" else "many_to_one"
    steps = max_instances if task == "tal" else max_intervals
    chosen = _greedy(kind, cands, durations, gt, gt_mask, steps, sigma, allow_empty=task == "tal")
    rule = ", ".join(cands.rule(c) for c in chosen) or "(no interval)"
    letters: dict[int, str] = {}
    if task == "gvqa":
        by_count: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        for s in samples:
            by_count[len(s["options"])][s["answer"]] += 1
        letters = {k: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for k, c in sorted(by_count.items())}
        rule = f"letter by option count {letters}; evidence {rule}"

    def answer_or_evidence(s: Mapping) -> tuple[str, str | None]:
        letter = letters[len(s["options"])] if task == "gvqa" else None
        return ", ".join(cands.text(c, s["duration"]) for c in chosen), letter

    return answer_or_evidence, rule


def _render(task: str, intervals: str, letter: str | None, think: str) -> str:
    """The completion of an answer, with an empty think block where the think mode requires one."""
    head = "<think> </think> " if think == "required" else ""
    if task == "gvqa":
        return f"{head}<answer>{letter}</answer> <evidence>{intervals}</evidence>"
    return f"{head}<answer>{intervals}</answer>"


def _blind(
    samples: Sequence[Mapping],
    *,
    think: str,
    sigma: float,
    grid: int,
    fractions: int,
    max_intervals: int,
    max_instances: int,
) -> tuple[list[str], dict[str, str]]:
    """(the blind completion of each sample, the rule of each task)."""
    if think not in rewards.THINK_MODES:
        raise ValueError(f"think must be one of {rewards.THINK_MODES}, got {think!r}")
    if grid < 1 or fractions < 1 or max_intervals < 1 or max_instances < 0:
        raise ValueError(
            f"need grid, fractions, max_intervals >= 1 and max_instances >= 0, got {grid}, "
            f"{fractions}, {max_intervals}, {max_instances}"
        )
    by_task: dict[str, list[Mapping]] = collections.defaultdict(list)
    for i, s in enumerate(samples):
        rewards.check_sample(s, i)
        if s["task"] == "mcq":
            raise ValueError(f"sample {i} (id {s.get('id')!r}): task mcq (evaluation-only multiple choice) has no "
                             "pixel-blind bar here: without the video its best is the most frequent answer letter")
        if s["task"] == "gvqa" and (isinstance(s.get("options"), str) or not isinstance(s.get("options"), Sequence)):
            raise ValueError(f"sample {i} (id {s.get('id')!r}): gvqa needs a list in field 'options'")
        by_task[s["task"]].append(s)
    policies = {}
    for task, group in by_task.items():
        cands = _Candidates(max(float(s["duration"]) for s in group), grid, fractions)
        policies[task] = _fit(task, group, cands, max_intervals=max_intervals, max_instances=max_instances, sigma=sigma)
    completions = [_render(s["task"], *policies[s["task"]][0](s), think) for s in samples]
    return completions, {task: rule for task, (_, rule) in policies.items()}


def pixel_blind_completions(
    samples: Sequence[Mapping],
    *,
    think: str = "optional",
    sigma: float = 1.0,
    grid: int = 32,
    fractions: int = 20,
    max_intervals: int = 3,
    max_instances: int = 5,
) -> list[str]:
    """The best pixel-blind completion of each sample (fitted per task on ``samples``; see the module doc).

    grid: at most this many steps of a round size (0.5 s, 1 s, 2 s, 5 s, ...) span the longest video of a task;
    fractions: the relative grid is 1/fractions of the duration; max_intervals: the most intervals of a vhd
    answer or gvqa evidence; max_instances: the most tal instances. Raises ValueError on a malformed sample.
    """
    return _blind(
        samples,
        think=think,
        sigma=sigma,
        grid=grid,
        fractions=fractions,
        max_intervals=max_intervals,
        max_instances=max_instances,
    )[0]


def pixel_blind_bars(
    samples: Sequence[Mapping],
    *,
    think: str = "optional",
    weights: Mapping[str, float] | None = None,
    sigma: float = 1.0,
    grid: int = 32,
    fractions: int = 20,
    max_intervals: int = 3,
    max_instances: int = 5,
) -> dict[str, dict]:
    """Per task: what the best pixel-blind answer scores, by ``tempr1_jax.rewards.compute_rewards``.

    Returns ``{task: {"completion": the blind completion of the task's first sample, "rule": the answer as a
    function of the duration d (per count where it has one), "format", "localization", "answer", "total":
    means over the task's samples, "count": how many}}``. The search maximizes each reward term on its own,
    which maximizes the total for non-negative weights; negative weights raise ValueError. Other arguments as
    ``pixel_blind_completions``.
    """
    if not samples:
        raise ValueError("pixel_blind_bars needs at least one sample")
    if any(rewards._is_real(v) and v < 0 for v in (weights or {}).values()):
        raise ValueError(f"weights must be >= 0 (the bar maximizes each reward term), got {dict(weights)}")
    completions, rules = _blind(
        samples,
        think=think,
        sigma=sigma,
        grid=grid,
        fractions=fractions,
        max_intervals=max_intervals,
        max_instances=max_instances,
    )
    scores = rewards.compute_rewards(completions, samples, think=think, weights=weights, sigma=sigma)
    tasks = np.asarray([s["task"] for s in samples])
    out = {}
    for task, rule in rules.items():
        rows = np.flatnonzero(tasks == task)
        out[task] = {
            "completion": completions[rows[0]],
            "rule": rule,
            **{k: float(scores[k][rows].mean()) for k in ("format", "localization", "answer", "total")},
            "count": int(len(rows)),
        }
    return out
