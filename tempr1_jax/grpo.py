"""GRPO as pure functions over arrays: group advantages, the clipped policy loss, KL estimators, metrics.

Everything here is jit-compatible, takes explicit masks and knows nothing of models: the per-token
log-probabilities of the sampled completion tokens come in as arrays (the model provides them, see
``tempr1_jax.trainer.PolicyFn``).

Layout conventions (the same everywhere in the trainer):

- A rollout batch has ``B = num_prompts * G`` rows; the ``G`` completions of one prompt are **contiguous**
  rows (``rewards.reshape(-1, G)`` gives one row per prompt), as in TRL's ``repeat_interleave`` layout.
- Per-token arrays are ``[B, L]`` over the completion tokens only; ``mask[b, t]`` is true for the tokens
  that count (the sampled tokens, EOS included, padding excluded). Values at masked-out positions are never
  read, so padding may hold garbage (even NaN) without poisoning the loss or its gradient.

Losses are written as ``numerator / denominator`` where the denominator depends on masks only. The trainer
computes the denominator once over the whole batch (``loss_denominator``) and passes it to every micro-batch,
so gradient accumulation over micro-batches and data-parallel sharding give the same loss as one big batch.

The recipe TempR1 inherits (VideoChat-R1's training script on TRL 0.15.1's GRPOTrainer) is the
default: ``GRPOConfig()``. Its loss per token is ``-(min(rho A, clip(rho) A) - beta k3)``, averaged over the
tokens of each completion, then over completions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

KL_ESTIMATORS = ("k1", "k2", "k3")
AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm")
IMPORTANCE_LEVELS = ("token", "sequence")
ADVANTAGE_SCALES = ("group", "batch", "none")

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """Static settings of the GRPO objective. Defaults are the TempR1 / VideoChat-R1 recipe.

    Attributes:
      num_generations: G, completions per prompt (VideoChat-R1 `--num_generations 8`).
      beta: KL coefficient; 0 drops the KL term and the reference model entirely (TRL 0.15.1 default 0.04).
      kl_estimator: "k1" (log pi - log ref), "k2" (half squared log-ratio) or "k3" (exp(d) - d - 1 with
        d = log ref - log pi; TRL's estimator).
      eps_low, eps_high: ratio clipped to [1 - eps_low, 1 + eps_high] (TRL epsilon 0.2; DAPO eps_high 0.28).
      aggregation: "seq_mean_token_mean" (token mean per completion, then mean over completions: the
        paper's), "token_mean" (mean over all tokens of the batch: DAPO), "seq_mean_token_sum_norm" (token
        sum per completion over a constant, mean over completions: Dr.GRPO).
      importance_level: "token" (PPO/GRPO ratio per token) or "sequence" (GSPO: one ratio per completion
        from the mean token log-ratio).
      num_iterations: mu, optimizer updates per rollout batch (1 in the recipe).
      advantage_scale: "group" ((r - mean_g) / (std_g + eps): TempR1/VideoChat-R1), "batch" (group mean,
        batch std), "none" (r - mean_g: Dr.GRPO).
      advantage_eps: eps added to the std (TRL 1e-4).
      advantage_ddof: delta degrees of freedom of the std (1 = unbiased, torch's default, as TRL).
      norm_constant: the Dr.GRPO constant (tokens per completion); None uses the padded completion length L
        (TRL uses max_completion_length, which is L when completions are padded to it).
      dynamic_sampling: DAPO's dynamic sampling: a step draws prompts until it has as many informative groups
        (rewards not all equal) as prompts per step, the others dropped (``tempr1_jax.dynamic_sampling``; the
        loss here only sees the kept groups, the padding groups being masked). Off in the recipe.
      max_draws_per_step: with dynamic_sampling, the most stream batches a step draws (then it trains on the
        informative groups it has, the rest of the batch masked).
    """

    num_generations: int = 8
    beta: float = 0.04
    kl_estimator: str = "k3"
    eps_low: float = 0.2
    eps_high: float = 0.2
    aggregation: str = "seq_mean_token_mean"
    importance_level: str = "token"
    num_iterations: int = 1
    advantage_scale: str = "group"
    advantage_eps: float = 1e-4
    advantage_ddof: int = 1
    norm_constant: int | None = None
    dynamic_sampling: bool = False
    max_draws_per_step: int = 4

    def __post_init__(self) -> None:
        def bad(field: str, value: Any, why: str) -> ValueError:
            return ValueError(f"grpo.{field}={value!r}: {why}")

        if self.kl_estimator not in KL_ESTIMATORS:
            raise bad("kl_estimator", self.kl_estimator, f"must be one of {KL_ESTIMATORS}")
        if self.aggregation not in AGGREGATIONS:
            raise bad("aggregation", self.aggregation, f"must be one of {AGGREGATIONS}")
        if self.importance_level not in IMPORTANCE_LEVELS:
            raise bad("importance_level", self.importance_level, f"must be one of {IMPORTANCE_LEVELS}")
        if self.advantage_scale not in ADVANTAGE_SCALES:
            raise bad("advantage_scale", self.advantage_scale, f"must be one of {ADVANTAGE_SCALES}")
        if not (isinstance(self.num_generations, int) and self.num_generations >= 1):
            raise bad("num_generations", self.num_generations, "must be an integer >= 1")
        if not (isinstance(self.num_iterations, int) and self.num_iterations >= 1):
            raise bad("num_iterations", self.num_iterations, "must be an integer >= 1")
        if not self.beta >= 0:
            raise bad("beta", self.beta, "must be >= 0")
        if not (0 <= self.eps_low < 1):
            raise bad("eps_low", self.eps_low, "must be in [0, 1)")
        if not self.eps_high >= 0:
            raise bad("eps_high", self.eps_high, "must be >= 0")
        if not self.advantage_eps >= 0:
            raise bad("advantage_eps", self.advantage_eps, "must be >= 0")
        if self.advantage_ddof not in (0, 1):
            raise bad("advantage_ddof", self.advantage_ddof, "must be 0 or 1")
        if self.norm_constant is not None and not (
            isinstance(self.norm_constant, int) and self.norm_constant >= 1
        ):
            raise bad("norm_constant", self.norm_constant, "must be None or an integer >= 1")
        if not isinstance(self.dynamic_sampling, bool):
            raise bad("dynamic_sampling", self.dynamic_sampling, "must be True or False")
        if not (isinstance(self.max_draws_per_step, int) and self.max_draws_per_step >= 1):
            raise bad("max_draws_per_step", self.max_draws_per_step, "must be an integer >= 1")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> GRPOConfig:
        """Builds the config from a mapping (e.g. ``config.grpo``); an unknown key is an error naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(m) - names)
        if unknown:
            raise ValueError(f"grpo: unknown key(s) {unknown}; known keys: {sorted(names)}")
        return cls(**dict(m))


# ----------------------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------------------


def group_advantages(
    rewards: Array,
    num_generations: int,
    *,
    scale: str = "group",
    eps: float = 1e-4,
    ddof: int = 1,
    valid: Array | None = None,
) -> tuple[Array, Array]:
    """Group-relative advantages of one rollout batch.

    Args:
      rewards: [B] total reward per completion, B = num_prompts * G with each group's G rows contiguous.
      num_generations: G.
      scale: "group": (r - mean_g) / (std_g + eps) (TempR1 / VideoChat-R1 / TRL default);
        "batch": (r - mean_g) / (std_batch + eps) with the std over every valid reward of the batch
        (TRL scale_rewards="batch"); "none": r - mean_g (Dr.GRPO).
      eps: added to the std.
      ddof: 1 for the unbiased std (torch.std, TRL), 0 for the population std.
      valid: optional [B] bool; false rows (batch padding) are left out of every statistic and get
        advantage 0. Non-finite rewards are treated as invalid too.

    Returns:
      (advantages [B] float32, zero_std_groups [] int32): the number of groups with at least one valid row
      whose valid rewards are all equal (they carry no learning signal; TRL's frac_reward_zero_std).
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"advantage scale {scale!r}: must be one of {ADVANTAGE_SCALES}")
    r = jnp.asarray(rewards, jnp.float32)
    if r.ndim != 1 or r.shape[0] % num_generations:
        raise ValueError(
            f"rewards shape {r.shape}: expected [B] with B a multiple of num_generations={num_generations}"
        )
    ok = jnp.isfinite(r)
    if valid is not None:
        ok = ok & jnp.asarray(valid, bool)
    r = jnp.where(ok, r, 0.0)
    rg = r.reshape(-1, num_generations)
    okg = ok.reshape(-1, num_generations)
    n = okg.sum(-1, keepdims=True).astype(jnp.float32)
    # Shifted by the group's max before averaging, so a group of equal rewards gets exactly 0 (a plain
    # float32 mean of 8 x 0.7 is off by an ulp, which eps = 1e-4 would turn into a same-sign advantage ~6e-4).
    hi = jnp.where(okg, rg, -jnp.inf).max(-1, keepdims=True)
    lo = jnp.where(okg, rg, jnp.inf).min(-1, keepdims=True)
    shifted = jnp.where(okg, rg - jnp.where(n > 0, hi, 0.0), 0.0)
    dev = jnp.where(okg, shifted - shifted.sum(-1, keepdims=True) / jnp.maximum(n, 1.0), 0.0)
    std = jnp.sqrt((dev * dev).sum(-1, keepdims=True) / jnp.maximum(n - ddof, 1.0))
    if scale == "group":
        adv = dev / (std + eps)
    elif scale == "batch":
        nb = ok.sum().astype(jnp.float32)
        rb = jnp.where(ok, r - jnp.where(nb > 0, jnp.where(ok, r, -jnp.inf).max(), 0.0), 0.0)
        db = jnp.where(ok, rb - rb.sum() / jnp.maximum(nb, 1.0), 0.0)
        std_b = jnp.sqrt((db * db).sum() / jnp.maximum(nb - ddof, 1.0))
        adv = dev / (std_b + eps)
    else:
        adv = dev
    adv = jnp.where(okg, adv, 0.0).reshape(-1)
    zero_std = jnp.sum((n[:, 0] > 0) & (hi[:, 0] == lo[:, 0])).astype(jnp.int32)
    return adv, zero_std


# ----------------------------------------------------------------------------------------------------------
# KL estimators and the policy loss
# ----------------------------------------------------------------------------------------------------------


def kl_estimate(logp: Array, ref_logp: Array, estimator: str = "k3") -> Array:
    """Per-token estimate of KL(pi || ref) from the sampled tokens' log-probs ([B, L] each, nats).

    k1 = log pi - log ref; k2 = (log pi - log ref)^2 / 2; k3 = exp(d) - d - 1 with d = log ref - log pi
    (Schulman's low-variance estimator, TRL's and VideoChat-R1's).
    """
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k2":
        return 0.5 * jnp.square(logp - ref_logp)
    if estimator == "k3":
        d = ref_logp - logp
        return jnp.exp(d) - d - 1.0
    raise ValueError(f"kl estimator {estimator!r}: must be one of {KL_ESTIMATORS}")


def _bool_mask(mask: Array) -> Array:
    return jnp.asarray(mask).astype(bool)


def loss_denominator(mask: Array, aggregation: str, norm_constant: int | None = None) -> Array:
    """The loss denominator of a whole batch, from its [B, L] completion mask alone (float32 scalar).

    seq_mean_token_mean: number of non-empty completions; token_mean: number of tokens;
    seq_mean_token_sum_norm: number of non-empty completions * norm_constant (default L). At least 1.
    """
    m = _bool_mask(mask)
    n_seq = jnp.sum(m.any(-1)).astype(jnp.float32)
    if aggregation == "seq_mean_token_mean":
        d = n_seq
    elif aggregation == "token_mean":
        d = jnp.sum(m).astype(jnp.float32)
    elif aggregation == "seq_mean_token_sum_norm":
        d = n_seq * float(norm_constant if norm_constant is not None else m.shape[-1])
    else:
        raise ValueError(f"loss aggregation {aggregation!r}: must be one of {AGGREGATIONS}")
    return jnp.maximum(d, 1.0)


def loss_numerator(per_token: Array, mask: Array, aggregation: str) -> Array:
    """The loss numerator: per-token values [B, L] reduced over the mask as ``aggregation`` says."""
    m = _bool_mask(mask)
    x = jnp.where(m, per_token, 0.0)
    if aggregation == "seq_mean_token_mean":
        count = jnp.maximum(m.sum(-1), 1).astype(x.dtype)
        return jnp.sum(x.sum(-1) / count)
    if aggregation in ("token_mean", "seq_mean_token_sum_norm"):
        return jnp.sum(x)
    raise ValueError(f"loss aggregation {aggregation!r}: must be one of {AGGREGATIONS}")


def importance_log_ratio(logp: Array, old_logp: Array, mask: Array, level: str = "token") -> Array:
    """log(pi / pi_old) per token ([B, L]) or per completion ([B, 1], GSPO: mean over its tokens)."""
    m = _bool_mask(mask)
    lr = jnp.where(m, logp - old_logp, 0.0)
    if level == "token":
        return lr
    if level == "sequence":
        count = jnp.maximum(m.sum(-1, keepdims=True), 1).astype(lr.dtype)
        return lr.sum(-1, keepdims=True) / count
    raise ValueError(f"importance level {level!r}: must be one of {IMPORTANCE_LEVELS}")


def policy_loss(
    logp: Array,
    advantages: Array,
    mask: Array,
    cfg: GRPOConfig,
    *,
    old_logp: Array | None = None,
    ref_logp: Array | None = None,
    entropy: Array | None = None,
    denominator: Array | None = None,
) -> tuple[Array, dict[str, dict[str, Array]]]:
    """The GRPO loss of one (micro-)batch and its metrics.

    Args:
      logp: [B, L] float32 log pi_theta of the sampled tokens (differentiated).
      advantages: [B] float32, one per completion (see group_advantages).
      mask: [B, L] bool, the completion tokens that count.
      cfg: the objective's settings.
      old_logp: [B, L] log pi_old of the same tokens (the rollout's). None means the batch is on-policy
        and pi_old = stop_gradient(pi_theta), so the ratio is exactly 1 (TRL 0.15.1 with mu = 1).
      ref_logp: [B, L] log pi_ref; required when cfg.beta > 0, never read when cfg.beta == 0.
      entropy: [B, L] per-token entropy of pi_theta (nats), only for the metrics; may be None.
      denominator: the whole batch's ``loss_denominator``; None uses this batch's own.

    Returns:
      (loss, aux): loss = numerator / denominator, a float32 scalar whose sum over the micro-batches of a
      batch is the batch's loss. aux holds metrics in four reductions, each a dict of name -> array:
      "sum" (add over micro-batches: loss parts), "mean" (name -> [2] = (sum, count), divide at the end),
      "max" and "min". Use ``merge_aux`` and ``finalize_aux``.
    """
    m = _bool_mask(mask)
    logp = jnp.where(m, jnp.asarray(logp, jnp.float32), 0.0)
    if old_logp is None:
        old = jax.lax.stop_gradient(logp)
    else:
        old = jnp.where(m, jnp.asarray(old_logp, jnp.float32), 0.0)
    if denominator is None:
        denominator = loss_denominator(m, cfg.aggregation, cfg.norm_constant)
    adv = jnp.asarray(advantages, jnp.float32)[:, None]

    log_ratio = importance_log_ratio(logp, old, m, cfg.importance_level)
    ratio = jnp.exp(log_ratio)  # [B, L] or [B, 1]
    clipped = jnp.clip(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    pg = -jnp.minimum(ratio * adv, clipped * adv)  # broadcasts to [B, L]
    pg = jnp.broadcast_to(pg, m.shape)

    pg_num = loss_numerator(pg, m, cfg.aggregation)
    loss = pg_num / denominator
    sums = {"loss": loss, "pg_loss": pg_num / denominator}
    tokens = jnp.sum(m).astype(jnp.float32)
    means: dict[str, Array] = {}

    def token_mean(name: str, x: Array) -> None:
        x = jnp.broadcast_to(x, m.shape).astype(jnp.float32)
        means[name] = jnp.stack([jnp.sum(jnp.where(m, x, 0.0)), tokens])

    if cfg.beta > 0:
        if ref_logp is None:
            raise ValueError("policy_loss: grpo.beta > 0 needs ref_logp (the reference model's log-probs)")
        ref = jnp.where(m, jnp.asarray(ref_logp, jnp.float32), 0.0)
        kl = kl_estimate(logp, ref, cfg.kl_estimator)
        kl_num = loss_numerator(kl, m, cfg.aggregation)
        sums["kl_loss"] = cfg.beta * kl_num / denominator
        loss = loss + sums["kl_loss"]
        sums["loss"] = loss
        token_mean("kl", kl)

    # Clip fractions as TRL defines them: the tokens whose objective the clip actually cuts.
    ratio_b = jnp.broadcast_to(ratio, m.shape)
    low = (ratio_b < 1.0 - cfg.eps_low) & (adv < 0)
    high = (ratio_b > 1.0 + cfg.eps_high) & (adv > 0)
    token_mean("clip/low", low)
    token_mean("clip/high", high)
    token_mean("clip/region", low | high)
    token_mean("ratio/mean", ratio_b)
    if entropy is not None:
        token_mean("entropy", jnp.asarray(entropy, jnp.float32))
    sums["tokens"] = tokens
    aux = {
        "sum": sums,
        "mean": means,
        "max": {"ratio/max": jnp.max(jnp.where(m, ratio_b, -jnp.inf))},
        "min": {"ratio/min": jnp.min(jnp.where(m, ratio_b, jnp.inf))},
    }
    return loss, aux


def merge_aux(a: dict[str, dict[str, Array]], b: dict[str, dict[str, Array]]) -> dict[str, dict[str, Array]]:
    """Combines the aux metrics of two micro-batches (same keys)."""
    return {
        "sum": jax.tree.map(jnp.add, a["sum"], b["sum"]),
        "mean": jax.tree.map(jnp.add, a["mean"], b["mean"]),
        "max": jax.tree.map(jnp.maximum, a["max"], b["max"]),
        "min": jax.tree.map(jnp.minimum, a["min"], b["min"]),
    }


def finalize_aux(aux: dict[str, dict[str, Array]]) -> dict[str, Array]:
    """Flat name -> float32 scalar. Means divide by their counts; extrema over no token read 0."""
    out = dict(aux["sum"])
    for k, v in aux["mean"].items():
        out[k] = v[0] / jnp.maximum(v[1], 1.0)
    for k, v in {**aux["max"], **aux["min"]}.items():
        out[k] = jnp.where(jnp.isinf(v) & (aux["sum"]["tokens"] == 0), 0.0, v)
    return out
