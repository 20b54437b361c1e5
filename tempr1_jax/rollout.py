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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

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


def make_generate(graphdef: Any, cfg: SamplingConfig) -> Callable[[Any, Mapping[str, Any], Array], dict]:
    """A jitted ``generate(params, prompts, rng) -> dict`` (see the module docstring)."""
    eos = jnp.asarray(cfg.eos_ids, jnp.int32)

    @jax.jit
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

    return generate
