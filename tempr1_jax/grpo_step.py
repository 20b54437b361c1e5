"""One GRPO step of a run (``python -m tempr1_jax.train``'s stage 9, without the bookkeeping around it).

    state, result = step_once(run, state, batch, data_seconds)

G completions per prompt of the batch from the current policy (``rollout.Sampler``), each scored on the host by
its own task's rewards, then the jitted update (``trainer.train_step`` on ``policy.assemble``'s batch). With
``grpo.dynamic_sampling`` the step draws more batches until it has enough informative groups
(``tempr1_jax.dynamic_sampling``). ``Run`` holds the parts of a run that the step and the loop use.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from data_pipeline import stream as data_stream
from tempr1_jax import (
    checkpoint,
    dynamic_sampling,
    evaluator,
    grpo,
    policy,
    rewards,
    rollout,
    setup,
    sharding,
    train_log,
    trainer,
)


@dataclasses.dataclass
class Run:
    """The parts of a run that the loop uses (built by ``train``'s stages)."""

    cfg: ml_collections.ConfigDict
    workdir: str
    mesh: jax.sharding.Mesh
    gcfg: grpo.GRPOConfig
    tokenizer: Any
    stream: data_stream.Stream
    sizer: policy.VisionSizer
    sampler: rollout.Sampler
    assemble: Any  # jitted policy.assemble
    train_step: Any  # jitted trainer.train_step
    evaluator: evaluator.Evaluator | None
    ckpt: checkpoint.Checkpointer
    total_steps: int
    flops_per_token: float
    preempt: checkpoint.PreemptionWatcher
    compiles: train_log.CompileCounter


@dataclasses.dataclass
class StepResult:
    """What one step hands to the logs: its metrics and the rollout's texts and rewards (this host's rows)."""

    metrics: dict[str, float]
    completions: list[str]
    samples: list[dict]
    rewards: dict[str, np.ndarray]


def rollout_draw(run: Run, params: Any, batch: data_stream.Batch, rng: jax.Array) -> dynamic_sampling.Draw:
    """G completions per prompt of ``batch`` from ``params`` (sampled with ``rng``) and their rewards on the
    host, each sample scored by its own task's rules."""
    G = run.gcfg.num_generations
    t0 = time.perf_counter()
    roll = run.sampler(params, batch, run.sizer, rng)
    t1 = time.perf_counter()
    samples = [s for s in data_stream.batch_samples(batch, valid_only=False) for _ in range(G)]
    completions = policy.decode_completions(run.tokenizer, roll.tokens, roll.completion_mask)
    rew = rewards.compute_rewards(completions, samples, **setup.reward_kwargs(run.cfg))
    # Dynamic sampling rebuilds the update's batch from host rows; otherwise the rollout's arrays stay on device.
    logp = sharding.host_rows(roll.device["logp"], run.sampler.batch_sh) if run.gcfg.dynamic_sampling else None
    device = None if run.gcfg.dynamic_sampling else (
        roll.prompts, {k: roll.device[k] for k in ("tokens", "completion_mask", "logp")})
    return dynamic_sampling.Draw(batch, roll.tokens, roll.completion_mask, logp, rew, completions, samples, device,
                                 {"time/rollout": t1 - t0, "time/reward": time.perf_counter() - t1})


_draw_keys = jax.jit(lambda key, n: tuple(jax.random.split(key, n)), static_argnums=1)


def step_once(run: Run, state: trainer.TrainState, batch: data_stream.Batch,
              data_seconds: float) -> tuple[trainer.TrainState, StepResult]:
    """One GRPO step on ``batch`` (drawn in ``data_seconds``): G completions per prompt from the current policy
    (with the state's RNG), rewards on the host, then the update. With ``grpo.dynamic_sampling`` the step draws
    more batches until it has enough informative groups (tempr1_jax.dynamic_sampling)."""
    G, gcfg = run.gcfg.num_generations, run.gcfg
    t0 = time.perf_counter()
    rng, sample_rng = jax.random.split(state.rng)
    state = state.replace(rng=rng)
    if gcfg.dynamic_sampling:
        keys = (sample_rng, *_draw_keys(sample_rng, gcfg.max_draws_per_step - 1))
        upd, draws, counts = dynamic_sampling.draw(
            batch, lambda: next(run.stream), lambda b, k: rollout_draw(run, state.params, b, keys[k]), G=G,
            max_draws=gcfg.max_draws_per_step, pad_id=run.sampler.pad_id)
        prompts = run.sampler.prompts(upd.batch, run.sizer)
        rollout_out = sharding.shard_batch({"tokens": upd.tokens, "completion_mask": upd.completion_mask,
                                            "logp": upd.logp}, run.sampler.batch_sh)
    else:
        upd = rollout_draw(run, state.params, batch, sample_rng)
        (prompts, rollout_out), draws, counts = upd.device, [upd], {}
    t2 = time.perf_counter()
    batch_sh = sharding.batch_sharding(run.mesh)
    total = sharding.shard_batch(upd.rewards["total"], batch_sh)  # the only host -> device copies of the update
    sample_mask = sharding.shard_batch(upd.batch.sample_mask, batch_sh)
    with jax.transfer_guard("disallow"):
        state, metrics = run.train_step(state, run.assemble(prompts, rollout_out, total, sample_mask))
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()} | counts
    t3 = time.perf_counter()
    # The logged rewards are those of every rollout of the step (kept or not).
    samples = [s for d in draws for s in d.samples]
    rew = {k: np.concatenate([d.rewards[k] for d in draws]) for k in upd.rewards}
    valid = np.concatenate([np.repeat(np.asarray(d.batch.sample_mask, bool), G) for d in draws])
    metrics |= train_log.reward_scalars(rew, [s["task"] for s in samples], valid)
    seen = lambda d: float(np.sum(d.batch.attention_mask)) * G + float(np.sum(d.completion_mask))  # noqa: E731
    sampled = sum(seen(d) for d in draws)  # the tokens of the step's rows [prompt, completion]
    # The model's work: a prompt runs once for its G completions, in the rollout's prefill and in the update's
    # forward + backward (+ the reference's forward).
    work = lambda d: float(np.sum(d.batch.attention_mask)) + float(np.sum(d.completion_mask))  # noqa: E731
    flops = run.flops_per_token * (sum(work(d) for d in draws) + work(upd) * (3 + (gcfg.beta > 0)))
    metrics |= train_log.throughput(sampled, t3 - t0 + data_seconds, flops=flops)
    metrics |= {"time/data": data_seconds, "time/rollout": sum(d.seconds["time/rollout"] for d in draws),
                "time/reward": sum(d.seconds["time/reward"] for d in draws), "time/update": t3 - t2}
    return state, StepResult(metrics, [c for d in draws for c in d.completions], samples, rew)

