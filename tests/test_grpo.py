"""Parity of tempr1_jax.grpo with plain numpy formulas and with TRL's formulas (written here in numpy/jnp).

TRL's formulas, as TRL 0.15.1's GRPOTrainer (which VideoChat-R1 and TempR1 run) computes them
(trl/trainer/grpo_trainer.py; TRL 0.15.1 for the VideoChat-R1 recipe):
  advantages = (r - mean_g) / (std_g + 1e-4), torch's unbiased std; "batch": the std of the whole batch.
  coef_1 = exp(log_ratio) (token) or exp(masked mean of log_ratio) (sequence); coef_2 = clamp(coef_1, ...)
  per_token_loss = -min(coef_1 * A, coef_2 * A) + beta * k3
  grpo: mean_i(sum_t m L / clamp(sum_t m, 1)); bnpo/dapo: sum m L / sum m; dr_grpo: sum m L / (B * T_max)
  0.15.1: per_token_loss = -(exp(logp - logp.detach()) * A - beta * k3), then the grpo mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempr1_jax import grpo

# Jitted once per configuration: eager op-by-op dispatch would compile every small op separately.
policy_loss = jax.jit(grpo.policy_loss, static_argnums=3)
group_advantages = jax.jit(grpo.group_advantages, static_argnums=1, static_argnames=("scale", "eps", "ddof"))

# ----------------------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------------------


def np_advantages(rewards, G, scale="group", eps=1e-4, ddof=1, valid=None):
    """Loop-per-group numpy reference, float64."""
    r = np.asarray(rewards, np.float64)
    ok = np.isfinite(r) if valid is None else (np.asarray(valid, bool) & np.isfinite(r))
    adv = np.zeros_like(r)
    zero = 0
    all_ok = r[ok]
    if all_ok.size:
        std_b = np.sqrt(((all_ok - all_ok.mean()) ** 2).sum() / max(all_ok.size - ddof, 1))
    for g in range(len(r) // G):
        sl = slice(g * G, (g + 1) * G)
        vals = r[sl][ok[sl]]
        if vals.size == 0:
            continue
        mean = vals.mean()
        std = np.sqrt(((vals - mean) ** 2).sum() / max(vals.size - ddof, 1))
        zero += int(vals.max() == vals.min())
        for i in range(g * G, (g + 1) * G):
            if not ok[i]:
                continue
            if scale == "group":
                adv[i] = (r[i] - mean) / (std + eps)
            elif scale == "batch":
                adv[i] = (r[i] - mean) / (std_b + eps)
            else:
                adv[i] = r[i] - mean
    return adv, zero


def trl_advantages(rewards, G, scale_rewards="group"):
    """TRL's vectorized form (torch ops transliterated: .std() is unbiased)."""
    r = np.asarray(rewards, np.float64)
    grouped = r.reshape(-1, G)
    mean = np.repeat(grouped.mean(1), G)
    if scale_rewards == "batch":
        std = np.full_like(r, r.std(ddof=1))
    else:
        std = np.repeat(grouped.std(1, ddof=1), G)
    adv = r - mean
    if scale_rewards != "none":
        adv = adv / (std + 1e-4)
    return adv


def trl_loss(xp, logp, old, ref, adv, mask, *, loss_type, level="token", eps_low=0.2, eps_high=0.2, beta=0.04,
             max_completion_length=None):  # fmt: skip
    """TRL's current per-token loss and aggregation, in numpy or jax.numpy (xp)."""
    mask = mask.astype(logp.dtype)
    log_ratio = logp - old
    if level == "token":
        liw = log_ratio
    else:
        liw = ((log_ratio * mask).sum(-1) / xp.maximum(mask.sum(-1), 1.0))[:, None]
    coef_1 = xp.exp(liw)
    coef_2 = xp.clip(coef_1, 1 - eps_low, 1 + eps_high)
    l1 = coef_1 * adv[:, None]
    l2 = coef_2 * adv[:, None]
    ptl = -xp.minimum(l1, l2)
    if beta != 0.0:
        kl = xp.exp(ref - logp) - (ref - logp) - 1
        ptl = ptl + beta * kl
    if loss_type == "grpo":
        return ((ptl * mask).sum(-1) / xp.maximum(mask.sum(-1), 1.0)).mean()
    if loss_type in ("bnpo", "dapo"):
        return (ptl * mask).sum() / xp.maximum(mask.sum(), 1.0)
    if loss_type == "dr_grpo":
        return (ptl * mask).sum() / (ptl.shape[0] * max_completion_length)
    raise AssertionError(loss_type)


def trl_0151_loss(logp, ref, adv, mask, beta=0.04):
    """TRL 0.15.1 (VideoChat-R1): ratio exp(logp - logp.detach()), k3 KL, sequence mean then batch mean."""
    kl = jnp.exp(ref - logp) - (ref - logp) - 1
    ptl = jnp.exp(logp - jax.lax.stop_gradient(logp)) * adv[:, None]
    ptl = -(ptl - beta * kl)
    m = mask.astype(jnp.float32)
    return ((ptl * m).sum(1) / m.sum(1)).mean()


def np_loss(logp, old, ref, adv, mask, cfg: grpo.GRPOConfig):
    """Token-by-token numpy loop reference of tempr1_jax's loss (all three aggregations), float64."""
    B, L = logp.shape
    per_seq, tok_sum, tok_n, n_seq = [], 0.0, 0, 0
    for b in range(B):
        toks = [t for t in range(L) if mask[b, t]]
        if not toks:
            continue
        n_seq += 1
        if cfg.importance_level == "sequence":
            s = np.mean([logp[b, t] - old[b, t] for t in toks])
        vals = []
        for t in toks:
            lr = (logp[b, t] - old[b, t]) if cfg.importance_level == "token" else s
            rho = np.exp(lr)
            obj = min(rho * adv[b], np.clip(rho, 1 - cfg.eps_low, 1 + cfg.eps_high) * adv[b])
            val = -obj
            if cfg.beta > 0:
                d = ref[b, t] - logp[b, t]
                kl = {"k1": -d, "k2": 0.5 * d * d, "k3": np.exp(d) - d - 1}[cfg.kl_estimator]
                val += cfg.beta * kl
            vals.append(val)
        per_seq.append(np.mean(vals))
        tok_sum += np.sum(vals)
        tok_n += len(vals)
    if cfg.aggregation == "seq_mean_token_mean":
        return np.sum(per_seq) / max(n_seq, 1)
    if cfg.aggregation == "token_mean":
        return tok_sum / max(tok_n, 1)
    C = cfg.norm_constant or L
    return tok_sum / max(n_seq * C, 1)


def random_batch(seed, B=8, L=7, spread=0.3):
    rng = np.random.default_rng(seed)
    logp = -rng.uniform(0.05, 3.0, size=(B, L))
    old = logp + rng.normal(0, spread, size=(B, L))
    ref = logp + rng.normal(0, spread, size=(B, L))
    adv = rng.normal(0, 1, size=B)
    lengths = rng.integers(1, L + 1, size=B)
    mask = np.arange(L)[None] < lengths[:, None]
    return [x.astype(np.float32) for x in (logp, old, ref, adv)] + [mask]


# ----------------------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_advantages_match_numpy_loop(scale, ddof):
    rng = np.random.default_rng(0)
    G = 8
    r = rng.uniform(0, 3, size=5 * G).astype(np.float32)
    r[:G] = 2.0  # a zero-std group
    r[G : 2 * G] = np.round(r[G : 2 * G])  # ties
    adv, zero = group_advantages(r, G, scale=scale, eps=1e-4, ddof=ddof)
    ref, ref_zero = np_advantages(r, G, scale, 1e-4, ddof)
    np.testing.assert_allclose(np.asarray(adv), ref, rtol=1e-5, atol=1e-5)
    assert int(zero) == ref_zero >= 1
    assert adv.dtype == jnp.float32 and adv.shape == r.shape


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(scale):
    rng = np.random.default_rng(1)
    r = rng.uniform(-1, 2, size=4 * 8).astype(np.float32)
    adv, _ = group_advantages(r, 8, scale=scale, eps=1e-4, ddof=1)
    np.testing.assert_allclose(np.asarray(adv), trl_advantages(r, 8, scale), rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    # no subnormal rewards: XLA on CPU flushes them to zero (a group of 0 and 1e-45 is constant to it, not to numpy)
    st.lists(st.floats(0, 3, width=32, allow_subnormal=False), min_size=12, max_size=12),
    st.lists(st.booleans(), min_size=12, max_size=12),
    st.sampled_from(["group", "batch", "none"]),
)
def test_advantages_with_invalid_rows_property(rewards, valid, scale):
    r = np.asarray(rewards, np.float32)
    v = np.asarray(valid)
    adv, zero = group_advantages(r, 4, scale=scale, valid=v)
    ref, ref_zero = np_advantages(r, 4, scale, 1e-4, 1, v)
    np.testing.assert_allclose(np.asarray(adv), ref, rtol=1e-4, atol=1e-4)
    assert int(zero) == ref_zero
    assert np.all(np.asarray(adv)[~v] == 0)


def test_advantages_nonfinite_rewards_are_unscorable():
    r = np.array([1.0, np.nan, 3.0, 2.0, np.inf, 0.0, 0.0, 0.0], np.float32)
    adv, zero = group_advantages(r, 4)
    a = np.asarray(adv)
    assert np.all(np.isfinite(a)) and a[1] == 0 and a[4] == 0
    ref, _ = np_advantages(r, 4)
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)
    assert int(zero) == 1  # group 2: the valid rewards (0, 0, 0) are all equal


def test_advantages_of_constant_group_are_zero_and_bad_shapes_raise():
    adv, zero = group_advantages(np.full(8, 0.7, np.float32), 8)
    assert np.allclose(np.asarray(adv), 0, atol=1e-6) and int(zero) == 1
    with pytest.raises(ValueError, match="multiple of num_generations=8"):
        group_advantages(np.zeros(12, np.float32), 8)
    with pytest.raises(ValueError, match="must be one of"):
        group_advantages(np.zeros(8, np.float32), 8, scale="std")


# ----------------------------------------------------------------------------------------------------------
# KL and the loss
# ----------------------------------------------------------------------------------------------------------


def test_kl_estimators_formulas():
    logp = np.array([-1.0, -0.2, -3.0], np.float32)
    ref = np.array([-1.5, -0.2, -0.5], np.float32)
    d = ref - logp
    np.testing.assert_allclose(grpo.kl_estimate(logp, ref, "k1"), logp - ref, rtol=1e-6)
    np.testing.assert_allclose(grpo.kl_estimate(logp, ref, "k2"), 0.5 * (logp - ref) ** 2, rtol=1e-6)
    np.testing.assert_allclose(grpo.kl_estimate(logp, ref, "k3"), np.exp(d) - d - 1, rtol=1e-6)
    assert np.all(np.asarray(grpo.kl_estimate(logp, ref, "k3")) >= 0)
    with pytest.raises(ValueError, match="k4"):
        grpo.kl_estimate(logp, ref, "k4")


AGG_TO_TRL = {"seq_mean_token_mean": "grpo", "token_mean": "dapo", "seq_mean_token_sum_norm": "dr_grpo"}


@pytest.mark.parametrize("aggregation", list(AGG_TO_TRL))
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_matches_numpy_loop_and_trl(aggregation, level, beta):
    logp, old, ref, adv, mask = random_batch(2)
    cfg = grpo.GRPOConfig(
        beta=beta, aggregation=aggregation, importance_level=level, eps_low=0.2, eps_high=0.28
    )
    loss, aux = policy_loss(logp, adv, mask, cfg, old_logp=old, ref_logp=ref if beta else None)
    want = np_loss(*[x.astype(np.float64) for x in (logp, old, ref, adv)], mask, cfg)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
    trl = trl_loss(np, *[x.astype(np.float64) for x in (logp, old, ref, adv)], mask,
                   loss_type=AGG_TO_TRL[aggregation], level=level, eps_high=0.28, beta=beta,
                   max_completion_length=logp.shape[1])  # fmt: skip
    np.testing.assert_allclose(float(loss), trl, rtol=1e-5, atol=1e-6)
    assert ("kl" in aux["mean"]) == (beta > 0)


@pytest.mark.parametrize("aggregation", list(AGG_TO_TRL))
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_loss_gradient_matches_trl(aggregation, level):
    logp, old, ref, adv, mask = random_batch(3)
    cfg = grpo.GRPOConfig(aggregation=aggregation, importance_level=level)
    ours = jax.jit(jax.grad(lambda lp: policy_loss(lp, adv, mask, cfg, old_logp=old, ref_logp=ref)[0]))(logp)
    theirs = jax.jit(
        jax.grad(
            lambda lp: trl_loss(
                jnp,
                lp,
                old,
                ref,
                adv,
                mask,
                loss_type=AGG_TO_TRL[aggregation],
                level=level,
                max_completion_length=logp.shape[1],
            )  # fmt: skip
        )
    )(logp)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-7)
    assert np.any(np.asarray(ours) != 0)


def test_default_config_is_the_videochat_r1_recipe_and_matches_trl_0_15_1():
    cfg = grpo.GRPOConfig()
    assert (cfg.num_generations, cfg.beta, cfg.kl_estimator, cfg.num_iterations) == (8, 0.04, "k3", 1)
    assert (cfg.aggregation, cfg.advantage_scale, cfg.advantage_eps, cfg.advantage_ddof) == (
        "seq_mean_token_mean", "group", 1e-4, 1,
    )  # fmt: skip
    logp, _, ref, adv, mask = random_batch(4)
    f = lambda lp: policy_loss(lp, adv, mask, cfg, old_logp=None, ref_logp=ref)[0]  # noqa: E731
    g = lambda lp: trl_0151_loss(lp, ref, adv, mask)  # noqa: E731
    f, g = jax.jit(f), jax.jit(g)
    np.testing.assert_allclose(float(f(logp)), float(g(logp)), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(jax.grad(f)(logp)), np.asarray(jax.grad(g)(logp)), rtol=1e-5, atol=1e-8
    )
    # On-policy the ratio is exactly 1: nothing is clipped.
    _, aux = policy_loss(logp, adv, mask, cfg, ref_logp=ref)
    m = grpo.finalize_aux(aux)
    assert float(m["clip/region"]) == 0 and float(m["ratio/mean"]) == 1.0


def test_kl_estimator_choice_in_the_loss():
    logp, old, ref, adv, mask = random_batch(5)
    for est in ("k1", "k2", "k3"):
        cfg = grpo.GRPOConfig(beta=0.1, kl_estimator=est)
        loss, aux = policy_loss(logp, adv, mask, cfg, old_logp=old, ref_logp=ref)
        want = np_loss(*[x.astype(np.float64) for x in (logp, old, ref, adv)], mask, cfg)
        np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
        kl = np.asarray(grpo.kl_estimate(logp, ref, est))
        np.testing.assert_allclose(float(grpo.finalize_aux(aux)["kl"]), kl[mask].mean(), rtol=1e-5)


def test_beta_zero_never_reads_the_reference():
    logp, old, _, adv, mask = random_batch(6)
    cfg = grpo.GRPOConfig(beta=0.0)
    nan_ref = np.full_like(logp, np.nan)
    a, aux_a = policy_loss(logp, adv, mask, cfg, old_logp=old, ref_logp=nan_ref)
    b, _ = policy_loss(logp, adv, mask, cfg, old_logp=old, ref_logp=None)
    assert float(a) == float(b) and np.isfinite(float(a))
    assert "kl" not in aux_a["mean"] and "kl_loss" not in aux_a["sum"]
    with pytest.raises(ValueError, match="needs ref_logp"):
        policy_loss(logp, adv, mask, grpo.GRPOConfig(beta=0.04), old_logp=old)


def test_garbage_in_padding_changes_nothing():
    logp, old, ref, adv, mask = random_batch(7)
    ent = np.abs(np.random.default_rng(0).normal(size=logp.shape)).astype(np.float32)
    cfg = grpo.GRPOConfig(beta=0.04, eps_high=0.28)

    def run(lp, o, r, e):
        f = lambda x: policy_loss(x, adv, mask, cfg, old_logp=o, ref_logp=r, entropy=e)  # noqa: E731
        (loss, aux), g = jax.jit(jax.value_and_grad(f, has_aux=True))(lp)
        return float(loss), grpo.finalize_aux(aux), np.asarray(g)

    clean = run(logp, old, ref, ent)
    bad = [
        np.where(mask, x, v).astype(np.float32)
        for x, v in zip((logp, old, ref, ent), (np.nan, -1e30, np.inf, np.nan), strict=True)
    ]
    dirty = run(*bad)
    assert clean[0] == dirty[0]
    np.testing.assert_array_equal(clean[2], dirty[2])
    for k in clean[1]:
        assert float(clean[1][k]) == float(dirty[1][k]), k


def test_metrics_match_numpy():
    logp, old, ref, adv, mask = random_batch(8, spread=0.6)
    ent = np.abs(np.random.default_rng(1).normal(size=logp.shape)).astype(np.float32)
    cfg = grpo.GRPOConfig(eps_low=0.2, eps_high=0.28)
    _, aux = policy_loss(logp, adv, mask, cfg, old_logp=old, ref_logp=ref, entropy=ent)
    m = {k: float(v) for k, v in grpo.finalize_aux(aux).items()}
    ratio = np.exp(logp - old)
    A = np.broadcast_to(adv[:, None], ratio.shape)
    low = (ratio < 0.8) & (A < 0)
    high = (ratio > 1.28) & (A > 0)
    assert low[mask].any() and high[mask].any()
    np.testing.assert_allclose(m["clip/low"], low[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(m["clip/high"], high[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(m["clip/region"], (low | high)[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(m["ratio/mean"], ratio[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(m["ratio/max"], ratio[mask].max(), rtol=1e-5)
    np.testing.assert_allclose(m["ratio/min"], ratio[mask].min(), rtol=1e-5)
    np.testing.assert_allclose(m["entropy"], ent[mask].mean(), rtol=1e-5)
    d = ref - logp
    np.testing.assert_allclose(m["kl"], (np.exp(d) - d - 1)[mask].mean(), rtol=1e-5)
    assert m["tokens"] == mask.sum()
    np.testing.assert_allclose(m["loss"], m["pg_loss"] + m["kl_loss"], rtol=1e-6)


@pytest.mark.parametrize("aggregation", list(AGG_TO_TRL))
def test_micro_batches_with_global_denominator_add_up(aggregation):
    logp, old, ref, adv, mask = random_batch(9, B=12)
    mask[3] = False  # an empty row (batch padding) counts in no denominator
    cfg = grpo.GRPOConfig(aggregation=aggregation, importance_level="sequence")
    full, aux_full = policy_loss(logp, adv, mask, cfg, old_logp=old, ref_logp=ref)
    den = grpo.loss_denominator(mask, aggregation)
    parts = [
        policy_loss(logp[s], adv[s], mask[s], cfg, old_logp=old[s], ref_logp=ref[s], denominator=den)
        for s in (slice(0, 5), slice(5, 12))
    ]
    np.testing.assert_allclose(float(parts[0][0] + parts[1][0]), float(full), rtol=1e-5, atol=1e-6)
    merged = grpo.finalize_aux(grpo.merge_aux(parts[0][1], parts[1][1]))
    for k, v in grpo.finalize_aux(aux_full).items():
        np.testing.assert_allclose(float(merged[k]), float(v), rtol=1e-5, atol=1e-7, err_msg=k)
    if aggregation != "token_mean":
        assert float(den) == (11 if aggregation == "seq_mean_token_mean" else 11 * mask.shape[1])


def test_empty_batch_gives_zero_loss_and_zero_metrics():
    logp, old, ref, adv, mask = random_batch(10)
    mask[:] = False
    loss, aux = policy_loss(logp, adv, mask, grpo.GRPOConfig(), old_logp=old, ref_logp=ref)
    m = grpo.finalize_aux(aux)
    assert float(loss) == 0 and all(np.isfinite(float(v)) for v in m.values())


@pytest.mark.parametrize(
    "field,value",
    [("kl_estimator", "k5"), ("aggregation", "mean"), ("importance_level", "seq"), ("advantage_scale", "std"),
     ("beta", -1.0), ("eps_low", 1.5), ("num_iterations", 0), ("num_generations", 0), ("advantage_ddof", 2),
     ("norm_constant", 0)],
)  # fmt: skip
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"grpo.{field}="):
        grpo.GRPOConfig(**{field: value})


def test_config_from_mapping_rejects_unknown_keys():
    assert grpo.GRPOConfig.from_mapping({"beta": 0.0}).beta == 0.0
    with pytest.raises(ValueError, match="kl_estimater"):
        grpo.GRPOConfig.from_mapping({"kl_estimater": "k3"})
