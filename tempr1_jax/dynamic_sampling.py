"""Dynamic sampling (DAPO): a step keeps drawing prompts until it has ``train.prompts_per_step`` informative groups.

A group whose G valid rewards are all equal has advantage 0 and adds no policy gradient. With
``grpo.dynamic_sampling`` a step draws stream batches, rolls each out and scores it, and keeps only the groups
whose rewards vary, until it holds its quota or has drawn ``grpo.max_draws_per_step`` batches. The update then
sees one batch of the usual static shape: the kept groups first, the rest padding groups (``sample_mask``
False, hence no advantage, no loss and no place in any denominator: ``tempr1_jax.grpo``). Every drawn prompt
moves the stream position, so a resumed run continues where the interrupted one stood.

    informative_groups(total, valid, G)               numpy: bool [groups], the groups with a learning signal
    take_rows(batches, picks, pad_id)                 numpy: one stream Batch made of rows of several
    draw(first, next_batch, rollout, ...)             the step's draws -> (update Draw, drawn Draws, counts)

Host-side only: the rollouts are the caller's (``rollout(batch, k) -> Draw``, the k-th draw of the step).
On several processes every host keeps its own share (its batch size) and all hosts draw until every one is
full, so the collectives of the rollout stay in lockstep.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from data_pipeline.stream import Batch


@dataclasses.dataclass
class Draw:
    """One batch of prompts with its G completions per prompt (this host's rows, numpy).

    tokens, completion_mask, logp: [b * G, T]; rewards: ``compute_rewards`` keys -> [b * G];
    completions / samples: the b * G texts and sample records; device: the rollout's own arrays on the mesh
    ``(prompts, {"tokens", "completion_mask", "logp"})`` when the update can use them as they are, else None.
    """

    batch: Batch
    tokens: np.ndarray
    completion_mask: np.ndarray
    logp: np.ndarray
    rewards: dict[str, np.ndarray]
    completions: list[str]
    samples: list[dict]
    device: Any = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)


def informative_groups(total: np.ndarray, valid: np.ndarray, G: int) -> np.ndarray:
    """bool [groups]: the groups whose valid, finite rewards are not all equal (``grpo.group_advantages`` gives
    the others advantage 0 everywhere). total, valid: [groups * G], each group's G rows contiguous."""
    r = np.asarray(total, np.float64).reshape(-1, G)
    ok = np.asarray(valid, bool).reshape(-1, G) & np.isfinite(r)
    hi = np.where(ok, r, -np.inf).max(1)
    lo = np.where(ok, r, np.inf).min(1)
    return (ok.sum(1) >= 2) & (hi > lo)


def take_rows(batches: Sequence[Batch], picks: Sequence[tuple[int, int]], valid: Sequence[bool], pad_id: int) -> Batch:
    """A stream Batch whose row i is row ``picks[i] = (batch k, row j)`` of ``batches``, ``sample_mask`` set to
    ``valid[i]``. Prompts are left-padded (``pad_id``) and videos right-padded (zeros) to the largest bucket
    among the picked batches, a shape the stream itself produces."""
    L = max(batches[k].input_ids.shape[1] for k, _ in picks)
    N = max(batches[k].pixel_values.shape[1] for k, _ in picks)

    def row(k: int, j: int, field: str) -> np.ndarray:
        x = getattr(batches[k], field)[j]
        if field in ("input_ids", "attention_mask"):
            return np.pad(x, (L - x.shape[0], 0), constant_values=pad_id if field == "input_ids" else 0)
        if field in ("pixel_values", "pixel_mask"):
            return np.pad(x, [(0, N - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
        return x

    fields = {f: np.stack([row(k, j, f) for k, j in picks]) for f in Batch._fields}
    fields["sample_mask"] = np.asarray(valid, bool) & fields["sample_mask"].astype(bool)
    return Batch(**fields)


def _rows(x: Any, picks: Sequence[tuple[int, int]], G: int) -> Any:
    """The G rows of each picked group from per-draw row arrays / lists ``x[k]``."""
    if isinstance(x[0], np.ndarray):
        return np.concatenate([x[k][j * G : (j + 1) * G] for k, j in picks])
    return [v for k, j in picks for v in x[k][j * G : (j + 1) * G]]


def assemble_update(draws: Sequence[Draw], picks: Sequence[tuple[int, int]], n_kept: int, G: int, pad_id: int) -> Draw:
    """One Draw of ``len(picks)`` prompts from groups of several draws: the first ``n_kept`` picks train, the
    others only pad the batch (their ``sample_mask`` False)."""
    valid = [i < n_kept for i in range(len(picks))]
    return Draw(
        batch=take_rows([d.batch for d in draws], picks, valid, pad_id),
        tokens=_rows([d.tokens for d in draws], picks, G),
        completion_mask=_rows([d.completion_mask for d in draws], picks, G),
        logp=_rows([d.logp for d in draws], picks, G),
        rewards={key: _rows([d.rewards[key] for d in draws], picks, G) for key in draws[0].rewards},
        completions=_rows([d.completions for d in draws], picks, G),
        samples=_rows([d.samples for d in draws], picks, G),
    )


def _all_hosts_full(short: int) -> bool:
    """True when no process still lacks informative groups (every process calls it)."""
    if jax.process_count() == 1:
        return short <= 0
    return bool(np.max(np.asarray(multihost_utils.process_allgather(np.array([short], np.int32)))) <= 0)


def _sum_over_hosts(counts: dict[str, float]) -> dict[str, float]:
    if jax.process_count() == 1:
        return counts
    keys = sorted(counts)
    total = np.asarray(multihost_utils.process_allgather(np.array([counts[k] for k in keys], np.float64)))
    return dict(zip(keys, (float(v) for v in total.reshape(-1, len(keys)).sum(0)), strict=True))


def draw(
    first: Batch,
    next_batch: Callable[[], Batch],
    rollout: Callable[[Batch, int], Draw],
    *,
    G: int,
    max_draws: int,
    pad_id: int,
) -> tuple[Draw, list[Draw], dict[str, float]]:
    """The draws of one step: ``first``, then ``next_batch()`` while some host lacks informative groups and fewer
    than ``max_draws`` batches were drawn, each rolled out and scored by ``rollout(batch, k)``.

    Returns (the update's Draw, of ``first``'s batch size: the kept groups in draw order, then padding groups;
    every Draw made; counts summed over the processes: ``dynamic/draws``, ``dynamic/groups_drawn`` (valid
    groups rolled out), ``dynamic/informative`` (of those, groups with a signal), ``dynamic/groups_kept`` (that
    the update trains on, at most ``train.prompts_per_step``) and ``dynamic/rollouts`` (completions sampled)).
    """
    quota = first.input_ids.shape[0]
    draws: list[Draw] = []
    kept: list[tuple[int, int]] = []
    drawn_groups = informative = rollouts = 0
    batch = first
    while True:
        d = rollout(batch, len(draws))
        draws.append(d)
        groups_valid = np.asarray(batch.sample_mask, bool)
        good = informative_groups(d.rewards["total"], np.repeat(groups_valid, G), G)
        drawn_groups += int(groups_valid.sum())
        rollouts += int(d.tokens.shape[0])
        informative += int(good.sum())
        kept += [(len(draws) - 1, int(j)) for j in np.flatnonzero(good)][: quota - len(kept)]
        if len(draws) >= max_draws or _all_hosts_full(quota - len(kept)):
            break
        batch = next_batch()
    n_kept = len(kept)
    picks = kept + [(len(draws) - 1, j % quota) for j in range(quota - n_kept)]
    update = assemble_update(draws, picks, n_kept, G, pad_id)
    counts = _sum_over_hosts(
        {
            "dynamic/draws": 0.0,
            "dynamic/groups_drawn": float(drawn_groups),
            "dynamic/informative": float(informative),
            "dynamic/groups_kept": float(n_kept),
            "dynamic/rollouts": float(rollouts),
        }
    )
    counts["dynamic/draws"] = float(len(draws))
    return update, draws, counts
