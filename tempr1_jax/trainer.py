"""The GRPO update: train state, optimizer, and one jitted ``train_step(state, batch) -> (state, metrics)``.

The trainer is generic over the policy. The model plugs in through one function (the seam):

    policy_fn(params, inputs) -> (logp [B, T] float32, entropy [B, T] float32)

``logp[b, t]`` is log pi(completion token t of row b | everything before it) and ``entropy[b, t]`` the entropy
of that next-token distribution (nats), both over the completion positions of the batch (the same [B, T]
grid as ``batch.completion_mask``). The distribution must be the one the rollout sampled from (logits
divided by the sampling temperature, as TRL does), so that ``old_logp`` and ``logp`` are comparable.
``inputs`` is the policy's own part of the (micro-)batch, ``TrainBatch.inputs``, any pytree of arrays.

The batch is a ``TrainBatch`` (B = prompts * G rows with each prompt's G completions contiguous; every leaf has
the rows or the prompts, B / G, as leading dim). One ``train_step`` call consumes one rollout batch and makes
``grpo.num_iterations`` (mu) optimizer updates on it, each accumulating gradients over ``micro_batches``
slices of the batch. An update whose loss or gradients are not finite is skipped: params and optimizer state
stay as they were, ``state.skipped`` counts it, and metrics["skipped"] reports it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tempr1_jax import grpo, sharding

DECAYS = ("linear", "cosine", "constant")  # the learning-rate schedule's decay after its warm-up

Params = Any
PolicyFn = Callable[[Params, Any], tuple[jax.Array, jax.Array]]


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs (ref_params aside, see checkpoint.py).

    step: int32 [], train_step calls so far (rollout batches consumed).
    params: the policy params.
    opt_state: the optax state.
    rng: uint32 [2], the loop's PRNG key (for the rollout sampler); train_step does not use it.
    skipped: int32 [], optimizer updates skipped for a non-finite loss or gradient.
    ref_params: frozen reference params, or None when grpo.beta == 0.
    """

    step: jax.Array
    params: Params
    opt_state: Any
    rng: jax.Array
    skipped: jax.Array
    ref_params: Params | None = None


@flax.struct.dataclass
class TrainBatch:
    """One rollout batch for ``train_step`` (B rows = prompts * G, each prompt's G completions contiguous).

    inputs: the policy's inputs (``policy_fn(params, inputs)``): any pytree whose leaves lead with the rows
      (B) or the prompts (B / G, e.g. a video shared by its G completions).
    completion_mask: bool [B, T], the completion tokens that count (EOS included, padding excluded).
    rewards: f32 [B], total reward per completion (non-finite: unscorable, advantage 0).
    sample_mask: bool [B] or None (all rows real): False for rows that only pad the batch to a static size.
    old_logp: f32 [B, T] or None: the rollout's log-probs of the sampled tokens. Required when
      grpo.num_iterations > 1; None means on-policy (ratio exactly 1, as TRL computes it for mu = 1).
    """

    inputs: Any
    completion_mask: jax.Array
    rewards: jax.Array
    sample_mask: jax.Array | None = None
    old_logp: jax.Array | None = None


# ----------------------------------------------------------------------------------------------------------
# Optimizer
# ----------------------------------------------------------------------------------------------------------


def param_paths(tree: Any) -> Any:
    """The same tree with each leaf replaced by its path, e.g. ``"vision/blocks/0/kernel"``."""

    def name(k: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    return jax.tree_util.tree_map_with_path(lambda p, _: "/".join(name(k) for k in p), tree)


def trainable_mask(params: Params, freeze: str = "") -> Any:
    """Bool tree: False for the params whose path fully matches the regex ``freeze`` ("" freezes nothing).

    A pattern that matches no param is an error (a typo would otherwise silently train everything).
    """
    paths = param_paths(params)
    if not freeze:
        return jax.tree.map(lambda _: True, paths)
    try:
        rx = re.compile(freeze)
    except re.error as e:
        raise ValueError(f"optimizer.freeze={freeze!r} is not a valid regex: {e}") from None
    mask = jax.tree.map(lambda p: rx.fullmatch(p) is None, paths)
    if all(jax.tree.leaves(mask)):
        some = ", ".join(jax.tree.leaves(paths)[:8])
        raise ValueError(f"optimizer.freeze={freeze!r} matches no param path (paths look like: {some}, ...)")
    return mask


def make_schedule(
    learning_rate: float,
    total_updates: int,
    *,
    warmup_steps: int = 0,
    decay: str = "linear",
    end_factor: float = 0.0,
) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_steps``, then "linear" / "cosine" decay to
    ``learning_rate * end_factor`` at ``total_updates``, or "constant". Steps count optimizer updates."""
    if decay not in DECAYS:
        raise ValueError(f"optimizer.decay={decay!r}: must be one of {DECAYS}")
    if total_updates < 1:
        raise ValueError(f"total optimizer updates {total_updates}: must be >= 1")
    if not 0 <= warmup_steps <= total_updates:
        raise ValueError(f"optimizer.warmup_steps={warmup_steps}: must be in [0, {total_updates}]")
    rest = max(total_updates - warmup_steps, 1)
    end = learning_rate * end_factor
    if decay == "linear":
        main = optax.linear_schedule(learning_rate, end, rest)
    elif decay == "cosine":
        main = optax.cosine_decay_schedule(learning_rate, rest, alpha=end_factor)
    else:
        main = optax.constant_schedule(learning_rate)
    if warmup_steps == 0:
        return main
    warm = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warm, main], [warmup_steps])


def make_optimizer(
    cfg: Mapping[str, Any], total_updates: int, trainable: Any | None = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with gradient clipping and the schedule of ``cfg`` (the config's ``optimizer`` block).

    ``trainable`` (from ``trainable_mask``) freezes the False leaves through optax masking: they get no
    update and no Adam moments (their optimizer state is empty).
    """
    known = {
        "learning_rate", "b1", "b2", "eps", "weight_decay", "max_grad_norm",
        "warmup_steps", "decay", "end_factor", "freeze",
    }  # fmt: skip
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"optimizer: unknown key(s) {unknown}; known keys: {sorted(known)}")
    schedule = make_schedule(
        float(cfg["learning_rate"]),
        total_updates,
        warmup_steps=int(cfg.get("warmup_steps", 0)),
        decay=str(cfg.get("decay", "linear")),
        end_factor=float(cfg.get("end_factor", 0.0)),
    )
    parts = []
    clip = cfg.get("max_grad_norm")
    if clip:
        parts.append(optax.clip_by_global_norm(float(clip)))
    parts.append(
        optax.adamw(
            schedule,
            b1=float(cfg.get("b1", 0.9)),
            b2=float(cfg.get("b2", 0.999)),
            eps=float(cfg.get("eps", 1e-8)),
            weight_decay=float(cfg.get("weight_decay", 0.0)),
        )
    )
    tx = optax.chain(*parts)
    if trainable is not None and not all(jax.tree.leaves(trainable)):
        labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable)
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule


# ----------------------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------------------


def init_state(
    params: Params, tx: optax.GradientTransformation, rng: jax.Array, *, beta: float
) -> TrainState:
    """A fresh state; the reference is a copy of the initial params, kept only when ``beta > 0``.

    Pure: jit it with ``out_shardings=state_shardings(...)`` so that everything is born sharded.
    """
    ref = jax.tree.map(jnp.copy, params) if beta > 0 else None
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jnp.asarray(rng, jnp.uint32),
        skipped=jnp.zeros((), jnp.int32),
        ref_params=ref,
    )


def state_specs(state_shape: TrainState, param_specs: Any, tx: optax.GradientTransformation) -> TrainState:
    """PartitionSpecs of a TrainState (from ``jax.eval_shape(init_state, ...)``) given the params' specs."""
    return TrainState(
        step=P(),
        params=param_specs,
        opt_state=sharding.optimizer_state_specs(tx, state_shape.opt_state, param_specs),
        rng=P(),
        skipped=P(),
        ref_params=None if state_shape.ref_params is None else param_specs,
    )


def state_shardings(
    mesh: jax.sharding.Mesh, state_shape: TrainState, param_specs: Any, tx: optax.GradientTransformation
) -> TrainState:
    """NamedShardings of a TrainState on ``mesh`` (``ref_params`` None when the state has no reference)."""
    shardings = sharding.named(mesh, state_specs(state_shape, param_specs, tx))
    return shardings if state_shape.ref_params is not None else shardings.replace(ref_params=None)


def create_state(
    params: Params,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    *,
    beta: float,
    mesh: jax.sharding.Mesh | None = None,
    param_specs: Any = None,
) -> tuple[TrainState, TrainState | None]:
    """Builds the state on the mesh (params donated). Returns (state, its shardings; None without mesh)."""
    fn = lambda p, r: init_state(p, tx, r, beta=beta)  # noqa: E731
    if mesh is None:
        return jax.jit(fn, donate_argnums=0)(params, rng), None
    shape = jax.eval_shape(fn, params, rng)
    if param_specs is None:
        param_specs = jax.tree.map(lambda _: P(), params)
    sharding.validate_specs(params, param_specs, mesh)
    shardings = state_shardings(mesh, shape, param_specs, tx)
    state = jax.jit(fn, donate_argnums=0, out_shardings=shardings)(params, rng)
    return state, shardings


def abstract_state(state_or_shape: TrainState, shardings: TrainState | None = None) -> TrainState:
    """ShapeDtypeStructs (with shardings when given) of a state, the restore target of checkpoint.py."""
    if shardings is None:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            state_or_shape,
        )
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_or_shape, shardings
    )


# ----------------------------------------------------------------------------------------------------------
# The step: small pure pieces, composed in one flat train_step
# ----------------------------------------------------------------------------------------------------------


def split_micro(x: jax.Array, n: int, shards: int) -> jax.Array:
    """[B, ...] -> [n, B / n, ...]: micro-batch k takes the k-th contiguous block of each batch shard's rows.

    Every micro-batch keeps rows on every device of a batch sharded in ``shards`` contiguous blocks, and
    when a block holds whole GRPO groups (``check_batch``), leaves with one row per prompt (leading dim
    B / G, e.g. a prompt's video shared by its G completions) split into the same groups as the rows.
    """
    rows = x.shape[0] // (shards * n)
    return x.reshape(shards, n, rows, *x.shape[1:]).swapaxes(0, 1).reshape(n, shards * rows, *x.shape[1:])


def check_batch(batch: TrainBatch, G: int, micro_batches: int, shards: int, num_iterations: int) -> None:
    """The batch's shapes against the step's settings (run at trace time: shapes are static).

    Raises ValueError naming the leaf or the setting that does not fit."""
    if num_iterations > 1 and batch.old_logp is None:
        raise ValueError("train_step: grpo.num_iterations > 1 needs batch.old_logp (the rollout's log-probs)")
    B = batch.rewards.shape[0]
    if B % (G * micro_batches):
        raise ValueError(
            f"train_step: batch of {B} rows is not a multiple of num_generations={G} x micro_batches={micro_batches}"
        )
    if (B // micro_batches) % shards:
        raise ValueError(
            f"train_step: micro-batches of {B // micro_batches} rows (batch {B} / micro_batches "
            f"{micro_batches}) do not split over the {shards} batch shards (mesh data x fsdp)"
        )
    per_prompt = False
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        if leaf.ndim == 0 or leaf.shape[0] not in (B, B // G):
            raise ValueError(
                f"train_step: batch leaf {jax.tree_util.keystr(path)} has shape {leaf.shape}: its leading "
                f"dim must be the rows ({B}) or the prompts ({B // G})"
            )
        per_prompt |= leaf.shape[0] != B
    if per_prompt and B % (G * micro_batches * shards):
        raise ValueError(
            f"train_step: the batch has per-prompt leaves, so each micro-batch ({micro_batches}) of each batch "
            f"shard ({shards}) must hold whole groups of num_generations={G}: rows must be a multiple of "
            f"{G * micro_batches * shards}, got {B}"
        )


def _tree_all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _is_trainable(t: Any) -> bool:
    return True if t is None else bool(t)


def frozen(params: Params, trainable: Any | None) -> Params:
    """``params`` with the gradient stopped through the frozen leaves (no backward pass through them)."""
    if trainable is None:
        return params
    return jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)


def accumulate_gradients(
    grad_fn: Callable[..., Any], params: Params, micro: Any, ref_logp: jax.Array | None, micro_batches: int,
    trainable: Any | None, param_sharding: Any | None,
) -> tuple[jax.Array, Any, Params]:
    """(loss, aux, float32 grads) summed over the micro-batches (leading dim of ``micro`` and ``ref_logp``).

    ``grad_fn(params, micro_batch, ref) -> ((loss, aux), grads)``. The accumulators are placed like the params;
    frozen leaves carry a scalar 0, in the result too (their gradient is zero and the frozen optimizer ignores
    it), so no full-size buffer is kept for a frozen tower or a LoRA run's base.
    """
    take = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
    mask = trainable if trainable is not None else jax.tree.map(lambda _: True, params)
    if micro_batches == 1:
        (loss, aux), g = grad_fn(params, take(micro, 0), None if ref_logp is None else ref_logp[0])
        return loss, aux, jax.tree.map(
            lambda x, t: x.astype(jnp.float32) if _is_trainable(t) else jnp.zeros((), jnp.float32), g, mask)
    aux_shape = jax.eval_shape(
        lambda p: grad_fn(p, take(micro, 0), None if ref_logp is None else ref_logp[0])[0][1], params
    )
    init_aux = {
        "sum": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape["sum"]),
        "mean": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape["mean"]),
        "max": jax.tree.map(lambda s: jnp.full(s.shape, -jnp.inf, s.dtype), aux_shape["max"]),
        "min": jax.tree.map(lambda s: jnp.full(s.shape, jnp.inf, s.dtype), aux_shape["min"]),
    }
    g0 = jax.tree.map(lambda p, t: jnp.zeros(p.shape if _is_trainable(t) else (), jnp.float32), params, mask)
    if param_sharding is not None:
        g0 = jax.tree.map(
            lambda z, s, t: jax.lax.with_sharding_constraint(z, s) if _is_trainable(t) else z,
            g0, param_sharding, mask,
        )  # fmt: skip

    def body(carry: Any, xs: Any) -> tuple[Any, None]:
        loss_acc, aux_acc, g_acc = carry
        mb, ref = xs
        (loss, aux), g = grad_fn(params, mb, ref)
        g_acc = jax.tree.map(lambda a, b, t: a + b.astype(jnp.float32) if _is_trainable(t) else a, g_acc, g, mask)
        return (loss_acc + loss, grpo.merge_aux(aux_acc, aux), g_acc), None

    (loss, aux, g), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), init_aux, g0), (micro, ref_logp))
    return loss, aux, g


def apply_if_finite(
    tx: optax.GradientTransformation, grads: Params, opt_state: Any, params: Params, loss: jax.Array,
    trainable: Any | None = None,
) -> tuple[Params, Any, jax.Array]:
    """One optax update, kept only when the loss and every gradient are finite: (params, opt_state, finite).
    Frozen leaves (``trainable`` False; their grads may be scalar zeros) are returned as they are."""
    finite = jnp.isfinite(loss) & _tree_all_finite(grads)
    updates, new_opt = tx.update(grads, opt_state, params)
    mask = trainable if trainable is not None else jax.tree.map(lambda _: True, params)
    params = jax.tree.map(
        lambda p, u, t: jnp.where(finite, optax.apply_updates(p, u), p) if _is_trainable(t) else p,
        params, updates, mask)  # fmt: skip
    opt_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_opt, opt_state)
    return params, opt_state, finite


def rollout_statistics(
    rewards: jax.Array, sample: jax.Array, adv: jax.Array, zero_std: jax.Array, mask: jax.Array, G: int
) -> dict[str, jax.Array]:
    """Metrics of the rollout batch itself (rewards [B], sample mask [B], advantages [B], token mask [B, T])."""
    ok = sample & jnp.isfinite(rewards)
    n_ok = jnp.maximum(ok.sum(), 1).astype(jnp.float32)
    r_mean = jnp.where(ok, rewards, 0.0).sum() / n_ok
    m = {"reward/mean": r_mean}
    m["reward/std"] = jnp.sqrt(jnp.where(ok, (rewards - r_mean) ** 2, 0.0).sum() / n_ok)
    m["reward/nonfinite"] = jnp.sum(sample & ~jnp.isfinite(rewards)).astype(jnp.float32)
    m["advantage/abs_mean"] = jnp.where(ok, jnp.abs(adv), 0.0).sum() / n_ok
    groups = jnp.maximum(sample.reshape(-1, G).any(-1).sum(), 1).astype(jnp.float32)
    m["zero_std_groups"] = zero_std.astype(jnp.float32)
    m["frac_zero_std"] = zero_std / groups
    lengths = mask.sum(-1).astype(jnp.float32)
    n_s = jnp.maximum(sample.sum(), 1).astype(jnp.float32)
    m["completion_length/mean"] = jnp.where(sample, lengths, 0.0).sum() / n_s
    m["completion_length/max"] = jnp.max(jnp.where(sample, lengths, 0.0))
    m["completion_length/min"] = jnp.where(sample.any(), jnp.min(jnp.where(sample, lengths, jnp.inf)), 0.0)
    return m


def train_step(
    state: TrainState,
    batch: TrainBatch,
    *,
    policy_fn: PolicyFn,
    tx: optax.GradientTransformation,
    cfg: grpo.GRPOConfig,
    micro_batches: int = 1,
    trainable: Any | None = None,
    schedule: optax.Schedule | None = None,
    state_sharding: TrainState | None = None,
    batch_sharding: NamedSharding | None = None,
    reference: Callable[[Params], Params] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One rollout batch -> ``grpo.num_iterations`` optimizer updates (pure; jit it with ``make_train_step``).
    ``reference(params)`` gives the KL reference's params from the policy's (LoRA: the adapters off, no second
    copy of the weights); None uses ``state.ref_params``.

    Metrics (float32 scalars, averaged over the mu updates): loss, pg_loss, kl_loss and kl (beta > 0),
    clip/low, clip/high, clip/region, ratio/mean, ratio/min, ratio/max, entropy, tokens, grad_norm, lr,
    skipped (this step's skipped updates), skipped_total, reward/mean, reward/std, reward/nonfinite,
    advantage/abs_mean, zero_std_groups, frac_zero_std, completion_length/mean, /min, /max.
    """
    mu, G = cfg.num_iterations, cfg.num_generations
    shards = 1 if batch_sharding is None else sharding.batch_shards(batch_sharding.mesh)
    check_batch(batch, G, micro_batches, shards, mu)
    if cfg.beta > 0 and state.ref_params is None and reference is None:
        raise ValueError("train_step: grpo.beta > 0 but the state has no ref_params")
    constrain = (lambda t: t) if batch_sharding is None else (
        lambda t: jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), t))  # fmt: skip
    rewards = jnp.asarray(batch.rewards, jnp.float32)
    sample = jnp.ones(rewards.shape, bool) if batch.sample_mask is None else batch.sample_mask.astype(bool)
    mask = batch.completion_mask.astype(bool) & sample[:, None]
    adv, zero_std = grpo.group_advantages(rewards, G, scale=cfg.advantage_scale, eps=cfg.advantage_eps,
                                          ddof=cfg.advantage_ddof, valid=sample)
    denom = grpo.loss_denominator(mask, cfg.aggregation, cfg.norm_constant)
    work = {"inputs": batch.inputs, "old_logp": batch.old_logp, "adv": adv, "mask": mask}
    micro = jax.tree.map(lambda x: split_micro(x, micro_batches, shards), work)

    ref_logp = None
    if cfg.beta > 0:  # the reference's log-probs, one micro-batch at a time
        ref_params = jax.lax.stop_gradient(state.ref_params if reference is None else reference(state.params))
        ref_body = lambda _, mb: (None, jax.lax.stop_gradient(  # noqa: E731
            policy_fn(ref_params, constrain(mb["inputs"]))[0].astype(jnp.float32)))
        _, ref_logp = jax.lax.scan(ref_body, None, micro)

    def micro_loss(params: Params, mb: Any, ref: jax.Array | None) -> tuple[jax.Array, Any]:
        logp, ent = policy_fn(frozen(params, trainable), constrain(mb["inputs"]))
        old = None if mb["old_logp"] is None else constrain(mb["old_logp"])
        return grpo.policy_loss(logp, mb["adv"], mb["mask"], cfg, old_logp=old, ref_logp=ref, entropy=ent,
                                denominator=denom)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
    param_sharding = None if state_sharding is None else state_sharding.params

    def update(carry: Any, i: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        params, opt_state, skipped = carry
        applied = state.step * mu + i - skipped  # optimizer updates applied so far (schedule position)
        loss, aux, grads = accumulate_gradients(grad_fn, params, micro, ref_logp, micro_batches, trainable,
                                                param_sharding)
        params, opt_state, finite = apply_if_finite(tx, grads, opt_state, params, loss, trainable)
        m = grpo.finalize_aux(aux)
        m["grad_norm"] = optax.tree.norm(grads)
        m["lr"] = jnp.asarray(schedule(applied) if schedule is not None else jnp.nan, jnp.float32)
        return (params, opt_state, skipped + jnp.where(finite, 0, 1).astype(jnp.int32)), m

    (params, opt_state, skipped), ms = jax.lax.scan(
        update, (state.params, state.opt_state, state.skipped), jnp.arange(mu, dtype=jnp.int32)
    )
    metrics = {k: jnp.mean(v.astype(jnp.float32)) for k, v in ms.items()}
    metrics |= rollout_statistics(rewards, sample, adv, zero_std, mask, G)
    metrics["skipped"] = (skipped - state.skipped).astype(jnp.float32)
    metrics["skipped_total"] = skipped.astype(jnp.float32)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, skipped=skipped), metrics


def make_train_step(
    policy_fn: PolicyFn,
    tx: optax.GradientTransformation,
    cfg: grpo.GRPOConfig,
    *,
    state_sharding: TrainState | None = None,
    batch_sharding: NamedSharding | None = None,
    **options: Any,
) -> Callable[[TrainState, TrainBatch], tuple[TrainState, dict[str, jax.Array]]]:
    """``train_step`` bound to its settings and jitted, state donated.

    Args:
      policy_fn: the model seam (module docstring).
      tx: from make_optimizer (with the same ``trainable`` mask).
      cfg: the GRPO objective.
      state_sharding, batch_sharding: NamedShardings (state_shardings(...), sharding.batch_sharding(mesh));
        given both, the step is compiled with them as in/out shardings; metrics come out replicated.
      options: ``train_step``'s other settings: ``micro_batches`` (gradient accumulation: each update sums
        gradients over this many slices of the batch, the loss normalized over the whole batch, so the result
        equals one big batch), ``trainable`` (bool tree from trainable_mask; frozen params get no gradient and
        no backward pass), ``schedule`` (the learning-rate schedule, only to report ``lr``), ``reference``
        (the KL reference's params as a function of the policy's, instead of ``state.ref_params``).
    """
    if options.get("micro_batches", 1) < 1:
        raise ValueError(f"micro_batches={options['micro_batches']}: must be >= 1")
    if (state_sharding is None) != (batch_sharding is None):
        raise ValueError("make_train_step: give both state_sharding and batch_sharding, or neither")
    step = functools.partial(train_step, policy_fn=policy_fn, tx=tx, cfg=cfg, state_sharding=state_sharding,
                             batch_sharding=batch_sharding, **options)
    if state_sharding is None:
        return jax.jit(step, donate_argnums=0)
    repl = sharding.replicated(batch_sharding.mesh)
    return jax.jit(step, in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, repl),
                   donate_argnums=0)


_all_finite = jax.jit(_tree_all_finite)


def params_finite(params: Params) -> bool:
    """True when every param is finite (a host bool; one small reduction on device)."""
    return bool(np.asarray(_all_finite(params)))
