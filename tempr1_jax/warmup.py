"""The optional supervised warm-up before GRPO (``config.warmup``; the demo uses it, TempR1 has none).

``warmup.steps`` AdamW steps of next-token cross-entropy on target completions written in each task's answer
format, on the training stream (another seed): the ground truth (``warmup.targets="truth"``); loose ground
truth (``"loose"``: as imperfect annotations are, each boundary 1 s too wide with probability
``warmup.widen_prob`` and each instance of a tal / vhd answer missing with probability ``warmup.drop_prob``,
so that GRPO's exact rewards have boundaries and counts to fix); or random intervals in the same format
(``"random"``: the format only, so that any localization skill comes from GRPO).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data_pipeline import prompts as data_prompts
from data_pipeline import stream as data_stream
from data_pipeline.schema import OPTION_LETTERS
from tempr1_jax import policy, rollout, setup, sharding
from tempr1_jax.models.qwen25vl import config as qconfig

log = logging.getLogger(__name__)

TARGETS = ("truth", "loose", "random")  # config.warmup.targets


def loose_segments(sample: Mapping[str, Any], rng: np.random.Generator, widen: float, drop: float) -> list:
    """The sample's segments as a loose annotator marks them: each start 1 s early and each end 1 s late with
    probability ``widen`` (within [0, duration]); for tal and vhd each instance missing with probability
    ``drop`` (vhd keeps at least one)."""
    d = float(sample["duration"])
    segments = []
    for a, b in sample["segments"]:
        a = max(0.0, a - 1.0) if rng.random() < widen else float(a)
        b = min(d, b + 1.0) if rng.random() < widen else float(b)
        segments.append([a, b])
    if sample["task"] in ("tal", "vhd") and drop > 0:
        kept = [s for s in segments if rng.random() >= drop]
        segments = kept if kept or sample["task"] == "tal" else segments[:1]
    return segments


def warmup_target(sample: Mapping[str, Any], mode: str, rng: np.random.Generator, *, widen: float = 0.6,
                  drop: float = 0.3) -> str:
    """The warm-up's target completion of ``sample`` (``warmup.targets``).

    "truth": the ground truth (``data_pipeline.prompts.target_completion``). "loose": the ground truth with the
    boundaries and counts of ``loose_segments`` (widen, drop: ``warmup.widen_prob``, ``warmup.drop_prob``).
    "random": the same format with each segment replaced by a random interval [a, b], a < b, drawn uniformly
    from the pairs of whole seconds in [0, duration] (tenths of the duration for videos shorter than 1 s), and
    a random gvqa option letter: the warm-up then teaches the answer format only, and any localization above
    chance must come from GRPO.
    """
    if mode == "truth":
        return data_prompts.target_completion(sample)
    if mode == "loose":
        return data_prompts.target_completion(dict(sample, segments=loose_segments(sample, rng, widen, drop)))
    if mode != "random":
        raise ValueError(f"config.warmup.targets={mode!r}: must be one of {TARGETS}")
    d = float(sample["duration"])
    if d >= 1:
        grid = np.arange(0, math.floor(d) + 1, dtype=np.float64)
    else:
        grid = np.unique(np.round(np.linspace(0, d, 11), 2))
    if len(grid) < 2:
        grid = np.array([0.0, d])
    segments = []
    for _ in sample["segments"]:
        a, b = np.sort(rng.choice(grid, size=2, replace=False))
        segments.append([float(a), float(b)])
    fake = dict(sample, segments=segments)
    if sample["task"] == "gvqa":
        fake["answer"] = OPTION_LETTERS[int(rng.integers(len(sample["options"])))]
    return data_prompts.target_completion(fake)


def target_rows(batch: data_stream.Batch, tokenizer: Any, mode: str, rng: np.random.Generator,
                width: int, pad: int, **noise: float) -> tuple[np.ndarray, np.ndarray]:
    """The batch's target completions (``warmup_target``; noise: its widen / drop) as token rows: (ids int32
    [B, width] padded with ``pad``, mask bool [B, width]: the target tokens and EOS of the real rows)."""
    eos = int(tokenizer.eos_token_id)
    targets = np.full((len(batch.sample_json), width), pad, np.int32)
    mask = np.zeros_like(targets, bool)
    for b, sample in enumerate(data_stream.batch_samples(batch, valid_only=False)):
        ids = [*tokenizer(warmup_target(sample, mode, rng, **noise), add_special_tokens=False)["input_ids"], eos]
        if len(ids) > width:
            raise ValueError(f"warm-up target of sample {sample['id']!r} has {len(ids)} tokens > "
                             f"rollout.max_new_tokens={width}")
        targets[b, : len(ids)] = ids
        mask[b, : len(ids)] = True
    return targets, mask & np.asarray(batch.sample_mask, bool)[:, None]


def make_step(graphdef: Any, tx: optax.GradientTransformation, chunk: int, param_sh: Any, opt_sh: Any,
              mesh: jax.sharding.Mesh) -> Any:
    """The jitted warm-up step ``(params, opt_state, batch) -> (params, opt_state, loss)``: mean next-token
    cross-entropy over the target tokens of a ``trainer.TrainBatch``."""
    policy_fn = policy.make_policy_fn(graphdef, temperature=1.0, chunk_size=chunk)

    def loss_fn(p: Any, batch: Any) -> jax.Array:
        logp, _ = policy_fn(p, batch.inputs)
        mask = batch.completion_mask
        return -jnp.sum(jnp.where(mask, logp, 0.0)) / jnp.maximum(mask.sum(), 1)

    def step(p: Any, o: Any, batch: Any) -> tuple[Any, Any, jax.Array]:
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        updates, o = tx.update(g, o, p)
        return optax.apply_updates(p, updates), o, loss

    return jax.jit(step, donate_argnums=(0, 1), out_shardings=(param_sh, opt_sh, sharding.replicated(mesh)))


def supervised_warmup(cfg: ml_collections.ConfigDict, graphdef: Any, params: Any, specs: Any,
                      mcfg: qconfig.Qwen25VLConfig, tokenizer: Any, mesh: jax.sharding.Mesh) -> Any:
    """``warmup.steps`` steps on the training stream (seed ``data.seed + 1``); returns the params."""
    w = cfg.warmup
    rng = np.random.default_rng(int(cfg.seed) + 3)
    noise = {"widen": float(w.get("widen_prob", 0.0)), "drop": float(w.get("drop_prob", 0.0))}
    batch_sh = sharding.batch_sharding(mesh)
    scfg = ml_collections.ConfigDict(cfg.data.to_dict())
    scfg.seed = int(cfg.data.seed) + 1
    scfg.task_weights = ml_collections.ConfigDict(w.task_weights.to_dict() if "task_weights" in w else {})
    stream = data_stream.make_stream(setup.host_stream_config(scfg, int(w.batch_size)),
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     tokenizer=tokenizer)
    T = int(cfg.rollout.max_new_tokens)
    pad = rollout.sampling_config(cfg.rollout, 1, mcfg.eos_token_id, tokenizer).pad_id
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(float(w.learning_rate)))
    param_sh = sharding.named(mesh, specs)
    opt_sh = sharding.named(mesh, sharding.optimizer_state_specs(tx, jax.eval_shape(tx.init, params), specs))
    opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
    step = make_step(graphdef, tx, cfg.model.logprob_chunk, param_sh, opt_sh, mesh)
    sizer = policy.stream_sizer(mcfg, stream, cfg.model.vision_multiples)
    assemble = jax.jit(lambda pr, r, m: policy.assemble(pr, r, jnp.zeros(m.shape[0]), m, pad_id=pad),
                       out_shardings=batch_sh)
    log.info("supervised warm-up: %d steps of %d prompts", w.steps, w.batch_size)
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        for i in range(int(w.steps)):
            batch = rollout.agree_across_hosts(next(stream), sizer, pad)
            targets, tmask = target_rows(batch, tokenizer, w.targets, rng, T, pad, **noise)
            prompts = sharding.shard_batch(policy.prompt_inputs(mcfg, batch, sizer), batch_sh)
            fake = sharding.shard_batch({"tokens": targets, "completion_mask": tmask,
                                         "logp": np.zeros(targets.shape, np.float32)}, batch_sh)
            sample_mask = sharding.shard_batch(batch.sample_mask, batch_sh)
            params, opt_state, loss = step(params, opt_state, assemble(prompts, fake, sample_mask))
            if (i + 1) % max(1, int(w.steps) // 10) == 0 or i + 1 == w.steps:
                log.info("warm-up step %d/%d: loss %.4f (%.1f s)", i + 1, w.steps, float(jax.device_get(loss)),
                         time.perf_counter() - t0)
    stream.close()
    return params
