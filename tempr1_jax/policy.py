"""The Qwen2.5-VL policy as GRPO sees it: stream batches -> model inputs, the trainer's log-prob seam, and the
training batch assembled from a rollout.

    prompt_inputs(cfg, stream_batch, sizer)        host (numpy): ids, mask, (B, 3, L) M-RoPE ids, per-prompt
                                                   packed video
    assemble(prompts, rollout, rewards, ...)       device (jit): prompt + completion rows, a trainer.TrainBatch
    make_policy_fn(graphdef, ...)                  device (jit): policy_fn(params, inputs) -> (logp, entropy)

Each prompt's video is packed on its own at sizes shared by the batch, so video leaves have one row per prompt
(leading dim B / G): the vision tower runs once per prompt, in the rollout's prefill and in the update, and
its features are repeated for the prompt's G completions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipeline.stream import Batch, Stream
from tempr1_jax.models.qwen25vl import rope
from tempr1_jax.models.qwen25vl.config import Qwen25VLConfig
from tempr1_jax.models.qwen25vl.model import token_logprobs_and_entropy
from tempr1_jax.trainer import TrainBatch

Array = jax.Array


class VisionSizer:
    """Static per-prompt vision sizes, grown to the largest need seen per stream bucket (a high-water mark).

    A bucket compiles again only when a video needs more room than any before it in that bucket, which stops
    after the first few batches of a run; sizes never shrink, so there is no back-and-forth.
    """

    def __init__(self, cfg: Qwen25VLConfig, **multiples: int) -> None:
        """multiples: ``rope.bucket_vision_sizes`` keywords (patch_multiple, block_multiple, frame_multiple);
        its defaults suit real videos, small ones (tiny demo videos) waste less padding with smaller ones."""
        self.cfg = cfg
        self.multiples = multiples
        self.sizes: dict[Any, rope.VisionSizes] = {}

    def __call__(self, key: Any, grids: np.ndarray) -> rope.VisionSizes:
        need = [rope.required_vision_sizes(self.cfg.vision, [tuple(g)]) for g in grids]
        need.append(self.sizes.get(key, rope.required_vision_sizes(self.cfg.vision, [])))
        grown = rope.bucket_vision_sizes(
            rope.VisionSizes(*(max(getattr(n, f.name) for n in need) for f in dataclasses.fields(need[0]))),
            **self.multiples,
        )
        self.sizes[key] = grown
        return grown

    def state(self) -> list:
        """The high-water marks as JSON (saved with the data position: a resumed run keeps the shapes, hence the
        compiled programs and the numerics, of the run it continues)."""
        return [[[list(s) for s in key], dataclasses.asdict(v)] for key, v in self.sizes.items()]

    def restore(self, saved: list) -> None:
        for key, v in saved:
            self.sizes[tuple(tuple(s) for s in key)] = rope.VisionSizes(**v)


def stream_sizer(cfg: Qwen25VLConfig, stream: Stream, multiples: tuple[int, int, int]) -> VisionSizer:
    """The vision sizer of a stream, grown up front: for every batch shape the stream can produce, to the largest
    video that can be in such a batch (from the stream's index, nothing decoded), so that no batch ever makes
    the packed vision shapes grow, hence no recompilation after the first step. multiples: (patches, blocks,
    frame slots), ``rope.bucket_vision_sizes``'s multiples (``config.model.vision_multiples``)."""
    patches, blocks, frames = (int(v) for v in multiples)
    sizer = VisionSizer(cfg, patch_multiple=patches, block_multiple=blocks, frame_multiple=frames)
    v = cfg.vision
    grids = np.stack([-(-stream.n_frames // v.temporal_patch_size), stream.target_hw[:, 0] // v.patch_size,
                      stream.target_hw[:, 1] // v.patch_size], axis=1).astype(np.int64)
    for shape in stream.bucket_shapes():
        (b, L), (_, N, d) = shape["input_ids"], shape["pixel_values"]
        fits = (stream.n_patches <= N) & (stream.prompt_len <= L)
        if fits.any():
            sizer(((int(b), int(L)), (int(b), int(N), int(d))), np.unique(grids[fits], axis=0))
    return sizer


def prompt_inputs(cfg: Qwen25VLConfig, batch: Batch, sizer: VisionSizer) -> dict[str, Any]:
    """A data_pipeline.stream batch -> the model's prompt inputs (numpy).

    Returns input_ids / attention_mask int32 [Bp, L] (left padded), position_ids int32 [Bp, 3, L] (M-RoPE,
    original Qwen rule), and vision: ``rope.pack_vision`` tables with a leading prompt dim (one packed video per
    prompt, sizes shared by the batch; a row without video gets an empty layout).
    """
    ids = np.asarray(batch.input_ids, np.int32)
    mask = np.asarray(batch.attention_mask, np.int32)
    grids = np.asarray(batch.grid_thw, np.int64).reshape(-1, 3)
    spg = np.asarray(batch.second_per_grid_ts, np.float64).reshape(-1)
    pixels = np.asarray(batch.pixel_values, np.float32)
    has_video = grids.prod(axis=1) > 0
    pos, _ = rope.get_rope_index(cfg, ids, mask, video_grid_thw=grids[has_video],
                                 second_per_grid_ts=spg[has_video])
    sizes = sizer((ids.shape, pixels.shape), grids[has_video])
    packed = [rope.pack_vision(cfg, [(pixels[b, : int(np.prod(g))], g)] if has_video[b] else [], sizes)
              for b, g in enumerate(grids)]
    vision = {k: np.stack([p[k] for p in packed]) for k in packed[0]}
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos.transpose(1, 0, 2), "vision": vision}


def vision_features_per_prompt(model: Any, vision: Mapping[str, Array]) -> Array:
    """Per-prompt packed videos [Bp, ...] -> merged features [Bp, F, D], the tower vmapped over prompts."""
    return jax.vmap(model.vision_features)(dict(vision))


def assemble(prompts: Mapping[str, Any], rollout: Mapping[str, Array], rewards: Array,
             sample_mask: Array | None = None, *, pad_id: int, with_old_logp: bool = True) -> TrainBatch:
    """Prompt rows (Bp) + their G completions each -> the train_step batch (B = Bp * G rows, jit-compatible).

    The prompts stay one row each (the policy computes a prompt once for its G completions: ``grouped``).
    Row b's completion token t comes after its prompt's L tokens with M-RoPE position
    max(prompt positions) + 1 + t on all three axes (text after the prompt), exactly where the rollout's KV
    cache put it. The policy's inputs: prompt_ids, prompt_mask [Bp, L]; prompt_positions [Bp, 3, L]; vision
    (per prompt); completion_ids (the tokens, the pad id past EOS), completion_attention [B, T];
    completion_positions [B, 3, T]; completion_tokens [B, T] (the targets). ``old_logp`` is the rollout's
    log-probs with ``with_old_logp``, else None (on-policy).
    """
    tokens, cmask = rollout["tokens"], rollout["completion_mask"]
    g = tokens.shape[0] // prompts["input_ids"].shape[0]
    rep = lambda x: jnp.repeat(jnp.asarray(x), g, axis=0)  # noqa: E731
    t = tokens.shape[1]
    start = rep(jnp.max(jnp.asarray(prompts["position_ids"]), axis=(1, 2)) + 1)
    cpos = jnp.broadcast_to((start[:, None] + jnp.arange(t))[:, None, :], (tokens.shape[0], 3, t))
    inputs = {
        "prompt_ids": jnp.asarray(prompts["input_ids"]),
        "prompt_mask": jnp.asarray(prompts["attention_mask"]),
        "prompt_positions": jnp.asarray(prompts["position_ids"]),
        "vision": prompts["vision"],
        "completion_ids": jnp.where(cmask, tokens, pad_id),
        "completion_attention": cmask.astype(jnp.int32),
        "completion_positions": cpos.astype(jnp.asarray(prompts["position_ids"]).dtype),
        "completion_tokens": tokens,
    }
    return TrainBatch(
        inputs=inputs,
        completion_mask=cmask,
        rewards=jnp.asarray(rewards, jnp.float32),
        sample_mask=jnp.ones(tokens.shape[0], bool) if sample_mask is None else rep(sample_mask).astype(bool),
        old_logp=rollout["logp"] if with_old_logp else None,
    )


def full_rows(inputs: Mapping[str, Any]) -> dict[str, Array]:
    """``assemble``'s inputs as the B concatenated rows [prompt, completion] a plain forward takes (e.g. the
    transformers side of a comparison): input_ids, attention_mask [B, L + T]; position_ids [B, 3, L + T]."""
    g = inputs["completion_ids"].shape[0] // inputs["prompt_ids"].shape[0]
    rep = lambda x: jnp.repeat(x, g, axis=0)  # noqa: E731
    return {
        "input_ids": jnp.concatenate([rep(inputs["prompt_ids"]), inputs["completion_ids"]], axis=1),
        "attention_mask": jnp.concatenate([rep(inputs["prompt_mask"]), inputs["completion_attention"]], axis=1),
        "position_ids": jnp.concatenate([rep(inputs["prompt_positions"]), inputs["completion_positions"]], axis=2),
    }


def completion_hidden(model: Any, inputs: Mapping[str, Any]) -> Array:
    """The hidden states [B, T, D] that predict the completion tokens: the prompt's last position for token 0
    (prompts are left padded), then completion position t - 1 for token t. Each prompt is computed once for
    its G completions (``Qwen25VL.grouped``); vision features go to the prompt's pads only."""
    feats = vision_features_per_prompt(model, inputs["vision"])
    hp, hc = model.grouped(inputs["prompt_ids"], jnp.swapaxes(inputs["prompt_positions"], 0, 1),
                           inputs["prompt_mask"], inputs["completion_ids"],
                           jnp.swapaxes(inputs["completion_positions"], 0, 1), inputs["completion_attention"],
                           vision_features=feats)
    g = hc.shape[0] // hp.shape[0]
    return jnp.concatenate([jnp.repeat(hp[:, -1:], g, axis=0), hc[:, :-1]], axis=1)


def make_policy_fn(graphdef: Any, *, temperature: float = 1.0, chunk_size: int = 256
                   ) -> Callable[[Any, Mapping[str, Any]], tuple[Array, Array]]:
    """The trainer's seam: ``policy_fn(params, inputs) -> (logp [B, T], entropy [B, T])`` over completion tokens
    (``inputs``: ``assemble``'s ``TrainBatch.inputs``).

    Log-probs are of the temperature-scaled distribution the rollout sampled from, computed in chunks of
    ``chunk_size`` positions (never the full [B, T, V] fp32 logits at once). The vision tower and the prompt run
    once per prompt and serve its G completions.
    """

    def policy_fn(params: Any, inputs: Mapping[str, Any]) -> tuple[Array, Array]:
        model = nnx.merge(graphdef, params)
        return token_logprobs_and_entropy(completion_hidden(model, inputs), model, inputs["completion_tokens"],
                                          chunk_size=chunk_size, temperature=temperature)

    return policy_fn


def decode_completions(tokenizer: Any, tokens: np.ndarray, completion_mask: np.ndarray) -> list[str]:
    """Host: completion rows int [B, T] and their mask -> B texts (special tokens such as EOS dropped)."""
    tokens, mask = np.asarray(tokens), np.asarray(completion_mask, bool)
    rows = [row[m].tolist() for row, m in zip(tokens, mask, strict=True)]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)
