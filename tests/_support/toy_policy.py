"""A tiny causal LM standing in for the policy in trainer tests (not a test module).

Embedding -> a "vision" projection (a subtree the tests freeze) -> causal running mean -> residual MLP ->
logits head. It implements the trainer's seam ``policy_fn(params, batch) -> (logp [B, L], entropy [B, L])``
and comes with PartitionSpecs over the (data, fsdp, tp) mesh, and deterministic toy rollout batches.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

VOCAB, DIM, HIDDEN = 32, 16, 32
PROMPT_LEN, COMPLETION_LEN = 4, 6
G = 4  # completions per prompt in the toy batches

SPECS = {
    "embed": P("fsdp", "tp"),
    "vision": {"proj": P("fsdp", None)},
    "mlp": {"w1": P("fsdp", "tp"), "w2": P("tp", "fsdp")},
    "head": P(None, "tp"),
}


def init_params(seed: int = 0) -> dict:
    return jax.tree.map(jnp.copy, _init_params(seed))


@functools.cache
def _init_params(seed: int) -> dict:
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    n = lambda key, shape, s: (s * jax.random.normal(key, shape)).astype(jnp.float32)  # noqa: E731
    return {
        "embed": n(k[0], (VOCAB, DIM), 1.0),
        "vision": {"proj": jnp.eye(DIM, dtype=jnp.float32) + n(k[1], (DIM, DIM), 0.1)},
        "mlp": {"w1": n(k[2], (DIM, HIDDEN), 0.3), "w2": n(k[3], (HIDDEN, DIM), 0.3)},
        "head": n(k[4], (DIM, VOCAB), 0.5),
    }


def policy_fn(params: dict, inputs: dict) -> tuple[jax.Array, jax.Array]:
    tokens = inputs["tokens"]  # [B, PROMPT_LEN + COMPLETION_LEN]
    x = params["embed"][tokens] @ params["vision"]["proj"]
    steps = jnp.arange(1, tokens.shape[1] + 1, dtype=jnp.float32)[None, :, None]
    c = jnp.cumsum(x, axis=1) / steps
    h = c + jnp.tanh(c @ params["mlp"]["w1"]) @ params["mlp"]["w2"]
    logits = h @ params["head"]
    # Position t predicts token t + 1: the completion tokens are predicted from PROMPT_LEN - 1 on.
    logits = logits[:, PROMPT_LEN - 1 : -1]
    logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    targets = tokens[:, PROMPT_LEN:]
    logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return logp, entropy


jit_policy = jax.jit(policy_fn)


def make_batch(step: int, prompts: int = 4, params: dict | None = None, seed: int = 0):
    """A deterministic rollout batch for ``step``: B = prompts * G rows, groups contiguous.

    Rewards are in [0, 3] with the first group constant (a zero-std group). ``old_logp`` is the policy's own
    log-prob under ``params`` (default: init_params(seed)) plus a little noise, as a sampler would give.
    """
    rng = np.random.default_rng([seed, step])
    B = prompts * G
    tokens = rng.integers(0, VOCAB, size=(B, PROMPT_LEN + COMPLETION_LEN)).astype(np.int32)
    lengths = rng.integers(1, COMPLETION_LEN + 1, size=B)
    mask = np.arange(COMPLETION_LEN)[None, :] < lengths[:, None]
    rewards = rng.uniform(0, 3, size=B).astype(np.float32)
    rewards[:G] = 1.5
    p = init_params(seed) if params is None else params
    logp, _ = jit_policy(p, {"tokens": tokens})
    old = np.asarray(logp) + rng.normal(0, 0.05, size=logp.shape).astype(np.float32)
    old = np.where(mask, old, np.float32(-1e30))  # garbage in the padding must not matter
    from tempr1_jax.trainer import TrainBatch

    return TrainBatch(
        inputs={"tokens": tokens},
        completion_mask=mask,
        rewards=rewards,
        sample_mask=np.ones(B, bool),
        old_logp=old.astype(np.float32),
    )


@functools.cache
def _machinery(beta, micro_batches, num_iterations, freeze, lr, total_steps, mesh, seed):
    from tempr1_jax import grpo, sharding, trainer

    params = init_params(seed)
    trainable = trainer.trainable_mask(params, freeze)
    cfg = grpo.GRPOConfig(num_generations=G, beta=beta, num_iterations=num_iterations, eps_high=0.28)
    opt = {"learning_rate": lr, "max_grad_norm": 1.0, "warmup_steps": 1, "weight_decay": 0.01}
    tx, schedule = trainer.make_optimizer(opt, total_steps * num_iterations, trainable)
    init = lambda p, r: trainer.init_state(p, tx, r, beta=beta)  # noqa: E731
    if mesh is None:
        shardings, bsh = None, None
        init_jit = jax.jit(init)
    else:
        shardings = trainer.state_shardings(
            mesh, jax.eval_shape(init, params, jax.random.PRNGKey(seed)), SPECS, tx
        )
        bsh = sharding.batch_sharding(mesh)
        init_jit = jax.jit(init, out_shardings=shardings)
    step = trainer.make_train_step(
        policy_fn,
        tx,
        cfg,
        micro_batches=micro_batches,
        trainable=trainable,
        schedule=schedule,
        state_sharding=shardings,
        batch_sharding=bsh,
    )
    return init_jit, step, shardings, bsh, trainable


def setup(
    *,
    beta: float = 0.04,
    micro_batches: int = 1,
    num_iterations: int = 1,
    freeze: str = "",
    lr: float = 1e-2,
    total_steps: int = 8,
    mesh=None,
    seed: int = 0,
):
    """(fresh state, train_step, state_shardings, batch_sharding, trainable) for the toy policy.

    The jitted functions are cached per configuration, so tests share their compilations.
    """
    init, step, shardings, bsh, trainable = _machinery(
        beta, micro_batches, num_iterations, freeze, lr, total_steps, mesh, seed
    )
    state = init(init_params(seed), jax.random.PRNGKey(seed))
    return state, step, shardings, bsh, trainable


def to_host(tree):
    """A pytree of jax arrays -> numpy (fully replicated / addressable arrays only)."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
