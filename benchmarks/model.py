"""Benchmark: our jitted Qwen2.5-VL forward and forward+backward vs HF transformers (PyTorch eager).

A small-but-not-trivial random model (LM 4 layers x 512 hidden, ViT 4 layers x 256 hidden) on a 16-frame video
plus text, float32 on CPU. Both sides load the same weights (we read the HF model's save_pretrained directory)
and compute the same loss, the mean token negative log-likelihood of the shifted inputs: HF from its full
logits, ours through ``token_logprobs_and_entropy`` (chunked, as the GRPO step uses it). We run two layer
modes: ``scan`` (one ``lax.scan`` over stacked layers, the default, fast compiles for deep models) and
``unrolled`` (``scan_layers=False``). All measurements are interleaved round by round so that they see the
same machine load; the ratios are medians of per-round ratios (HF time / our time; > 1 means we are faster).
Both frameworks get the same number of CPU threads (``--threads``, default 1: a shared 2-core machine makes
multi-threaded timings erratic).

    python benchmarks/model.py [--threads 1] [--frames 16] [--size 224] [--text 64] [--batch 1] [--repeats 5]

Needs torch (test-only dependency, CPU build).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for both XLA and torch")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224, help="frame side in px (multiple of 28)")
    ap.add_argument("--text", type=int, default=64, help="text tokens around the video")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hf-attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--chunk", type=int, default=128, help="our log-prob chunk (positions)")
    return ap.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # thread limits must be set before jax / torch start their pools
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={'true' if ARGS.threads > 1 else 'false'}"
        + f" intra_op_parallelism_threads={ARGS.threads}"
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tempr1_jax.models.qwen25vl import params, rope  # noqa: E402
from tempr1_jax.models.qwen25vl.model import token_logprobs_and_entropy  # noqa: E402


def hf_model(args):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=args.vocab, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
        vision_config=dict(
            depth=4, hidden_size=256, intermediate_size=768, num_heads=4, out_hidden_size=512,
            fullatt_block_indexes=[3], tokens_per_second=2, window_size=112, patch_size=14,
            temporal_patch_size=2, spatial_merge_size=2, in_channels=3,
        ),
        image_token_id=args.vocab - 4, video_token_id=args.vocab - 3, vision_start_token_id=args.vocab - 2,
        vision_end_token_id=args.vocab - 1, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration._from_config(
        cfg, attn_implementation=args.hf_attn, dtype=torch.float32
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05) if p.ndim > 1 else p.uniform_(0.8, 1.2)
    return model


def interleaved_times(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Time each function once per round, rounds interleaved, so all of them see the same machine load."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    hm = hf_model(args)
    with tempfile.TemporaryDirectory() as d:
        hm.save_pretrained(d)
        models = {
            "scan": params.load_hf_checkpoint(d, dtype="float32"),
            "unrolled": params.load_hf_checkpoint(d, dtype="float32", scan_layers=False),
        }
    cfg = models["scan"].cfg

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
    j_ids, j_pos, j_mask, j_tgt = map(jnp.asarray, (ids, pos, mask, targets))

    # ---- ours (jitted), one pair of functions per layer mode
    fns, losses, compile_s = {}, {}, {}
    for mode, model in models.items():
        graphdef, state = nnx.split(model)

        def loss_fn(state, graphdef=graphdef):
            m = nnx.merge(graphdef, state)
            # The GRPO path: hidden states, then chunked log-probs of the targets (no [B, L, V] fp32 block).
            logp, _ = token_logprobs_and_entropy(
                m(j_ids, j_pos, j_mask, vis), m, j_tgt, chunk_size=args.chunk
            )
            return -jnp.mean(logp)

        fwd, fwd_bwd = jax.jit(loss_fn), jax.jit(jax.value_and_grad(loss_fn))
        t0 = time.perf_counter()
        losses[mode] = float(fwd(state))
        jax.block_until_ready(fwd_bwd(state))
        compile_s[mode] = time.perf_counter() - t0
        fns[f"{mode}_fwd"] = lambda f=fwd, s=state: jax.block_until_ready(f(s))
        fns[f"{mode}_bwd"] = lambda f=fwd_bwd, s=state: jax.block_until_ready(f(s))

    # ---- HF torch eager
    kw = dict(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        position_ids=torch.tensor(pos).long(),
        pixel_values_videos=torch.tensor(np.concatenate([p for p, _ in items])),
        video_grid_thw=torch.tensor([grid] * args.batch),
        second_per_grid_ts=torch.tensor([1.0] * args.batch),
        mm_token_type_ids=torch.tensor(np.where(ids == cfg.video_token_id, 2, 0)),
    )
    t_tgt = torch.tensor(targets)

    def hf_loss():
        logp = torch.log_softmax(hm(**kw).logits, dim=-1)
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
    fns["hf_fwd"], fns["hf_bwd"] = hf_fwd, hf_fwd_bwd
    t = interleaved_times(fns, args.repeats)

    print(
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}, "
        f"{args.threads} CPU thread(s) each, HF attention={args.hf_attn}"
    )
    print(
        f"input: batch {args.batch}, video {args.frames} frames {args.size}x{args.size} -> grid {grid}, "
        f"{grid[0] * grid[1] * grid[2]} ViT patches, {n_vid} video tokens, {ids.shape[1]} LLM tokens"
    )
    diff = max(abs(v - hf_loss_val) for v in losses.values())
    comp = ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items())
    print(f"loss HF {hf_loss_val:.6f}, ours max |diff| {diff:.2e}; our compile (fwd + fwd/bwd): {comp}")
    print(f"{'':20}{'HF eager':>10}{'ours scan':>11}{'ratio':>8}{'ours unrolled':>15}{'ratio':>8}")
    for label, key in (("forward", "fwd"), ("forward + backward", "bwd")):
        med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
        ratio = {
            mode: statistics.median(h / o for h, o in zip(t[f"hf_{key}"], t[f"{mode}_{key}"], strict=True))
            for mode in models
        }
        print(
            f"{label:20}{med[f'hf_{key}']:>8.0f}ms{med[f'scan_{key}']:>9.0f}ms{ratio['scan']:>7.2f}x"
            f"{med[f'unrolled_{key}']:>13.0f}ms{ratio['unrolled']:>7.2f}x"
        )


if __name__ == "__main__":
    main(ARGS)
