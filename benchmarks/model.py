"""Benchmark: our jitted Qwen2.5-VL forward and forward+backward vs HF transformers (PyTorch eager).

A small-but-not-trivial random model (LM 4 layers x 512 hidden, ViT 4 layers x 256 hidden) on a 16-frame video
plus text, float32 on CPU. Both sides load the same weights (we read the HF model's save_pretrained directory)
and compute the same loss: mean token cross-entropy over full logits. Prints median wall times and the ratios
(HF time / our time; > 1 means we are faster). Timings on a shared machine are noisy: compare the ratios.

    python benchmarks/model.py [--frames 16] [--size 224] [--text 64] [--batch 1] [--repeats 5]

Needs torch (test-only dependency, CPU build).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tempr1_jax.models.qwen25vl import params, rope  # noqa: E402


def hf_model(args):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=args.vocab,
            hidden_size=512,
            intermediate_size=1536,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        vision_config=dict(
            depth=4,
            hidden_size=256,
            intermediate_size=768,
            num_heads=4,
            out_hidden_size=512,
            fullatt_block_indexes=[3],
            tokens_per_second=2,
            window_size=112,
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            in_channels=3,
        ),
        image_token_id=args.vocab - 4,
        video_token_id=args.vocab - 3,
        vision_start_token_id=args.vocab - 2,
        vision_end_token_id=args.vocab - 1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration._from_config(
        cfg, attn_implementation=args.hf_attn, dtype=torch.float32
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05) if p.ndim > 1 else p.uniform_(0.8, 1.2)
    return model, cfg


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224, help="frame side in px (multiple of 28)")
    ap.add_argument("--text", type=int, default=64, help="text tokens around the video")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hf-attn", default="sdpa", choices=["sdpa", "eager"])
    args = ap.parse_args()

    import torch

    hm, hcfg = hf_model(args)
    with tempfile.TemporaryDirectory() as d:
        hm.save_pretrained(d)
        model = params.load_hf_checkpoint(d, dtype="float32")
    cfg = model.cfg

    grid = (args.frames // 2, args.size // 14, args.size // 14)
    n_vid = grid[0] * grid[1] * grid[2] // 4
    rng = np.random.default_rng(0)
    half = args.text // 2
    seq = list(rng.integers(3, args.vocab - 8, size=half)) + [cfg.vision_start_token_id]
    seq += [cfg.video_token_id] * n_vid + [cfg.vision_end_token_id]
    seq += list(rng.integers(3, args.vocab - 8, size=args.text - half))
    ids = np.array([seq] * args.batch)
    mask = np.ones_like(ids)
    pix = rng.standard_normal((grid[0] * grid[1] * grid[2], 1176)).astype(np.float32)
    items = [(pix, grid)] * args.batch
    pos, _ = rope.get_rope_index(
        cfg, ids, mask, video_grid_thw=[grid] * args.batch, second_per_grid_ts=[1.0] * args.batch
    )
    vis = {k: jnp.asarray(v) for k, v in rope.pack_vision(cfg, items).items()}
    targets = np.roll(ids, -1, axis=1)

    # ---- ours (jitted)
    graphdef, state = nnx.split(model)
    j_ids, j_pos, j_mask, j_tgt = map(jnp.asarray, (ids, pos, mask, targets))

    def loss_fn(state):
        m = nnx.merge(graphdef, state)
        logp = jax.nn.log_softmax(m.logits(j_ids, j_pos, j_mask, vis), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, j_tgt[..., None], axis=-1))

    fwd = jax.jit(loss_fn)
    fwd_bwd = jax.jit(jax.value_and_grad(loss_fn))
    t0 = time.perf_counter()
    ours_loss = float(fwd(state))
    jax.block_until_ready(fwd_bwd(state))
    compile_s = time.perf_counter() - t0
    t_fwd = median_time(lambda: jax.block_until_ready(fwd(state)), args.repeats)
    t_bwd = median_time(lambda: jax.block_until_ready(fwd_bwd(state)), args.repeats)

    # ---- HF torch eager
    tt = torch.tensor(np.where(ids == cfg.video_token_id, 2, 0))
    kw = dict(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        position_ids=torch.tensor(pos).long(),
        pixel_values_videos=torch.tensor(np.concatenate([p for p, _ in items])),
        video_grid_thw=torch.tensor([grid] * args.batch),
        second_per_grid_ts=torch.tensor([1.0] * args.batch),
        mm_token_type_ids=tt,
    )
    t_tgt = torch.tensor(targets)

    def hf_loss():
        logits = hm(**kw).logits
        logp = torch.log_softmax(logits, dim=-1)
        return -logp.gather(-1, t_tgt[..., None]).mean()

    def hf_fwd():
        with torch.no_grad():
            return hf_loss()

    def hf_fwd_bwd():
        hm.zero_grad(set_to_none=True)
        loss = hf_loss()
        loss.backward()
        return loss

    hf_loss_val = float(hf_fwd())
    hf_fwd_bwd()
    h_fwd = median_time(hf_fwd, args.repeats)
    h_bwd = median_time(hf_fwd_bwd, args.repeats)

    print(
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), HF attention={args.hf_attn}"
    )
    print(
        f"input: batch {args.batch}, video {args.frames} frames {args.size}x{args.size} -> grid {grid}, "
        f"{grid[0] * grid[1] * grid[2]} ViT patches, {n_vid} video tokens, {ids.shape[1]} LLM tokens"
    )
    print(
        f"loss ours {ours_loss:.6f} vs HF {hf_loss_val:.6f} (|diff| {abs(ours_loss - hf_loss_val):.2e}); "
        f"our one-time compile {compile_s:.1f} s"
    )
    print(f"{'':22}{'ours (jit)':>12}{'HF eager':>12}{'HF / ours':>12}")
    print(f"{'forward':22}{t_fwd * 1e3:>10.1f}ms{h_fwd * 1e3:>10.1f}ms{h_fwd / t_fwd:>11.2f}x")
    print(f"{'forward + backward':22}{t_bwd * 1e3:>10.1f}ms{h_bwd * 1e3:>10.1f}ms{h_bwd / t_bwd:>11.2f}x")


if __name__ == "__main__":
    main()
