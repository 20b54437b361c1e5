"""Benchmark on one accelerator: a recipe-shaped GRPO step of random weights, side by side with transformers (torch).

    python benchmarks/accelerator.py [--preset 3b] [--prompts 1] [--group 8] [--new-tokens 1024] [--frames 448]
        [--prompt-len 4096] [--beta 0] [--freeze-vision] [--micro-batches 1] [--steps 2] [--no-torch] [--no-plan]
        [--output FILE]

No TensorFlow and no data files: the model is a randomly initialized preset (tiny, 3b or 7b), the inputs are the
planner's stand-in (tempr1_jax.plan): prompts of ``--prompt-len`` tokens holding a video of ``--frames`` 720p frames
at the TempR1 visual budget (448 frames: 3360 video tokens), G completions of exactly ``--new-tokens`` tokens each
(the end-of-sequence id is one the model never samples). Three processes, one after another, each owning the device:

  1. ours (JAX): rollout (prefill + G-row KV cache + decode), update (assemble + train_step: the trainer's own
     functions, setup.step_functions), one GRPO step, the policy's forward + backward alone; tokens/s, MFU against
     the device's bf16 peak (tempr1_jax.devices; FLOPs counted as the planner counts them), peak device memory
     (``device.memory_stats()``) and the device compiler's own ``memory_analysis``. Then the same weights are
     written by ``export_hf_checkpoint``, with the inputs and our log-probs.
  2. transformers (torch, the same device): ``generate`` (G sequences per prompt, sampled, min = max new tokens)
     and the forward + backward of the same completion log-probs (gradient checkpointing on, as the recipe's remat);
     the log-prob difference to ours is printed as a parity check.
  3. the planner on this config, on simulated CPU devices: its estimated peak beside the measured one.

Ratios are transformers' time / ours (> 1: ours is faster). ``--preset tiny`` runs on a CPU in a minute or two
(tests/test_plan.py runs it); on a GPU see docs/planner.md for the command, its duration and what it prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZES = ("tiny", "3b", "7b")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="3b", choices=SIZES, help="random weights of this Qwen2.5-VL preset")
    ap.add_argument("--prompts", type=int, default=1, help="prompts per step (each with its own video)")
    ap.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    ap.add_argument("--new-tokens", type=int, default=1024, help="every completion is this long")
    ap.add_argument("--frames", type=int, default=448, help="video frames (2 fps, the TempR1 visual budget)")
    ap.add_argument("--prompt-len", type=int, default=4096, help="prompt tokens, the video's included")
    ap.add_argument("--beta", type=float, default=0.0, help="KL weight; > 0 keeps a reference copy")
    ap.add_argument("--freeze-vision", action="store_true", help="no gradients for the vision tower")
    ap.add_argument("--micro-batches", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="timed steps after the compiling one")
    ap.add_argument("--no-torch", action="store_true", help="skip the transformers side")
    ap.add_argument("--no-plan", action="store_true", help="skip the planner's estimate")
    ap.add_argument("--output", default="", help="write every figure as JSON to this file")
    ap.add_argument("--side", choices=("jax", "torch"), help=argparse.SUPPRESS)  # one process's part
    ap.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def config_args(args: argparse.Namespace) -> list[str]:
    """The config file and overrides of this benchmark (the planner gets the same ones)."""
    if args.preset == "tiny":  # the demo's tiny model in float32 (CPU), at the flags' shapes
        file, extra = "configs/demo.py", ["--config.model.dtype=float32", "--config.data.vision_buckets=(4096,)"]
    else:
        file, extra = f"configs/tempr1_{args.preset}.py", [f"--config.model.preset={args.preset}"]
    return [
        f"--config={ROOT / file}",
        *extra,
        f"--config.train.prompts_per_step={args.prompts}",
        f"--config.grpo.num_generations={args.group}",
        f"--config.rollout.max_new_tokens={args.new_tokens}",
        f"--config.data.max_frames={args.frames}",
        f"--config.data.prompt_buckets=({args.prompt_len},)",
        f"--config.grpo.beta={args.beta}",
        f"--config.model.freeze_vision={args.freeze_vision}",
        f"--config.train.micro_batches={args.micro_batches}",
        "--config.mesh.data=-1",
        "--config.mesh.fsdp=1",
        "--config.mesh.tp=1",
    ]


def timed(fn: Any, *a: Any) -> tuple[Any, float]:
    """(fn(*a) once its arrays are ready, seconds)."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*a))
    return out, time.perf_counter() - t0


def stand_in_prompts(cfg: Any, mcfg: Any, mesh: Any, n: int) -> tuple[Any, dict, Any]:
    """(the prompt inputs on the mesh, their shapes, the video's pixel rows): n copies of the planner's stand-in
    prompt, its video random pixels."""
    import numpy as np

    from tempr1_jax import plan, policy, sharding

    _, shapes = plan.abstract_prompts(cfg, mcfg, mesh)
    batch = plan.stand_in_batch(mcfg, shapes["prompt_tokens"], tuple(shapes["video_grid_thw"]), cfg.data.fps)
    pixels = np.random.default_rng(0).standard_normal(batch.pixel_values.shape).astype(np.float32)
    p, b, f = (int(v) for v in cfg.model.vision_multiples)
    sizer = policy.VisionSizer(mcfg, patch_multiple=p, block_multiple=b, frame_multiple=f)
    one = policy.prompt_inputs(mcfg, batch._replace(pixel_values=pixels), sizer)
    host = {
        k: (np.repeat(v, n, axis=0) if k != "vision" else {kk: np.repeat(vv, n, axis=0) for kk, vv in v.items()})
        for k, v in one.items()
    }
    return sharding.shard_batch(host, sharding.batch_sharding(mesh)), shapes, pixels[0]


def compile_step(fns: dict, state: Any, prompts: Any, scores: tuple, new_tokens: int) -> tuple[dict, dict, dict]:
    """(compiled rollout / assemble / train_step, their FLOPs as the planner counts them, their memory_analysis)."""
    import jax

    from tempr1_jax import plan

    key = jax.random.PRNGKey(1)
    w_params = [True] * len(jax.tree.leaves(state.params))
    traced = fns["rollout"].trace(state.params, prompts, key)
    compiled = {"rollout": traced.lower().compile()}
    main, loops, _ = plan.jaxpr_cost(
        traced.jaxpr, w_params + [False] * (len(jax.tree.leaves((prompts, key)))), while_trips=new_tokens
    )
    flops = {"rollout": main.flops + loops.flops}
    roll = compiled["rollout"](state.params, prompts, key)
    out = {k: roll[k] for k in ("tokens", "completion_mask", "logp")}
    compiled["assemble"] = fns["assemble"].trace(prompts, out, *scores).lower().compile()
    batch = compiled["assemble"](prompts, out, *scores)
    traced = fns["train_step"].trace(state, batch)
    compiled["train_step"] = traced.lower().compile()
    w = state.replace(
        step=False,
        opt_state=jax.tree.map(lambda _: False, state.opt_state),
        rng=False,
        skipped=False,
        params=jax.tree.map(lambda _: True, state.params),
        ref_params=jax.tree.map(lambda _: True, state.ref_params),
    )
    main, _, _ = plan.jaxpr_cost(traced.jaxpr, jax.tree.leaves(w) + [False] * len(jax.tree.leaves(batch)))
    flops["train_step"] = main.flops
    return compiled, flops, {k: plan._memory(c) for k, c in compiled.items()}


def jax_side(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Part 1 (the module docstring): our figures; the HF export, inputs and our log-probs go to ``workdir``."""
    import jax
    import numpy as np

    from tempr1_jax import configlib, devices, plan, rollout, setup, sharding, trainer

    cfg = configlib.parse_flags(["accelerator", *config_args(args)]).config
    b = plan.build(cfg)
    mesh, mcfg, gcfg, opt = b["mesh"], b["mcfg"], b["gcfg"], b["opt"]
    graphdef, params, specs = setup.random_params(mcfg, mesh, seed=0)
    n_params = setup.param_count(params)
    state, _ = trainer.create_state(params, opt.tx, jax.random.PRNGKey(0), beta=gcfg.beta, mesh=mesh, param_specs=specs)
    prompts, shapes, pixels = stand_in_prompts(cfg, mcfg, mesh, args.prompts)
    batch_sh, rows = sharding.batch_sharding(mesh), args.prompts * args.group
    scores = (
        sharding.shard_batch(np.random.default_rng(1).standard_normal(rows).astype(np.float32), batch_sh),
        sharding.shard_batch(np.ones(args.prompts, bool), batch_sh),
    )
    scfg = dataclasses.replace(b["scfg"], eos_ids=(mcfg.text.vocab_size,))  # never sampled: full-length rows
    fns = {"rollout": rollout.make_generate(graphdef, scfg), "assemble": b["assemble"], "train_step": b["train_step"]}
    key = jax.random.PRNGKey(1)
    with jax.set_mesh(mesh):
        t0 = time.perf_counter()
        c, flops, memory = compile_step(fns, state, prompts, scores, args.new_tokens)
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.steps + 1):  # the first one warms up
            roll, t_roll = timed(c["rollout"], state.params, prompts, key)
            out = {k: roll[k] for k in ("tokens", "completion_mask", "logp")}
            batch = c["assemble"](prompts, out, *scores)
            (state, _), t_upd = timed(c["train_step"], state, batch)
            times.append((t_roll, t_upd))
        peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        fb_s, logp = policy_forward_backward(graphdef, cfg, state.params, batch)
    r_s, u_s = (float(np.median([t[i] for t in times[1:]])) for i in (0, 1))
    L, T = batch.inputs["prompt_ids"].shape[1] + args.new_tokens, args.new_tokens
    res = {
        "device_kind": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "params": n_params,
        "shapes": shapes,
        "compile_s": compile_s,
        "rollout_s": r_s,
        "update_s": u_s,
        "step_s": r_s + u_s,
        "rollout_tokens_per_s": rows * T / r_s,
        "update_tokens_per_s": rows * L / u_s,
        "forward_backward_s": fb_s,
        "flops": flops,
        "memory_analysis": memory,
        "peak_bytes_in_use": peak,
    }
    dev = devices.find(res["device_kind"])
    if dev is not None:
        n = res["devices"] * dev.bf16_flops
        res |= {
            "mfu_step": (flops["rollout"] + flops["train_step"]) / (res["step_s"] * n),
            "mfu_rollout": flops["rollout"] / (r_s * n),
            "mfu_update": flops["train_step"] / (u_s * n),
        }
    export(graphdef, state.params, batch, logp, shapes, pixels, workdir)
    return res | {"tensorflow_imported": "tensorflow" in sys.modules}


def policy_forward_backward(graphdef: Any, cfg: Any, params: Any, batch: Any) -> tuple[float, Any]:
    """(seconds, log-probs [B, T]) of our policy's completion log-probs and their gradient (what transformers does)."""
    import jax
    import jax.numpy as jnp

    from tempr1_jax import policy

    fn = policy.make_policy_fn(graphdef, temperature=1.0, chunk_size=cfg.model.logprob_chunk)

    def loss(p: Any) -> tuple[jax.Array, jax.Array]:
        logp, _ = fn(p, batch.inputs)
        return jnp.sum(jnp.where(batch.completion_mask, logp, 0.0)), logp

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    timed(grad, params)  # compiles
    ((_, logp), _), t = timed(grad, params)
    return t, jax.device_get(logp)


def export(graphdef: Any, params: Any, batch: Any, logp: Any, shapes: dict, pixels: Any, workdir: str) -> None:
    """The weights as an HF directory (export_hf_checkpoint), the inputs and our log-probs, for the torch side."""
    import jax
    import numpy as np
    from flax import nnx

    from tempr1_jax.models.qwen25vl import params as qparams

    model = nnx.merge(graphdef, jax.device_get(params))
    qparams.export_hf_checkpoint(
        model, os.path.join(workdir, "hf"), dtype="float32" if model.cfg.dtype == "float32" else "bfloat16"
    )
    from tempr1_jax import policy

    inp = jax.device_get(batch.inputs) | jax.device_get(policy.full_rows(batch.inputs))
    grid = np.asarray(shapes["video_grid_thw"], np.int64)
    np.savez(
        os.path.join(workdir, "inputs.npz"),
        input_ids=inp["input_ids"],
        attention_mask=inp["attention_mask"],
        position_ids=inp["position_ids"],
        completion_tokens=inp["completion_tokens"],
        logp=np.asarray(logp),
        pixel_values=pixels[: int(np.prod(grid))],
        grid_thw=grid,
        video_token_id=model.cfg.video_token_id,
        prompt_tokens=shapes["prompt_tokens"],
    )


def torch_side(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Part 2: transformers on the exported weights and the same inputs (one warm-up each, then one timed run)."""
    import numpy as np
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x = dict(np.load(os.path.join(workdir, "inputs.npz")))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(os.path.join(workdir, "hf")).to(dev)
    rows, G, T, L = x["input_ids"].shape[0], args.group, x["completion_tokens"].shape[1], int(x["prompt_tokens"])
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
    video = dict(
        pixel_values_videos=t(x["pixel_values"]).to(model.dtype).repeat(rows, 1),
        video_grid_thw=t(np.tile(x["grid_thw"], (rows, 1))),
        second_per_grid_ts=t(np.ones(rows, np.float32)),
    )
    ids = x["input_ids"]
    kw = dict(
        input_ids=t(ids),
        attention_mask=t(x["attention_mask"]),
        position_ids=t(x["position_ids"].transpose(1, 0, 2)).long(),
        mm_token_type_ids=t(np.where(ids == int(x["video_token_id"]), 2, 0)),
        **video,
    )
    target = t(x["completion_tokens"]).long()
    checkpointing = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    checkpointing()  # the recipe's full remat (transformers 5 renamed gradient_checkpointing_*)

    def forward_backward() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        logits = model(**kw, logits_to_keep=T + 1).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
        logp.sum().backward()
        return logp.detach()

    def sync() -> float:
        if dev == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    forward_backward()
    t0 = sync()
    logp = forward_backward()
    fb_s = sync() - t0
    (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
    model.zero_grad(set_to_none=True)
    first = slice(0, rows, G)  # one row per prompt
    gen = dict(
        input_ids=t(ids[first, :L]),
        attention_mask=t(x["attention_mask"][first, :L]),
        pixel_values_videos=video["pixel_values_videos"][: rows // G * int(np.prod(x["grid_thw"]))],
        video_grid_thw=video["video_grid_thw"][first],
        second_per_grid_ts=video["second_per_grid_ts"][first],
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        num_return_sequences=G,
    )
    with torch.no_grad():
        model.generate(**gen, max_new_tokens=4, min_new_tokens=4)
        t0 = sync()
        model.generate(**gen, max_new_tokens=T, min_new_tokens=T)
        gen_s = sync() - t0
    peak = torch.cuda.max_memory_allocated() if dev == "cuda" else None
    diff = float(np.max(np.abs(logp.cpu().numpy() - x["logp"])))
    return {
        "torch": torch.__version__,
        "device": dev,
        "forward_backward_s": fb_s,
        "generate_s": gen_s,
        "generate_tokens_per_s": rows * T / gen_s,
        "logp_max_abs_diff": diff,
        "peak_bytes_allocated": peak,
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def planner_side(args: argparse.Namespace, ours: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Part 3: ``python -m tempr1_jax.plan`` on this config and device count (simulated CPU devices)."""
    out = os.path.join(workdir, "plan.json")
    cmd = [
        sys.executable,
        "-m",
        "tempr1_jax.plan",
        *config_args(args),
        "--devices",
        str(ours["devices"]),
        "--suggest",
        "0",
        "--output",
        out,
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    if r.returncode not in (0, 3) or not os.path.isfile(out):
        raise RuntimeError(f"the planner failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}")
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")  # JAX's GPU default, 0.75, leaves a quarter unused
    return env


def run_side(side: str, argv: list[str], workdir: str) -> dict[str, Any]:
    """One side in its own process (it owns the device until it exits); its figures from <workdir>/<side>.json."""
    r = subprocess.run([sys.executable, __file__, *argv, "--side", side, "--workdir", workdir], env=child_env())
    if r.returncode:
        raise RuntimeError(f"the {side} side failed (exit {r.returncode})")
    with open(os.path.join(workdir, f"{side}.json"), encoding="utf-8") as f:
        return json.load(f)


def summary(res: dict[str, Any]) -> str:
    """The printed table: ours, transformers and their ratio; memory beside the planner's estimate."""
    o, h, p = res["ours"], res.get("transformers"), res.get("plan")
    s = o["shapes"]
    lines = [
        f"device: {o['devices']} x {o['device_kind']}, jax {o['jax']}" + (f", torch {h['torch']}" if h else ""),
        f"model: random {res['preset']} ({o['params'] / 1e9:.2f} B params); {s['prompts']} prompt(s) x G "
        f"{res['group']}, prompt {s['prompt_tokens']} tokens with a video of {s['video_tokens']} tokens "
        f"(grid {tuple(s['video_grid_thw'])}), {res['new_tokens']} new tokens; compile {o['compile_s']:.1f} s",
        f"ours: rollout {o['rollout_s']:.3f} s ({o['rollout_tokens_per_s']:.0f} new tokens/s), update "
        f"{o['update_s']:.3f} s ({o['update_tokens_per_s']:.0f} tokens/s), GRPO step {o['step_s']:.3f} s",
    ]
    if "mfu_step" in o:
        lines.append(
            f"MFU (matmul FLOPs / time / bf16 peak): step {o['mfu_step']:.1%}, rollout "
            f"{o['mfu_rollout']:.1%}, update {o['mfu_update']:.1%}"
        )
    gib = lambda b: "n/a" if b is None else f"{b / 2**30:.2f} GiB"  # noqa: E731
    device_est = max(
        m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"] for m in o["memory_analysis"].values()
    )
    mem = (
        f"peak memory: measured {gib(o['peak_bytes_in_use'])} (memory_stats), this device's compiler's largest "
        f"program {gib(device_est)} (memory_analysis)"
    )
    if p:
        mem += f", planner (XLA:CPU, whole state) {gib(p['peak_bytes'])}"
    lines.append(mem)
    if h:
        lines += [
            f"transformers ({h['device']}): generate {h['generate_s']:.3f} s ({h['generate_tokens_per_s']:.0f} "
            f"new tokens/s), forward + backward {h['forward_backward_s']:.3f} s; log-prob max |diff| "
            f"{h['logp_max_abs_diff']:.2e}",
            f"ratio transformers / ours: generate vs rollout {h['generate_s'] / o['rollout_s']:.2f}x, forward + "
            f"backward {h['forward_backward_s'] / o['forward_backward_s']:.2f}x",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.side:
        res = jax_side(args, args.workdir) if args.side == "jax" else torch_side(args, args.workdir)
        with open(os.path.join(args.workdir, f"{args.side}.json"), "w", encoding="utf-8") as f:
            json.dump(res, f)
        return 0
    res: dict[str, Any] = {
        "preset": args.preset,
        "group": args.group,
        "new_tokens": args.new_tokens,
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory() as workdir:
        res["ours"] = run_side("jax", argv, workdir)
        if not args.no_torch:
            res["transformers"] = run_side("torch", argv, workdir)
        if not args.no_plan:
            res["plan"] = planner_side(args, res["ours"], workdir)
    print(summary(res))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
