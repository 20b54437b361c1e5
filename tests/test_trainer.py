"""The train step on one device with the toy policy: wiring, accumulation, mu, freezing, NaN skips."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import toy_policy as tp

from tempr1_jax import grpo, trainer
from tempr1_jax.train_log import CompileCounter


def leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_step_equals_the_loss_and_adamw_written_out():
    """One step = GRPO advantages + policy_loss on policy_fn's log-probs + clip + AdamW, nothing else."""
    state, step, *_ = tp.setup(beta=0.04)
    params0 = tp.to_host(state.params)
    batch = tp.make_batch(0)
    cfg = grpo.GRPOConfig(num_generations=tp.G, beta=0.04, eps_high=0.28)
    adv, _ = grpo.group_advantages(batch.rewards, tp.G)
    ref_logp, _ = tp.jit_policy(params0, batch.inputs)

    def loss_fn(p):
        logp, ent = tp.policy_fn(p, batch.inputs)
        return grpo.policy_loss(logp, adv, batch.completion_mask, cfg, old_logp=batch.old_logp,
                                ref_logp=ref_logp, entropy=ent)[0]  # fmt: skip

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params0)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
        optax.join_schedules([optax.linear_schedule(0.0, 1e-2, 1), optax.linear_schedule(1e-2, 0.0, 7)], [1]),
        weight_decay=0.01))  # fmt: skip
    opt = tx.init(params0)

    @jax.jit
    def apply(g, opt, p):
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt

    # Warm-up starts at lr 0: the first update is a no-op but for the Adam moments; do two.
    want, opt = apply(grads, opt, params0)
    state, m = step(state, batch)
    assert_trees_close(state.params, want)
    np.testing.assert_allclose(float(m["loss"]), float(loss), rtol=1e-5)
    np.testing.assert_allclose(float(m["grad_norm"]), float(optax.tree.norm(grads)), rtol=1e-5)
    assert float(m["lr"]) == 0.0 and int(state.step) == 1 and int(state.skipped) == 0
    batch1 = tp.make_batch(1)
    adv1, _ = grpo.group_advantages(batch1.rewards, tp.G)
    ref1, _ = tp.jit_policy(params0, batch1.inputs)

    def loss_fn1(p):
        logp, ent = tp.policy_fn(p, batch1.inputs)
        return grpo.policy_loss(logp, adv1, batch1.completion_mask, cfg, old_logp=batch1.old_logp,
                                ref_logp=ref1)[0]  # fmt: skip

    g1 = jax.jit(jax.grad(loss_fn1))(want)
    want, opt = apply(g1, opt, want)
    state, m = step(state, batch1)
    assert_trees_close(state.params, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(m["lr"]), 1e-2, rtol=1e-6)
    assert not leaves_equal(state.params, params0)
    assert leaves_equal(state.ref_params, params0)  # the reference stays frozen


def test_gradient_accumulation_equals_one_big_batch():
    s1, step1, *_ = tp.setup()
    sn, stepn, *_ = tp.setup(micro_batches=2)
    for i in range(2):
        b = tp.make_batch(i)
        s1, m1 = step1(s1, b)
        sn, mn = stepn(sn, b)
    assert_trees_close(sn.params, s1.params, rtol=1e-5, atol=1e-7)
    for k in m1:
        np.testing.assert_allclose(float(mn[k]), float(m1[k]), rtol=1e-5, atol=1e-6, err_msg=k)


def test_mu_iterations_reuse_the_rollout_batch():
    s2, step2, *_ = tp.setup(num_iterations=2, total_steps=4)
    s1, step1, *_ = tp.setup(num_iterations=1, total_steps=8)
    b = tp.make_batch(0)
    s2, m2 = step2(s2, b)
    # Same schedule length (8 updates), two single-iteration steps on the same batch: the same two updates.
    s1, _ = step1(s1, b)
    s1, _ = step1(s1, b)
    assert_trees_close(s2.params, s1.params, rtol=1e-5, atol=1e-7)
    assert int(s2.step) == 1 and int(s1.step) == 2
    assert float(m2["lr"]) == pytest.approx(0.5e-2)  # mean of lr 0 (warm-up) and 1e-2
    with pytest.raises(ValueError, match="old_logp"):
        step2(s2, b.replace(old_logp=None))


def test_beta_zero_keeps_no_reference_and_never_runs_it():
    traces = []

    def counting_policy(params, inputs):
        traces.append(1)
        return tp.policy_fn(params, inputs)

    params = tp.init_params(0)
    tx, _ = trainer.make_optimizer({"learning_rate": 1e-2}, 4)
    for beta, expected in ((0.0, 1), (0.04, 2)):
        traces.clear()
        state = jax.eval_shape(
            lambda p, b=beta: trainer.init_state(p, tx, jax.random.PRNGKey(0), beta=b), params
        )
        assert (state.ref_params is None) == (beta == 0)
        step = trainer.make_train_step(counting_policy, tx, grpo.GRPOConfig(num_generations=tp.G, beta=beta))
        _, m = jax.eval_shape(step, state, tp.make_batch(0))  # traces (policy calls) without compiling
        assert len(traces) == expected, (beta, len(traces))
        assert ("kl" in m) == (beta > 0)


def test_frozen_subtree_gets_no_update_and_no_moments():
    state, step, _, _, trainable = tp.setup(freeze="vision/.*", micro_batches=2)  # with accumulation
    assert trainable["vision"]["proj"] is False and trainable["head"] is True
    v0 = np.asarray(state.params["vision"]["proj"])
    h0 = np.asarray(state.params["head"])
    for i in range(2):
        state, _ = step(state, tp.make_batch(i))
    assert np.array_equal(np.asarray(state.params["vision"]["proj"]), v0)
    assert not np.array_equal(np.asarray(state.params["head"]), h0)
    sizes = sum(x.size for x in jax.tree.leaves(state.opt_state))
    full, *_ = tp.setup()
    assert sum(x.size for x in jax.tree.leaves(full.opt_state)) - sizes == 2 * v0.size  # no Adam mu, nu
    with pytest.raises(ValueError, match="matches no param path"):
        trainer.trainable_mask(tp.init_params(0), "visual/.*")
    with pytest.raises(ValueError, match="not a valid regex"):
        trainer.trainable_mask(tp.init_params(0), "vision/(")


def test_non_finite_step_is_skipped_counted_and_harmless():
    state, step, *_ = tp.setup()
    state, _ = step(state, tp.make_batch(0))
    before = tp.to_host((state.params, state.opt_state))
    bad = tp.make_batch(1)
    b, t = np.argwhere(bad.completion_mask)[3]
    bad.old_logp[b, t] = np.nan  # a NaN on a token that counts
    state, m = step(state, bad)
    assert float(m["skipped"]) == 1 and int(state.skipped) == 1 and float(m["skipped_total"]) == 1
    assert not np.isfinite(float(m["loss"]))
    assert leaves_equal((state.params, state.opt_state), before)
    assert int(state.step) == 2  # the batch is consumed
    state, m = step(state, tp.make_batch(2))
    assert float(m["skipped"]) == 0 and int(state.skipped) == 1
    assert not leaves_equal(state.params, before[0])
    # The schedule did not advance on the skipped update: 2 applied updates so far -> lr(2).
    state, m = step(state, tp.make_batch(3))
    np.testing.assert_allclose(float(m["lr"]), 1e-2 * 6 / 7, rtol=1e-5)


def test_non_finite_reward_is_unscorable_not_a_skip():
    state, step, *_ = tp.setup()
    b = tp.make_batch(0)
    b.rewards[5] = np.nan
    state, m = step(state, b)
    assert float(m["skipped"]) == 0 and float(m["reward/nonfinite"]) == 1
    assert trainer.params_finite(state.params)


def test_padding_rows_change_nothing():
    """A batch padded with a dummy group (sample_mask false) gives the same update as without it."""
    s1, step1, *_ = tp.setup()
    s2, step2, *_ = tp.setup()
    b = tp.make_batch(0, prompts=3)
    pad = tp.make_batch(7, prompts=1)
    padded = jax.tree.map(lambda x, y: np.concatenate([x, y]), b, pad)
    padded = padded.replace(sample_mask=np.arange(len(padded.rewards)) < len(b.rewards))
    s1, m1 = step1(s1, b)
    s2, m2 = step2(s2, padded)
    assert_trees_close(s2.params, s1.params, rtol=1e-5, atol=1e-7)
    for k in ("loss", "kl", "reward/mean", "completion_length/mean", "zero_std_groups", "frac_zero_std"):
        np.testing.assert_allclose(float(m2[k]), float(m1[k]), rtol=1e-5, atol=1e-7, err_msg=k)


def test_compile_count_stays_flat_after_the_first_step():
    state, step, *_ = tp.setup(micro_batches=2, num_iterations=2)
    batches = [tp.make_batch(i) for i in range(4)]
    with CompileCounter() as c:
        state, m = step(state, batches[0])
        float(m["loss"])
        first = c.count
        for b in batches[1:]:
            state, m = step(state, b)
            float(m["loss"])
    assert first >= 1 and c.count == first


def test_metrics_report_the_rollout_batch():
    state, step, *_ = tp.setup()
    b = tp.make_batch(0)
    _, m = step(state, b)
    lengths = b.completion_mask.sum(1)
    assert float(m["completion_length/mean"]) == pytest.approx(lengths.mean())
    assert (
        float(m["completion_length/max"]) == lengths.max()
        and float(m["completion_length/min"]) == lengths.min()
    )
    assert float(m["reward/mean"]) == pytest.approx(b.rewards.mean(), rel=1e-6)
    assert float(m["zero_std_groups"]) == 1 and float(m["frac_zero_std"]) == pytest.approx(1 / 4)
    assert float(m["tokens"]) == lengths.sum()
    assert all(v.dtype == jnp.float32 and v.shape == () for v in m.values())


def test_bad_batches_raise_clear_errors():
    state, step, *_ = tp.setup()
    b = tp.make_batch(0)
    with pytest.raises(TypeError, match="rewards"):
        trainer.TrainBatch(inputs=b.inputs, completion_mask=b.completion_mask)  # a typed batch cannot lack them
    with pytest.raises(ValueError, match="multiple of num_generations=4"):
        step(state, jax.tree.map(lambda v: v[:6], b))
    with pytest.raises(ValueError, match=r"leaf .*tokens.* leading dim must be the rows \(16\) or the prompts \(4\)"):
        step(state, b.replace(inputs={"tokens": b.inputs["tokens"][:3]}))


def test_schedule_shapes():
    s = trainer.make_schedule(1.0, 10)  # HF default: linear from lr to 0, no warm-up
    assert [float(s(t)) for t in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    s = trainer.make_schedule(1.0, 10, warmup_steps=2, decay="cosine", end_factor=0.1)
    assert [float(s(t)) for t in (0, 1, 2, 10)] == pytest.approx([0.0, 0.5, 1.0, 0.1])
    s = trainer.make_schedule(1.0, 10, warmup_steps=4, decay="constant")
    assert [float(s(t)) for t in (2, 4, 9)] == pytest.approx([0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="optimizer.decay='step'"):
        trainer.make_schedule(1.0, 10, decay="step")
    with pytest.raises(ValueError, match="optimizer: unknown key"):
        trainer.make_optimizer({"learning_rate": 1.0, "lr_decay": 2}, 10)
