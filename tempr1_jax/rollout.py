"""The rollout sampler: G completions per prompt on the policy's KV cache, one jitted function.

Each prompt (with its video) is prefilled once; the cache is then repeated for the prompt's G completions,
which are sampled together by single-token decode steps in a ``lax.while_loop`` that stops at
``max_new_tokens`` or as soon as every row has emitted an end-of-sequence token. Shapes are static: the
prompt bucket, G and max_new_tokens fix them, so a bucket compiles once.

    generate = make_generate(graphdef, SamplingConfig(group_size=8, max_new_tokens=1024, ...))
    out = generate(params, prompts, rng)   # prompts: policy.prompt_inputs(...) (numpy or device arrays)
    out["tokens"] int32 [Bp * G, T]; out["completion_mask"] bool [Bp * G, T] (up to and including EOS);
    out["logp"] f32 [Bp * G, T]: log-prob of each sampled token under the temperature-scaled distribution
    (what TRL calls the old log-probs); out["steps"]: decode steps taken.

``Sampler`` wraps it for the loop: a stream batch (this host's prompts) in, the completions on the mesh and on
this host out; ``agree_across_hosts`` makes every process build arrays of one global shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from data_pipeline.stream import Batch
from tempr1_jax import policy, sharding
from tempr1_jax.policy import vision_features_per_prompt

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How completions are drawn. temperature 0 is greedy decoding (argmax; log-probs at temperature 1).

    top_k 0 and top_p 1.0 disable those filters; they restrict which tokens can be drawn, while the returned
    log-probs stay those of the full temperature-scaled distribution (as TRL computes its old log-probs).
    """

    group_size: int = 8
    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.group_size < 1 or self.max_new_tokens < 1:
            raise ValueError(f"group_size {self.group_size} and max_new_tokens {self.max_new_tokens} must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {self.temperature}, "
                             f"{self.top_p}, {self.top_k}")
        if not self.eos_ids:
            raise ValueError("eos_ids is empty: give the tokenizer's end-of-sequence ids")


def sample_token(logits: Array, key: Array, cfg: SamplingConfig) -> tuple[Array, Array]:
    """logits f32 [B, V] -> (token int32 [B], its log-prob f32 [B] under softmax(logits / temperature))."""
    if cfg.temperature == 0:
        token = jnp.argmax(logits, axis=-1)
        logp = jax.nn.log_softmax(logits, axis=-1)
    else:
        scaled = logits / cfg.temperature
        logp = jax.nn.log_softmax(scaled, axis=-1)
        filtered = scaled
        if cfg.top_k:
            kth = jax.lax.top_k(scaled, min(cfg.top_k, scaled.shape[-1]))[0][:, -1:]
            filtered = jnp.where(scaled < kth, -jnp.inf, filtered)
        if cfg.top_p < 1.0:
            order = jnp.argsort(-filtered, axis=-1)
            sorted_logits = jnp.take_along_axis(filtered, order, axis=-1)
            probs = jax.nn.softmax(sorted_logits, axis=-1)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            keep_sorted = jnp.cumsum(probs, axis=-1) - probs < cfg.top_p
            keep = jnp.zeros_like(keep_sorted).at[jnp.arange(order.shape[0])[:, None], order].set(keep_sorted)
            filtered = jnp.where(keep, filtered, -jnp.inf)
        token = jax.random.categorical(key, filtered, axis=-1)
    token = token.astype(jnp.int32)
    return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def make_generate(graphdef: Any, cfg: SamplingConfig,
                  name: str = "generate") -> Callable[[Any, Mapping[str, Any], Array], dict]:
    """A jitted ``generate(params, prompts, rng) -> dict`` (see the module docstring), compiled as program
    ``jit(<name>)`` (the name compile counts and XLA dumps show: the trainer's and the evaluator's differ)."""
    eos = jnp.asarray(cfg.eos_ids, jnp.int32)

    def generate(params: Any, prompts: Mapping[str, Any], rng: Array) -> dict[str, Array]:
        model = nnx.merge(graphdef, params)
        ids = prompts["input_ids"]
        n_prompts, length = ids.shape
        g, steps = cfg.group_size, cfg.max_new_tokens
        feats = vision_features_per_prompt(model, prompts["vision"])
        cache = model.init_cache(n_prompts, length + steps)
        logits, cache = model.prefill(ids, jnp.swapaxes(prompts["position_ids"], 0, 1), prompts["attention_mask"],
                                      cache, vision_features=feats)
        cache = cache.repeat_rows(g)
        logits = jnp.repeat(logits, g, axis=0)
        rows = n_prompts * g

        def cond(state: tuple) -> Array:
            t, _, _, _, _, done, _ = state
            return (t < steps) & ~jnp.all(done)

        def body(state: tuple) -> tuple:
            t, logits, cache, tokens, logp, done, key = state
            key, sub = jax.random.split(key)
            token, lp = sample_token(logits, sub, cfg)
            token = jnp.where(done, cfg.pad_id, token)
            tokens = jax.lax.dynamic_update_slice_in_dim(tokens, token[:, None], t, axis=1)
            logp = jax.lax.dynamic_update_slice_in_dim(logp, jnp.where(done, 0.0, lp)[:, None], t, axis=1)
            logits, cache = model.decode_step(token, cache, token_valid=~done)
            return t + 1, logits, cache, tokens, logp, done | jnp.isin(token, eos), key

        init = (jnp.zeros((), jnp.int32), logits, cache, jnp.full((rows, steps), cfg.pad_id, jnp.int32),
                jnp.zeros((rows, steps), jnp.float32), jnp.zeros((rows,), bool), rng)
        t, _, _, tokens, logp, _, _ = jax.lax.while_loop(cond, body, init)
        is_eos = jnp.isin(tokens, eos)
        after_eos = (jnp.cumsum(is_eos, axis=1) - is_eos) > 0
        mask = (jnp.arange(steps)[None, :] < t) & ~after_eos
        return {"tokens": tokens, "completion_mask": mask, "logp": jnp.where(mask, logp, 0.0), "steps": t}

    generate.__name__ = generate.__qualname__ = name
    return jax.jit(generate)


# ----------------------------------------------------------------------------------------------------------
# The host side: stream batches in, completions out
# ----------------------------------------------------------------------------------------------------------


def sampling_config(r: Any, group_size: int, eos_ids: Any, tokenizer: Any, *, temperature: float | None = None,
                    max_new_tokens: int | None = None) -> SamplingConfig:
    """The SamplingConfig of a ``config.rollout`` block: EOS ids of the model config and the tokenizer; pad id
    the tokenizer's (its EOS when it has none)."""
    eos = {int(i) for i in eos_ids} | {int(tokenizer.eos_token_id)}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return SamplingConfig(
        group_size=group_size,
        max_new_tokens=int(max_new_tokens or r.max_new_tokens),
        temperature=float(r.temperature if temperature is None else temperature),
        top_p=float(r.top_p),
        top_k=int(r.top_k),
        eos_ids=tuple(sorted(eos)),
        pad_id=int(pad),
    )


def agree_across_hosts(batch: Batch, sizer: policy.VisionSizer, pad_id: int) -> Batch:
    """On several processes, pad this host's batch to the largest prompt / vision bucket of all hosts and grow
    the vision sizer with every host's videos, so that all hosts build arrays of one global shape."""
    if jax.process_count() == 1:
        return batch
    ids, pix = batch.input_ids, batch.pixel_values
    dims = np.asarray(multihost_utils.process_allgather(np.array([ids.shape[1], pix.shape[1]], np.int32)))
    L, N = (int(v) for v in dims.reshape(-1, 2).max(0))
    if L > ids.shape[1]:
        extra = L - ids.shape[1]
        batch = batch._replace(input_ids=np.pad(ids, ((0, 0), (extra, 0)), constant_values=pad_id),
                               attention_mask=np.pad(batch.attention_mask, ((0, 0), (extra, 0))))
    if N > pix.shape[1]:
        batch = batch._replace(pixel_values=np.pad(pix, ((0, 0), (0, N - pix.shape[1]), (0, 0))))
    grids = np.asarray(multihost_utils.process_allgather(np.asarray(batch.grid_thw, np.int32)))
    grids = grids.reshape(-1, 3)
    sizer((batch.input_ids.shape, batch.pixel_values.shape), grids[grids.prod(1) > 0])
    return batch


@dataclasses.dataclass
class Rollout:
    """One batch's completions: on the mesh (for the update) and this host's rows (for decoding)."""

    prompts: dict  # the prompt inputs on the mesh (per-prompt rows)
    device: dict  # generate's output on the mesh: tokens, completion_mask, logp [Bp * G, T]
    tokens: np.ndarray  # this host's completion rows [b * G, T]
    completion_mask: np.ndarray


class Sampler:
    """Stream batch (this host's prompts) -> G completions per prompt from ``params`` (jitted, on the mesh)."""

    def __init__(self, graphdef: Any, cfg: Any, mesh: jax.sharding.Mesh, scfg: SamplingConfig,
                 name: str = "generate") -> None:
        self.cfg, self.scfg, self.pad_id = cfg, scfg, scfg.pad_id
        self.batch_sh = sharding.batch_sharding(mesh)
        self.generate = make_generate(graphdef, scfg, name)

    def prompts(self, batch: Batch, sizer: policy.VisionSizer) -> dict:
        """The prompt inputs of a stream batch on the mesh (one global shape across hosts)."""
        batch = agree_across_hosts(batch, sizer, self.pad_id)
        return sharding.shard_batch(policy.prompt_inputs(self.cfg, batch, sizer), self.batch_sh)

    def __call__(self, params: Any, batch: Batch, sizer: policy.VisionSizer, rng: jax.Array) -> Rollout:
        prompts = self.prompts(batch, sizer)
        with jax.transfer_guard("disallow"):
            out = self.generate(params, prompts, rng)
        tokens = sharding.host_rows(out["tokens"], self.batch_sh)
        mask = sharding.host_rows(out["completion_mask"], self.batch_sh)
        return Rollout(prompts, out, tokens, mask)
