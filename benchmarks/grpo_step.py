"""Benchmark: one full GRPO step (rollout + reward + update), ours (JAX) vs TRL's GRPOTrainer (PyTorch), on CPU.

Both sides train the same tiny Qwen2.5-VL on the same batch in one process, step after step, interleaved round
by round so that both see the same machine load:

- same weights: our randomly initialized Flax model is exported with ``params.export_hf_checkpoint`` (fp32) and
  TRL loads that directory (policy and reference); a parity check prints the largest log-prob difference of the
  two models on the same prompt + completion;
- same tokenizer (``data_pipeline.tiny_tokenizer``), same prompts (``data_pipeline.prompts``, one per task,
  cycled), one 224 x 224 image per prompt. TRL's GRPOTrainer takes images, not videos (its docs and code handle
  ``image`` / ``images`` only), so both sides get an image: TRL through Qwen2.5-VL's processor, ours as a
  one-temporal-patch "video" (a Qwen2.5-VL image is exactly that: the frame doubled in time, temporal position
  0, the same vision tower), preprocessed by ``models.qwen25vl.preprocess.preprocess_image``;
- same G, same number of generated tokens: every completion runs to ``--max-new`` tokens on both sides (TRL:
  ``min_new_tokens``; ours: an end-of-sequence id the sampler can never draw), temperature 1, no top-k/top-p;
- same reward: ``tempr1_jax.rewards.compute_rewards`` (TRL calls it through a reward function);
- same loss: group advantages (r - mean) / (std + 1e-4), clipped ratio with epsilon 0.2, per-sequence token
  mean then batch mean (TRL ``loss_type="grpo"``), k3 KL with ``--beta`` (TRL ``use_bias_correction_kl=False``),
  one update per rollout; AdamW (lr 1e-6, betas 0.9/0.999, eps 1e-8, no weight decay, linear decay),
  gradient-norm clipping at 1.0; fp32 everywhere, no gradient checkpointing on either side;
- same CPU threads for XLA and torch (``--threads``).

Phases: rollout = prompt preprocessing (tokenize, image patches) + generation + decoding to text; reward =
scoring the texts; update = everything after (reference log-probs, advantages, loss, backward, optimizer step).
TRL's phases are timed around its own ``_generate`` and ``_calculate_rewards``; its step is the Trainer's step
(from ``on_step_begin`` to ``on_step_end``: generation, scoring, forward/backward, clipping, optimizer). Warm-up
steps are excluded; our compile time is reported apart. We print wall and process CPU time, medians over rounds,
and the median of the per-round ratios (TRL time / our time; > 1 means we are faster).

    python benchmarks/grpo_step.py [--threads 1] [--prompts 2] [--group 8] [--max-new 64] [--rounds 5]
        [--model tiny|small] [--beta 0.04] [--baseline trl|none]

TRL is a benchmark-only dependency (benchmarks/requirements.txt); without it only our side runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PHASES = ("rollout", "reward", "update")
KEYS = (*PHASES, "total")


def clock() -> np.ndarray:
    """(wall seconds, process CPU seconds): CPU time counts every thread of the process (XLA's and torch's
    workers too) and leaves out time spent waiting for a core, so it is steadier on a shared machine."""
    return np.array([time.perf_counter(), time.process_time()])


def timing(phases: dict[str, np.ndarray]) -> dict[str, float]:
    """{phase: [wall, cpu]} -> {phase: wall, phase_cpu: cpu} (seconds)."""
    return {**{k: float(v[0]) for k, v in phases.items()}, **{f"{k}_cpu": float(v[1]) for k, v in phases.items()}}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for both XLA and torch")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step (tasks tg, dtg, vhd, gvqa, tal cycled)")
    ap.add_argument("--group", type=int, default=8, help="G, completions per prompt")
    ap.add_argument("--max-new", type=int, default=64, help="completion tokens (every completion has this many)")
    ap.add_argument("--image", type=int, default=224, help="image side in px (multiple of 28)")
    ap.add_argument("--model", choices=("tiny", "small"), default="tiny",
                    help="tiny: the 'tiny' preset (LM 2 x 64, ViT 2 x 32); small: LM 4 x 512, ViT 4 x 256")
    ap.add_argument("--unrolled", action="store_true", help="our model with scan_layers=False")
    ap.add_argument("--beta", type=float, default=0.04, help="KL coefficient (0 drops the reference model)")
    ap.add_argument("--rounds", type=int, default=5, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side before the rounds")
    ap.add_argument("--baseline", choices=("trl", "none"), default="trl", help="none: our side only")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.image % 28:
        ap.error(f"--image {args.image} must be a multiple of 28")
    for name in ("threads", "prompts", "group", "max_new", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.group < 2:
        ap.error("--group must be >= 2 (GRPO advantages need a group)")
    if args.warmup < 0 or args.beta < 0:
        ap.error("--warmup and --beta must be >= 0")
    return args


def set_threads(threads: int) -> None:
    """Thread limits for XLA (before jax starts) and for torch's pools (also set in ``trl_side``)."""
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
        + f" intra_op_parallelism_threads={threads}"
    )
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # thread limits must be set before jax / torch start their pools
    set_threads(ARGS.threads)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_pipeline import tiny_tokenizer  # noqa: E402
from data_pipeline import vision as preprocess  # noqa: E402
from data_pipeline.prompts import PromptEncoder, build_messages, expand_video_pad  # noqa: E402
from tempr1_jax import grpo, policy, rollout, trainer  # noqa: E402
from tempr1_jax.models.qwen25vl import config as qcfg  # noqa: E402
from tempr1_jax.models.qwen25vl import rope  # noqa: E402
from tempr1_jax.models.qwen25vl.model import Qwen25VL  # noqa: E402
from tempr1_jax.rewards import compute_rewards  # noqa: E402

# One sample per task (times in seconds), cycled over the prompts of a step.
SAMPLES = (
    {"task": "tg", "duration": 30.5, "query": "a person opens the door and turns on the light.",
     "segments": [[4.0, 9.5]]},
    {"task": "dtg", "duration": 120.0, "queries": ["a man talks to the camera.", "he plays the guitar."],
     "segments": [[0.0, 20.0], [25.0, 80.0]]},
    {"task": "vhd", "duration": 150.0, "query": "a woman cooks food in the kitchen.",
     "segments": [[10.0, 24.0], [40.0, 52.0]]},
    {"task": "gvqa", "duration": 40.0, "question": "why did the boy pick up the ball?",
     "options": ["to throw it", "to eat it", "to hold it", "to read it", "to play"], "answer": "A",
     "segments": [[12.0, 18.5]]},
    {"task": "tal", "duration": 90.0, "action": "Playing basketball", "segments": [[3.0, 7.5], [20.0, 26.0]]},
)  # fmt: skip

OPTIMIZER = dict(learning_rate=1e-6, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, max_grad_norm=1.0,
                 warmup_steps=0, decay="linear")  # fmt: skip


def model_config(args: argparse.Namespace) -> qcfg.Qwen25VLConfig:
    """The tiny preset (or a larger 'small' one) with the tiny tokenizer's vocabulary and special ids, fp32."""
    ids = tiny_tokenizer.TINY_SPECIAL_IDS
    base = qcfg.preset("tiny")
    text = dataclasses.replace(base.text, vocab_size=tiny_tokenizer.TINY_VOCAB_SIZE)
    vision = base.vision
    if args.model == "small":
        text = dataclasses.replace(text, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                                   num_attention_heads=8, num_key_value_heads=2, mrope_section=(8, 12, 12))
        vision = dataclasses.replace(vision, depth=4, hidden_size=256, intermediate_size=768, num_heads=4,
                                     out_hidden_size=512, fullatt_block_indexes=(3,))
    return qcfg.preset(
        "tiny", text=text, vision=vision, dtype="float32", param_dtype="float32", scan_layers=not args.unrolled,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=(ids["<|im_end|>"],), pad_token_id=ids["<|endoftext|>"],
    )  # fmt: skip


class Setup:
    """Everything both sides share: tokenizer, model, prompts, images, GRPO settings."""

    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        from transformers import AutoTokenizer

        self.args = args
        self.tokenizer_dir = tiny_tokenizer.build_tiny_tokenizer(os.path.join(workdir, "tokenizer"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        self.cfg = model_config(args)
        self.model = Qwen25VL(self.cfg, rngs=nnx.Rngs(args.seed))
        rng = np.random.default_rng(args.seed)
        self.samples = [SAMPLES[i % len(SAMPLES)] for i in range(args.prompts)]
        side = args.image
        self.images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(args.prompts)]
        self.grpo = grpo.GRPOConfig(num_generations=args.group, beta=args.beta, kl_estimator="k3", eps_low=0.2,
                                    eps_high=0.2, aggregation="seq_mean_token_mean", num_iterations=1,
                                    advantage_scale="group", advantage_eps=1e-4)  # fmt: skip
        self.total_steps = args.warmup + args.rounds + 1  # + our compile step

    def messages(self, i: int, part: str) -> list[dict[str, Any]]:
        """Prompt i as chat messages with an ``image`` or ``video`` part (data_pipeline.prompts)."""
        msgs = build_messages(self.samples[i], think="optional")
        msgs[-1]["content"] = [{"type": part} if p.get("type") == "video" else p for p in msgs[-1]["content"]]
        return msgs


# ----------------------------------------------------------------------------------------------------------
# Our side
# ----------------------------------------------------------------------------------------------------------


class Ours:
    """One GRPO step from our pieces: host prompt preprocessing, ``rollout.make_generate``, ``compute_rewards``,
    ``policy.assemble`` and ``trainer.make_train_step``."""

    def __init__(self, s: Setup) -> None:
        self.s = s
        cfg, args = s.cfg, s.args
        graphdef, params = nnx.split(s.model)
        self.pad = cfg.pad_token_id
        # An end-of-sequence id outside the vocabulary: never drawn, so every completion has max_new tokens.
        self.sampling = rollout.SamplingConfig(group_size=args.group, max_new_tokens=args.max_new, temperature=1.0,
                                               top_p=1.0, top_k=0, eos_ids=(cfg.text.vocab_size,), pad_id=self.pad)
        self.generate = rollout.make_generate(graphdef, self.sampling)
        self.assemble = jax.jit(functools.partial(policy.assemble, pad_id=self.pad))
        self.encoder = PromptEncoder(s.tokenizer, think="optional")
        self.sizer = policy.VisionSizer(cfg)
        tx, schedule = trainer.make_optimizer(ml_collections.ConfigDict(OPTIMIZER), s.total_steps)
        self.state, _ = trainer.create_state(jax.tree.map(jnp.copy, params), tx, jax.random.PRNGKey(args.seed),
                                             beta=args.beta)
        fn = policy.make_policy_fn(graphdef, temperature=1.0)
        self.train_step = trainer.make_train_step(fn, tx, s.grpo, schedule=schedule)
        self.rng = jax.random.PRNGKey(args.seed + 1)
        self.metrics: dict[str, float] = {}
        self.tokens = 0  # prompt + completion tokens of the last step (padding excluded)

    def stream_batch(self) -> types.SimpleNamespace:
        """Raw images + samples -> the fields of a data_pipeline.stream.Batch that policy.prompt_inputs reads
        (left-padded ids, packed patches)."""
        s = self.s
        vids = [preprocess.preprocess_image(img) for img in s.images]
        ids = [expand_video_pad(t, self.encoder.video_pad_id, v.num_tokens)
               for t, v in zip(self.encoder.encode_many(s.samples), vids, strict=True)]
        length = max(map(len, ids))
        n_max = max(v.pixel_values.shape[0] for v in vids)
        input_ids = np.full((len(ids), length), self.pad, np.int32)
        mask = np.zeros((len(ids), length), np.int32)
        pixels = np.zeros((len(ids), n_max, preprocess.PATCH_DIM), np.float32)
        for b, (t, v) in enumerate(zip(ids, vids, strict=True)):
            input_ids[b, length - len(t):] = t
            mask[b, length - len(t):] = 1
            pixels[b, : v.pixel_values.shape[0]] = v.pixel_values
        grids = np.stack([np.asarray(v.grid_thw, np.int32) for v in vids])
        # second_per_grid_ts only scales temporal positions, which are all 0 for one temporal patch (an image).
        return types.SimpleNamespace(input_ids=input_ids, attention_mask=mask, grid_thw=grids,
                                     second_per_grid_ts=np.ones(len(ids), np.float32), pixel_values=pixels)

    def step(self) -> dict[str, float]:
        """One GRPO step; returns seconds per phase and in total."""
        g = self.s.args.group
        t0 = clock()
        prompts = policy.prompt_inputs(self.s.cfg, self.stream_batch(), self.sizer)
        self.rng, key = jax.random.split(self.rng)
        out = self.generate(self.state.params, prompts, key)
        tokens, cmask = np.asarray(out["tokens"]), np.asarray(out["completion_mask"])
        texts = self.s.tokenizer.batch_decode([t[m] for t, m in zip(tokens, cmask, strict=True)],
                                              skip_special_tokens=True)
        t1 = clock()
        self.tokens = int(prompts["attention_mask"].sum()) * g + int(cmask.sum())
        samples = [smp for smp in self.s.samples for _ in range(g)]
        rewards = compute_rewards(texts, samples)["total"]
        t2 = clock()
        batch = self.assemble(prompts, out, rewards)
        self.state, metrics = self.train_step(self.state, batch)
        self.metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        t3 = clock()
        return timing({"rollout": t1 - t0, "reward": t2 - t1, "update": t3 - t2, "total": t3 - t0})


# ----------------------------------------------------------------------------------------------------------
# TRL's side
# ----------------------------------------------------------------------------------------------------------


def trl_side(s: Setup, workdir: str, between: Callable[[], None]) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Runs TRL's GRPOTrainer for warmup + rounds steps; ``between()`` runs before each TRL step (untimed by
    TRL's clock), which interleaves our rounds. Returns TRL's per-step phase times (timed rounds only) and info."""
    import datasets
    import torch
    import transformers
    import trl
    from PIL import Image
    from transformers import PrinterCallback, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, TrainerCallback
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from data_pipeline.prompts import QWEN25VL_CHAT_TEMPLATE
    from tempr1_jax.models.qwen25vl.params import export_hf_checkpoint

    args = s.args
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing rename

    class ImageProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL's processor without its video processor: that one needs torchvision, whose only wheel
        here is a CUDA build that does not load with the CPU torch. Images are all this benchmark feeds TRL."""

        @classmethod
        def get_attributes(cls) -> list[str]:
            return ["image_processor", "tokenizer"]

    class TimedGRPOTrainer(trl.GRPOTrainer):
        """GRPOTrainer that times its rollout (``_generate``) and its reward calls (``_calculate_rewards``)."""

        phase: dict[str, np.ndarray]

        def _generate(self, *a: Any, **k: Any) -> Any:
            t0 = clock()
            out = super()._generate(*a, **k)
            self.phase["rollout"] += clock() - t0
            return out

        def _calculate_rewards(self, *a: Any, **k: Any) -> Any:
            t0 = clock()
            out = super()._calculate_rewards(*a, **k)
            self.phase["reward"] += clock() - t0
            return out

    for name in ("_generate", "_calculate_rewards"):
        if not callable(getattr(trl.GRPOTrainer, name, None)):
            raise RuntimeError(f"trl {trl.__version__}: GRPOTrainer.{name} is gone; this benchmark times it "
                               "(tested with trl 1.16.0)")

    hf_dir = os.path.join(workdir, "hf")
    export_hf_checkpoint(s.model, hf_dir, dtype="float32", copy_aux_from=s.tokenizer_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32)
    processor = ImageProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=s.tokenizer,
                               chat_template=QWEN25VL_CHAT_TEMPLATE)

    parsed: dict[str, dict] = {}

    def reward_fn(prompts: list, completions: list, sample: list[str], **_: Any) -> list[float]:
        """Our compute_rewards on TRL's completions; rows of one prompt share one parsed sample (as ours do)."""
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        rows = [parsed.get(j) or parsed.setdefault(j, json.loads(j)) for j in sample]
        return compute_rewards(texts, rows)["total"].tolist()

    reward_fn.__name__ = "tempr1_compute_rewards"
    data = datasets.Dataset.from_list([
        {"prompt": s.messages(i, "image"), "image": Image.fromarray(s.images[i]), "sample": json.dumps(s.samples[i])}
        for i in range(args.prompts)
    ])  # fmt: skip
    steps = args.warmup + args.rounds
    config = trl.GRPOConfig(
        output_dir=os.path.join(workdir, "trl"), max_steps=steps, per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group, max_completion_length=args.max_new,
        generation_kwargs={"min_new_tokens": args.max_new}, temperature=1.0, top_p=1.0, top_k=0,
        beta=args.beta, epsilon=0.2, loss_type="grpo", scale_rewards="group", num_iterations=1,
        use_bias_correction_kl=False, learning_rate=OPTIMIZER["learning_rate"], lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
        bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False, shuffle_dataset=False,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        seed=args.seed,
    )  # fmt: skip
    tr = TimedGRPOTrainer(model=model, reward_funcs=[reward_fn], args=config, train_dataset=data,
                          processing_class=processor)
    tr.phase = {k: np.zeros(2) for k in PHASES}
    times: list[dict[str, float]] = []
    threads: set[int] = set()  # torch's intra-op threads seen during the steps

    class Clock(TrainerCallback):
        def on_step_begin(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            between()
            tr.phase = {k: np.zeros(2) for k in PHASES}
            self.t0 = clock()

        def on_step_end(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            total = clock() - self.t0
            threads.add(torch.get_num_threads())
            if state.global_step > args.warmup:
                ph = dict(tr.phase)
                ph["update"] = total - ph["rollout"] - ph["reward"]
                times.append(timing({**ph, "total": total}))

    tr.remove_callback(PrinterCallback)  # keeps TRL's per-step log dicts off the console
    tr.add_callback(Clock())
    parity = logprob_parity(s, model, processor)  # before training changes the weights
    tr.train()
    logs = [h for h in tr.state.log_history if "completions/mean_length" in h]
    opt = tr.optimizer.optimizer if hasattr(tr.optimizer, "optimizer") else tr.optimizer
    info = {
        "versions": f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}",
        "optimizer": type(opt).__name__ + (" (fused)" if opt.defaults.get("fused") else ""),
        "mean_length": statistics.mean(h["completions/mean_length"] for h in logs) if logs else float("nan"),
        "tokens_per_step": logs[-1]["num_tokens"] / len(logs) if logs else float("nan"),
        "parity": parity,
        "threads": sorted(threads),
    }
    return times, info


def logprob_parity(s: Setup, hf_model: Any, processor: Any) -> float:
    """Max |log p| difference between TRL's model (image prompt) and ours (one-patch video prompt) over the
    tokens of a fixed completion of prompt 0: the same weights compute the same function on the same input."""
    import torch
    from PIL import Image

    text = processor.apply_chat_template(s.messages(0, "image"), add_generation_prompt=True, tokenize=False)
    hf_in = processor(images=[Image.fromarray(s.images[0])], text=[text], return_tensors="pt")
    completion = s.tokenizer("<answer>4.0 to 9.5</answer>", add_special_tokens=False)["input_ids"]
    ids = torch.cat([hf_in["input_ids"], torch.tensor([completion])], dim=1)
    extra = {"pixel_values": hf_in["pixel_values"], "image_grid_thw": hf_in["image_grid_thw"],
             "mm_token_type_ids": torch.cat([hf_in["mm_token_type_ids"], torch.zeros(1, len(completion))], 1).long()}
    with torch.no_grad():
        logits = hf_model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[0].double()
    n = len(completion)
    hf_lp = torch.log_softmax(logits[-n - 1 : -1], -1).gather(-1, torch.tensor(completion)[:, None])[:, 0].numpy()

    cfg = s.cfg
    v = preprocess.preprocess_image(s.images[0])
    enc = PromptEncoder(s.tokenizer, think="optional")
    ours_ids = np.concatenate([expand_video_pad(enc.encode_many(s.samples[:1])[0], enc.video_pad_id,
                                                v.num_tokens), completion])[None].astype(np.int32)
    mask = np.ones_like(ours_ids)
    pos, _ = rope.get_rope_index(cfg, ours_ids, mask, video_grid_thw=[v.grid_thw], second_per_grid_ts=[1.0])
    vision = rope.pack_vision(cfg, [(v.pixel_values, v.grid_thw)])
    ours = np.asarray(s.model.logits(jnp.asarray(ours_ids), jnp.asarray(pos), jnp.asarray(mask), vision))[0]
    ours = ours.astype(np.float64)[-n - 1 : -1]
    ours_lp = (ours - np.log(np.exp(ours - ours.max(-1, keepdims=True)).sum(-1, keepdims=True))
               - ours.max(-1, keepdims=True))[np.arange(n), completion]  # fmt: skip
    return float(np.max(np.abs(ours_lp - hf_lp)))


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------


def median_phases(times: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(t[k] for t in times) for k in times[0]}


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the benchmark and prints the table; returns the measured times (used by the smoke test)."""
    baseline = args.baseline
    if baseline == "trl":
        try:
            import trl  # noqa: F401
        except ImportError:
            print("TRL is not installed (pip install -r benchmarks/requirements.txt): timing our side only")
            baseline = "none"
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        s = Setup(args, workdir)
        ours = Ours(s)
        first = ours.step()  # compiles generate, assemble and train_step
        our_times: list[dict[str, float]] = []
        warm = [0]

        def our_round() -> None:
            t = ours.step()
            if warm[0] < args.warmup:
                warm[0] += 1
            else:
                our_times.append(t)

        trl_times: list[dict[str, float]] = []
        info: dict[str, Any] = {}
        if baseline == "trl":
            trl_times, info = trl_side(s, workdir, our_round)
        else:
            for _ in range(args.warmup + args.rounds):
                our_round()
    load1 = os.getloadavg()[0]

    ours_med = median_phases(our_times)
    compile_s = first["total"] - ours_med["total"]
    print(f"jax {jax.__version__} ({jax.devices()[0].platform})" + (f", {info['versions']}" if info else "")
          + f"; {args.threads} CPU thread(s) per framework; load average {load0:.1f} -> {load1:.1f}")
    print(f"model {args.model} ({'unrolled' if args.unrolled else 'scan'} layers), fp32; {args.prompts} prompts x "
          f"G={args.group} = {args.prompts * args.group} completions of {args.max_new} tokens; one "
          f"{args.image}x{args.image} image per prompt; beta {args.beta}; median of {args.rounds} interleaved "
          f"rounds after {args.warmup} warm-up")  # fmt: skip
    m = ours.metrics
    print(f"ours: first step {first['total']:.1f} s (compile ~{compile_s:.1f} s); completion length "
          f"{m['completion_length/mean']:.1f}; tokens/step {ours.tokens}; reward mean {m['reward/mean']:.3f}")
    result: dict[str, Any] = {"ours": our_times, "trl": trl_times, "compile_s": compile_s, "metrics": m}
    if trl_times:
        trl_med = median_phases(trl_times)
        ratio = {k: statistics.median(b[k] / o[k] for b, o in zip(trl_times, our_times, strict=True))
                 for k in our_times[0]}  # fmt: skip
        print(f"TRL: torch threads {info['threads']}; {info['optimizer']}; completion length "
              f"{info['mean_length']:.1f}; tokens/step {info['tokens_per_step']:.0f}; log-prob parity with ours "
              f"(same weights and input): max |diff| {info['parity']:.1e}")
        print(f"{'':10}{'wall: TRL':>11}{'ours':>8}{'TRL/ours':>10}{'CPU: TRL':>12}{'ours':>8}{'TRL/ours':>10}")
        for k in KEYS:
            print(f"{k:10}{trl_med[k] * 1e3:>9.0f}ms{ours_med[k] * 1e3:>6.0f}ms{ratio[k]:>9.2f}x"
                  f"{trl_med[k + '_cpu'] * 1e3:>10.0f}ms{ours_med[k + '_cpu'] * 1e3:>6.0f}ms"
                  f"{ratio[k + '_cpu']:>9.2f}x")
        print(f"one GRPO step: ours {ratio['total']:.2f}x faster than TRL's GRPOTrainer in wall time, "
              f"{ratio['total_cpu']:.2f}x in CPU time (medians of per-round ratios)")
        result["ratio"] = ratio
    else:
        print(f"{'':10}{'wall: ours':>12}{'CPU: ours':>12}")
        for k in KEYS:
            print(f"{k:10}{ours_med[k] * 1e3:>10.0f}ms{ours_med[k + '_cpu'] * 1e3:>10.0f}ms")
    return result

if __name__ == "__main__":
    main(ARGS)
