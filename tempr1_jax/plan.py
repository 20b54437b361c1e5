"""Will it fit, how fast: ``python -m tempr1_jax.plan --config configs/NAME.py[:ARG] [--config.a.b=v ...] --devices N
[--device-kind KIND] [--output FILE] [--no-suggest]`` (docs/planner.md).

Compiles one GRPO step of a config ahead of time on N simulated CPU devices, nothing allocated and nothing read
(no weights, no data): the mesh the config asks for, the abstract params and optimizer state (``jax.eval_shape``;
shapes from ``model.path``'s config.json when it is a local directory, else ``model.preset``, else
``model.plan_preset``), and the largest shapes the config allows (its largest prompt and vision buckets, a video of
``data.max_frames`` 720p frames at the visual budget, ``rollout.max_new_tokens`` new tokens). Each program of a
step goes through the trainer's own functions and shardings:

    rollout      rollout.make_generate: prefill of the prompts with their video, the G-row KV cache, the decode
                 loop to max_new_tokens
    assemble     policy.assemble (setup.step_functions), the rollout -> the TrainBatch
    train_step   trainer.make_train_step (setup.step_functions) with its micro-batches; it holds the reference
                 log-probs when grpo.beta > 0

and the trainer's config checks run against the mesh (batch sizes, buckets, the attention choice). Printed per
device: exact bytes of params, optimizer state, reference params and KV cache (shapes and shardings); per program
the compiled memory (``memory_analysis``) and the FLOPs; for a device kind, the verdict against its HBM and a
roofline lower bound of the step time (``tempr1_jax.devices``). When it does not fit, a few existing options are
compiled to say which ones make it fit.

FLOPs and bytes are counted on the program's jaxpr with every ``lax.scan`` body multiplied by its length and the
decode ``while_loop`` by max_new_tokens (XLA's ``cost_analysis`` counts a loop body once). Memory comes from XLA:CPU,
whose fusion and buffer assignment differ from TPU's and GPU's: the compiled figures are estimates.

Exit status: 0 it fits (or no --device-kind), 3 it does not fit the device kind, 2 a bad command line or config
(the trainer's own message).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.extend.core as jcore
import ml_collections
import numpy as np

from data_pipeline import stream as data_stream
from data_pipeline import vision as qpre
from tempr1_jax import configlib, devices, grpo, policy, rollout, setup, sharding, trainer

DOES_NOT_FIT = 3  # exit status when the step does not fit the device kind
SOURCE_HW = (720, 1280)  # the stand-in video's frames (16:9, 720p), resized by the config's visual budget
ESTIMATE_NOTE = (
    "compiled on XLA:CPU, whose fusion and buffer assignment differ from TPU's and GPU's: the "
    "compiled memory and the step-time bound are estimates"
)
GIB = devices.GIB
# The programs are compiled, never run: XLA:CPU's LLVM optimizations are skipped (a third less compile time for the
# 7B step). Buffer assignment comes before them: the 7B train_step's memory_analysis is the same byte for byte.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


# ----------------------------------------------------------------------------------------------------------
# Counting FLOPs and bytes on a jaxpr (loops multiplied out)
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Cost:
    """Work of a program, global (all devices together).

    flops: matmul FLOPs (2 per multiply-add of every dot_general); vector_flops: one per element of the
    elementwise ops and reductions (not at the matrix units' peak); weight_bytes: dot operands read from the
    params (every device reads its tp-share of them); act_bytes: the other dot operands and the dot results.
    """

    flops: float = 0.0
    vector_flops: float = 0.0
    weight_bytes: float = 0.0
    act_bytes: float = 0.0

    def add(self, other: Cost, times: float = 1.0) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + times * getattr(other, f.name))


VIEWS = {
    "convert_element_type",
    "reshape",
    "transpose",
    "squeeze",
    "expand_dims",
    "broadcast_in_dim",
    "slice",
    "dynamic_slice",
    "copy",
    "copy_p",
    "rev",
    "reduce_precision",
}  # ops whose result is still a param's bytes
VECTOR = {
    "add",
    "add_any",
    "sub",
    "mul",
    "div",
    "rem",
    "max",
    "min",
    "neg",
    "abs",
    "sign",
    "floor",
    "ceil",
    "round",
    "exp",
    "exp2",
    "expm1",
    "log",
    "log1p",
    "tanh",
    "logistic",
    "sqrt",
    "rsqrt",
    "cbrt",
    "pow",
    "integer_pow",
    "square",
    "erf",
    "erfc",
    "erf_inv",
    "sin",
    "cos",
    "atan2",
    "select_n",
    "clamp",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "xor",
    "is_finite",
    "nextafter",
}
REDUCTIONS = {
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_and",
    "reduce_or",
    "argmax",
    "argmin",
    "cumsum",
    "cumlogsumexp",
    "cummax",
    "cummin",
    "cumprod",
}


def _size(aval: Any) -> int:
    return int(np.prod(aval.shape)) if hasattr(aval, "shape") else 1


def _nbytes(aval: Any) -> int:
    return _size(aval) * np.dtype(aval.dtype).itemsize if hasattr(aval, "dtype") else 0


def _dot(eqn: Any, weights: set) -> Cost:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    (lc, _), _ = eqn.params["dimension_numbers"]
    k = int(np.prod([lhs.shape[i] for i in lc])) if lc else 1
    c = Cost(flops=2.0 * _size(eqn.outvars[0].aval) * k, act_bytes=_nbytes(eqn.outvars[0].aval))
    for v, aval in zip(eqn.invars[:2], (lhs, rhs), strict=True):
        if not isinstance(v, jcore.Literal) and v in weights:
            c.weight_bytes += _nbytes(aval)
        else:
            c.act_bytes += _nbytes(aval)
    return c


def _sub(jaxpr: Any, weights_in: Sequence[bool], trips: int) -> tuple[Cost, Cost, list[bool]]:
    """(cost outside while loops, cost inside them, which outputs are params) of a (closed) sub-jaxpr."""
    closed = jaxpr if isinstance(jaxpr, jcore.ClosedJaxpr) else jcore.ClosedJaxpr(jaxpr, ())
    return jaxpr_cost(closed, weights_in, while_trips=trips)


def _call(eqn: Any, weights: set, trips: int) -> tuple[Cost, Cost, list[bool]] | None:
    """The cost of an eqn that calls sub-jaxprs (scan, while, cond, pjit, remat, custom_*), else None."""
    p, name = eqn.params, eqn.primitive.name
    w = [not isinstance(v, jcore.Literal) and v in weights for v in eqn.invars]
    if name == "scan":
        main, loops, wout = _sub(p["jaxpr"], w, trips)
        n = int(p["length"])
        scaled_main, scaled_loops = Cost(), Cost()
        scaled_main.add(main, n)
        scaled_loops.add(loops, n)
        return scaled_main, scaled_loops, [False] * p["num_carry"] + [False] * (len(eqn.outvars) - p["num_carry"])
    if name == "while":
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        body_w = w[cn : cn + bn] + w[cn + bn :]
        main, loops, _ = _sub(p["body_jaxpr"], body_w, trips)
        inside = Cost()
        inside.add(main, trips)
        inside.add(loops, trips)
        return Cost(), inside, [False] * len(eqn.outvars)
    if name == "cond":
        costs = [_sub(b, w[1:], trips) for b in p["branches"]]
        main, loops, _ = max(costs, key=lambda c: c[0].flops + c[1].flops)
        return main, loops, [False] * len(eqn.outvars)
    inner = next((p[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in p), None)
    if inner is None:
        return None
    return _sub(inner, w, trips)


def jaxpr_cost(closed: Any, weights_in: Sequence[bool], *, while_trips: int = 1) -> tuple[Cost, Cost, list[bool]]:
    """(work outside while loops, work inside them, which outputs are params) of a ClosedJaxpr.

    weights_in: per input, whether it is a param (dot operands derived from it through ``VIEWS`` ops count as
    weight bytes). Scan bodies count ``length`` times, while bodies ``while_trips`` times (the decode loop runs
    at most max_new_tokens steps), cond the costlier branch.
    """
    jaxpr = closed.jaxpr
    weights = {v for v, w in zip(jaxpr.invars, weights_in, strict=True) if w}
    main, loops = Cost(), Cost()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            main.add(_dot(eqn, weights))
            continue
        called = _call(eqn, weights, while_trips)
        if called is not None:
            m, lp, wout = called
            main.add(m)
            loops.add(lp)
            weights |= {v for v, w in zip(eqn.outvars, wout, strict=False) if w}
        elif name in VECTOR:
            main.vector_flops += _size(eqn.outvars[0].aval)
        elif name in REDUCTIONS:
            main.vector_flops += _size(eqn.invars[0].aval)
        if name in VIEWS and eqn.invars and not isinstance(eqn.invars[0], jcore.Literal) and eqn.invars[0] in weights:
            weights.add(eqn.outvars[0])
    wout = [not isinstance(v, jcore.Literal) and v in weights for v in jaxpr.outvars]
    return main, loops, wout


def roofline_seconds(main: Cost, loops: Cost, n_devices: int, tp: int, device: devices.Device) -> float:
    """Lower bound of a program's time on ``device``: per part (outside / inside the while loops), the larger of
    its matmul FLOPs at peak and its dot bytes at HBM bandwidth, the work split evenly over the devices (each
    reads its tp-share of the weights). Communication, vector work and launch overheads are left out."""

    def part(c: Cost) -> float:
        flops = c.flops / n_devices
        nbytes = c.weight_bytes / tp + c.act_bytes / n_devices
        return max(flops / device.bf16_flops, nbytes / device.hbm_bandwidth)

    return part(main) + part(loops)


# ----------------------------------------------------------------------------------------------------------
# Shapes: the model, the stand-in prompt, bytes from shardings
# ----------------------------------------------------------------------------------------------------------


def planning_config(cfg: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, str]:
    """(the config the model config is built from, where its shapes come from). A local ``model.path`` with a
    config.json is read; otherwise (a gs:// URL, a path on the workers) ``model.preset``, else
    ``model.plan_preset`` (set by configs/tempr1_{3b,7b}.py) names the preset whose shapes are planned."""
    m = cfg.model
    if m.path and os.path.isfile(os.path.join(m.path, "config.json")):
        return cfg, f"{m.path}/config.json"
    preset = m.preset or m.get("plan_preset", "")
    if not preset:
        where = f"config.model.path={m.path!r} is not a local directory with a config.json and " if m.path else ""
        raise ValueError(f"{where}config.model.preset and config.model.plan_preset are empty: no model shapes to plan")
    c = ml_collections.ConfigDict(cfg.to_dict())
    c.model.path, c.model.preset = None, preset
    return c, f"preset {preset}" + (f" (config.model.path={m.path} is not read here)" if m.path else "")


def stand_in_video(data: ml_collections.ConfigDict, vision_bucket: int) -> tuple[int, int, int]:
    """grid (t, h, w) in patches of the longest video the data config admits: up to ``data.max_frames`` frames of
    720p resized by the visual budget (Qwen's rule, data_pipeline.vision, as the stream does), as many as the
    largest vision bucket holds."""
    for n in range(int(data.max_frames), 0, -1):
        h, w = qpre.video_resize_target(
            n,
            *SOURCE_HW,
            min_pixels=int(data.min_pixels),
            max_pixels=int(data.max_pixels),
            total_pixels=int(data.total_pixels),
        )
        grid = (-(-n // qpre.TEMPORAL_PATCH_SIZE), h // qpre.PATCH_SIZE, w // qpre.PATCH_SIZE)
        if math.prod(grid) <= vision_bucket:
            return grid
    raise ValueError(
        f"config.data.vision_buckets: the largest, {vision_bucket} patches, holds no video at the "
        "visual budget (config.data.min_pixels)"
    )


def stand_in_batch(mcfg: Any, length: int, grid: tuple[int, int, int], fps: float) -> data_stream.Batch:
    """One prompt of ``length`` real tokens holding the video's pads (a data_pipeline.stream Batch of one row)."""
    n_vid = qpre.num_video_tokens(grid)
    if n_vid + 2 + 16 > length:
        raise ValueError(
            f"config.data.prompt_buckets: the largest, {length} tokens, cannot hold the {n_vid} "
            "video tokens of the longest video (raise it or lower the visual budget)"
        )
    ids = np.zeros((1, length), np.int32)
    ids[0, 16] = mcfg.vision_start_token_id
    ids[0, 17 : 17 + n_vid] = mcfg.video_token_id
    ids[0, 17 + n_vid] = mcfg.vision_end_token_id
    one = lambda v, dt: np.full((1,), v, dt)  # noqa: E731
    pixels = np.zeros((1, math.prod(grid), qpre.PATCH_DIM), np.float32)
    return data_stream.Batch(
        input_ids=ids, attention_mask=np.ones_like(ids), pixel_values=pixels,
        pixel_mask=np.ones(pixels.shape[:2], bool), grid_thw=np.asarray([grid], np.int32),
        second_per_grid_ts=one(qpre.TEMPORAL_PATCH_SIZE / fps, np.float32), num_video_tokens=one(n_vid, np.int32),
        sample_mask=one(True, bool), segments=np.zeros((1, 1, 2), np.float32), segments_mask=np.ones((1, 1), bool),
        duration=one(1.0, np.float32), task_id=one(0, np.int32), answer=one(-1, np.int32), id=one(b"plan", object),
        task=one(b"tg", object), video=one(b"plan", object), sample_json=one(b"{}", object),
        position=one(0, np.int64), index=one(0, np.int64),
    )  # fmt: skip


def _device_dtype(dtype: Any) -> np.dtype:
    return {np.dtype(np.int64): np.dtype(np.int32), np.dtype(np.float64): np.dtype(np.float32)}.get(
        np.dtype(dtype), np.dtype(dtype)
    )


def abstract_prompts(cfg: ml_collections.ConfigDict, mcfg: Any, mesh: jax.sharding.Mesh) -> tuple[dict, dict]:
    """(the rollout's prompt inputs for ``train.prompts_per_step`` stand-in prompts as ShapeDtypeStructs on the
    batch sharding, their shapes for the report); built by policy.prompt_inputs on one prompt."""
    vision_buckets, prompt_buckets = data_stream.check_buckets(cfg.data, "config.data")
    grid = stand_in_video(cfg.data, vision_buckets[-1])
    batch = stand_in_batch(mcfg, prompt_buckets[-1], grid, float(cfg.data.fps))
    p, b, f = (int(v) for v in cfg.model.vision_multiples)
    sizer = policy.VisionSizer(mcfg, patch_multiple=p, block_multiple=b, frame_multiple=f)
    one = policy.prompt_inputs(mcfg, batch, sizer)
    n, batch_sh = int(cfg.train.prompts_per_step), sharding.batch_sharding(mesh)
    prompts = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((n, *x.shape[1:]), _device_dtype(x.dtype), sharding=batch_sh), one
    )
    sizes = dataclasses.asdict(next(iter(sizer.sizes.values())))
    shapes = {
        "prompts": n,
        "prompt_tokens": prompt_buckets[-1],
        "video_grid_thw": list(grid),
        "video_tokens": qpre.num_video_tokens(grid),
        "vision_sizes": sizes,
    }
    return prompts, shapes


def device_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of arrays / ShapeDtypeStructs with shardings (the largest shard)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shard = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
        total += int(np.prod(shard)) * np.dtype(x.dtype).itemsize
    return total


def kv_cache_bytes(mcfg: Any, rows: int, length: int, mesh: jax.sharding.Mesh) -> int:
    """Per device: the rollout's KV cache (k and v [layers, rows, length, kv heads, head dim] in the compute
    dtype, its valid mask) with the rows split over the batch shards, as the model's shard_batch asks."""
    t = mcfg.text
    shards = sharding.batch_shards(mesh)
    per_row = 2 * t.num_hidden_layers * length * t.num_key_value_heads * t.head_dim
    per_row = per_row * np.dtype(mcfg.dtype).itemsize + length
    return per_row * (rows // shards if rows % shards == 0 else rows)


# ----------------------------------------------------------------------------------------------------------
# Programs
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Program:
    """One compiled program of the step, per device (bytes, FLOPs) unless said otherwise."""

    name: str
    lower_s: float
    compile_s: float
    memory: dict[str, int]  # memory_analysis: arguments, outputs, aliased, temporaries, generated_code
    live_outside: int  # bytes on the device while it runs that are not its arguments (the rest of the state)
    main: Cost  # global work outside while loops
    loops: Cost  # global work inside while loops (the decode loop)
    xla_flops: float  # cost_analysis()["flops"] of the compiled program: every loop body once

    @property
    def peak_bytes(self) -> int:
        m = self.memory
        return m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"] + self.live_outside

    @property
    def flops(self) -> float:
        return self.main.flops + self.loops.flops


def _memory(compiled: Any) -> dict[str, int]:
    m = compiled.memory_analysis()
    return {
        "arguments": int(m.argument_size_in_bytes),
        "outputs": int(m.output_size_in_bytes),
        "aliased": int(m.alias_size_in_bytes),
        "temporaries": int(m.temp_size_in_bytes),
        "generated_code": int(m.generated_code_size_in_bytes),
    }


def _xla_flops(compiled: Any) -> float:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, list | tuple) else ca
    return float((ca or {}).get("flops", 0.0))


def compile_program(
    name: str, fn: Any, args: tuple, weights: Any, *, while_trips: int = 1, live_outside: int = 0
) -> tuple[Program, Any]:
    """Trace, lower and compile the jitted ``fn`` on abstract ``args``; ``weights`` is a tree of bools with the
    structure of ``args`` (True: a param). Returns (its Program, the compiled executable)."""
    t0 = time.perf_counter()
    traced = fn.trace(*args)
    lowered = traced.lower()
    t1 = time.perf_counter()
    compiled = lowered.compile(compiler_options=COMPILER_OPTIONS)
    t2 = time.perf_counter()
    main, loops, _ = jaxpr_cost(traced.jaxpr, jax.tree.leaves(weights), while_trips=while_trips)
    program = Program(name, t1 - t0, t2 - t1, _memory(compiled), live_outside, main, loops, _xla_flops(compiled))
    return program, compiled


def _flags(tree: Any, value: bool) -> Any:
    return jax.tree.map(lambda _: value, tree)


@dataclasses.dataclass
class Plan:
    """What ``plan`` found: per-device bytes, the compiled programs, the shapes they were compiled at."""

    config: dict[str, Any]  # mesh, model source, parameter count
    shapes: dict[str, Any]
    bytes: dict[str, int]  # per device: params, opt_state, ref_params, kv_cache, state
    programs: list[Program]
    tp: int
    n_devices: int

    @property
    def peak_bytes(self) -> int:
        return max(p.peak_bytes for p in self.programs)

    def seconds(self, device: devices.Device) -> dict[str, float]:
        return {p.name: roofline_seconds(p.main, p.loops, self.n_devices, self.tp, device) for p in self.programs}


def build(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The trainer's pieces for ``cfg`` on the current devices, abstract: mesh, model config, graphdef, params,
    Optimization, SamplingConfig, assemble / train_step. Runs the trainer's config checks (ValueError)."""
    mesh = sharding.make_mesh(cfg.mesh.to_dict())
    gcfg = grpo.GRPOConfig.from_mapping(cfg.grpo.to_dict())
    setup.check_batch_sizes(cfg, mesh)
    data_stream.check_buckets(cfg.data, "config.data")
    model_cfg, source = planning_config(cfg)
    mcfg = setup.with_lora(cfg, setup.model_config(model_cfg, None))  # model.lora: the adapters' shapes too
    graphdef, params = setup.abstract_params(mcfg, mesh)
    specs = jax.tree.map(lambda x: x.sharding.spec, params)
    updates = max(1, int(cfg.train.total_steps or 1), int(cfg.optimizer.warmup_steps)) * gcfg.num_iterations
    opt = setup.optimization(cfg, params, specs, mesh, updates)
    ids = types.SimpleNamespace(eos_token_id=mcfg.eos_token_id[0], pad_token_id=mcfg.pad_token_id)
    scfg = rollout.sampling_config(cfg.rollout, gcfg.num_generations, mcfg.eos_token_id, ids)
    assemble, train_step = setup.step_functions(cfg, graphdef, gcfg, mesh, opt, scfg.pad_id)
    return dict(
        mesh=mesh,
        gcfg=gcfg,
        mcfg=mcfg,
        source=source,
        graphdef=graphdef,
        opt=opt,
        scfg=scfg,
        assemble=assemble,
        train_step=train_step,
    )


def plan(cfg: ml_collections.ConfigDict) -> Plan:
    """Compile one step of ``cfg`` (rollout, assemble, train_step) on the current (simulated) devices."""
    b = build(cfg)
    mesh, gcfg, mcfg, opt, scfg = b["mesh"], b["gcfg"], b["mcfg"], b["opt"], b["scfg"]
    prompts, shapes = abstract_prompts(cfg, mcfg, mesh)
    state = trainer.abstract_state(opt.state_shape, opt.state_sharding)
    batch_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    rows, T = int(cfg.train.prompts_per_step) * gcfg.num_generations, scfg.max_new_tokens
    shapes |= {
        "rows": rows,
        "group_size": gcfg.num_generations,
        "new_tokens": T,
        "micro_batches": int(cfg.train.micro_batches),
    }
    state_bytes = device_bytes(state)
    with jax.set_mesh(mesh):
        rng = jax.ShapeDtypeStruct((2,), np.uint32, sharding=repl)
        roll, c_roll = compile_program(
            "rollout",
            rollout.make_generate(b["graphdef"], scfg),
            (state.params, prompts, rng),
            (_flags(state.params, True), _flags(prompts, False), False),
            while_trips=T,
            live_outside=state_bytes - device_bytes(state.params),
        )
        out = {k: c_roll.out_info[k] for k in ("tokens", "completion_mask", "logp")}
        scores = (
            jax.ShapeDtypeStruct((rows,), np.float32, sharding=batch_sh),
            jax.ShapeDtypeStruct((int(cfg.train.prompts_per_step),), np.bool_, sharding=batch_sh),
        )
        asm, c_asm = compile_program(
            "assemble",
            b["assemble"],
            (prompts, out, *scores),
            _flags((prompts, out, *scores), False),
            live_outside=state_bytes,
        )
        weights = state.replace(
            step=False,
            opt_state=_flags(state.opt_state, False),
            rng=False,
            skipped=False,
            params=_flags(state.params, True),
            ref_params=_flags(state.ref_params, True),
        )
        step, _ = compile_program(
            "train_step",
            b["train_step"],
            (state, c_asm.out_info),
            (weights, _flags(c_asm.out_info, False)),
            live_outside=device_bytes((prompts, out)),
        )
    t = mcfg.text
    n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))
    config = {
        "mesh": dict(mesh.shape),
        "model": b["source"],
        "params": n_params,
        "layers": t.num_hidden_layers,
        "hidden": t.hidden_size,
        "beta": gcfg.beta,
        "remat": mcfg.remat,
        "freeze_vision": bool(cfg.model.freeze_vision),
        "dtype": mcfg.dtype,
        "param_dtype": mcfg.param_dtype,
    }
    nbytes = {
        "params": device_bytes(state.params),
        "opt_state": device_bytes(state.opt_state),
        "ref_params": device_bytes(state.ref_params),
        "state": state_bytes,
        "kv_cache": kv_cache_bytes(mcfg, rows, shapes["prompt_tokens"] + T, mesh),
    }
    return Plan(config, shapes, nbytes, [roll, asm, step], int(mesh.shape["tp"]), mesh.size)


# ----------------------------------------------------------------------------------------------------------
# Verdicts and the options that make a step fit
# ----------------------------------------------------------------------------------------------------------


def with_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of ``cfg`` with dotted keys set (``{"grpo.beta": 0.0}``)."""
    c = ml_collections.ConfigDict(cfg.to_dict())
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = c
        for p in path:
            node = node[p]
        node[last] = value
    return c


def options(cfg: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """The existing options that lower the step's memory and change ``cfg``, cheapest for the recipe first: the
    whole mesh as fsdp, a frozen vision tower, twice the micro-batches, full remat, no reference model, half the
    frames (and visual budget), the largest prompt bucket dropped."""
    d, out = cfg.data, []
    if dict(cfg.mesh) != {"data": 1, "fsdp": -1, "tp": 1}:
        out.append({"mesh.data": 1, "mesh.fsdp": -1, "mesh.tp": 1})
    if not cfg.model.freeze_vision:
        out.append({"model.freeze_vision": True})
    out.append({"train.micro_batches": 2 * int(cfg.train.micro_batches)})
    if cfg.model.remat != "full":
        out.append({"model.remat": "full"})
    if cfg.grpo.beta > 0:
        out.append({"grpo.beta": 0.0})
    if int(d.max_frames) > 2:
        out.append({"data.max_frames": int(d.max_frames) // 2, "data.total_pixels": int(d.total_pixels) // 2})
    if len(d.prompt_buckets) > 1:
        out.append({"data.prompt_buckets": tuple(sorted(int(b) for b in d.prompt_buckets)[:-1])})
    return out


def _try(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any], device: devices.Device) -> dict[str, Any]:
    """Plan ``cfg`` with ``overrides``: {"overrides", "peak_bytes", "fits"} or {"overrides", "error"}."""
    try:
        p = plan(with_overrides(cfg, overrides))
    except ValueError as e:
        return {"overrides": dict(overrides), "error": str(e)}
    return {"overrides": dict(overrides), "peak_bytes": p.peak_bytes, "fits": p.peak_bytes <= device.hbm_bytes}


def suggest(
    cfg: ml_collections.ConfigDict,
    device: devices.Device,
    max_compiles: int,
    log: Callable[[str], None] = lambda s: None,
) -> list[dict[str, Any]]:
    """Compile the options one at a time, then (when none fits alone) added up in order until one fits, at most
    ``max_compiles`` plans. Returns every tried variant, in order."""
    tried: list[dict[str, Any]] = []
    opts = options(cfg)
    for o in opts:
        if len(tried) >= max_compiles:
            return tried
        tried.append(_try(cfg, o, device))
        log(_variant_line(tried[-1], device))
    if any(t.get("fits") for t in tried):
        return tried
    combined: dict[str, Any] = {}
    for o, t in zip(opts, tried, strict=False):
        if "error" in t:
            continue
        combined |= o
        if len(combined) == len(o) or len(tried) >= max_compiles:
            continue
        tried.append(_try(cfg, combined, device))
        log(_variant_line(tried[-1], device))
        if tried[-1].get("fits"):
            break
    return tried


def _flag(key: str, value: Any) -> str:
    return f"--config.{key}={value!r}" if isinstance(value, str | tuple) else f"--config.{key}={value}"


def _variant_line(t: Mapping[str, Any], device: devices.Device) -> str:
    flags = " ".join(_flag(k, v) for k, v in t["overrides"].items())
    if "error" in t:
        return f"  {flags}: {t['error']}"
    verdict = "fits" if t["fits"] else "does not fit"
    return f"  {flags}: peak {t['peak_bytes'] / GIB:.1f} GiB, {verdict} in {device.hbm_bytes / GIB:.0f} GiB"


# ----------------------------------------------------------------------------------------------------------
# Report and command line
# ----------------------------------------------------------------------------------------------------------


def report(p: Plan, device: devices.Device | None) -> dict[str, Any]:
    """The plan as JSON-able data (``--output``): bytes per device, programs, verdict and bound for ``device``."""
    programs = {
        q.name: {
            **q.memory,
            "live_outside": q.live_outside,
            "peak": q.peak_bytes,
            "flops": q.flops,
            "flops_per_device": q.flops / p.n_devices,
            "vector_flops": q.main.vector_flops + q.loops.vector_flops,
            "xla_cost_analysis_flops": q.xla_flops,
            "lower_s": q.lower_s,
            "compile_s": q.compile_s,
            "loop_flops": q.loops.flops,
        }
        for q in p.programs
    }
    kinds = {
        d.name: {
            "fits": p.peak_bytes <= d.hbm_bytes,
            "hbm_bytes": d.hbm_bytes,
            "step_seconds_lower_bound": sum(p.seconds(d).values()),
        }
        for d in devices.DEVICES
    }
    out: dict[str, Any] = {
        "config": p.config,
        "devices": p.n_devices,
        "shapes": p.shapes,
        "bytes_per_device": p.bytes,
        "programs": programs,
        "peak_bytes": p.peak_bytes,
        "step_flops": sum(q.flops for q in p.programs),
        "device_kinds": kinds,
        "note": ESTIMATE_NOTE,
    }
    if device is not None:
        secs = p.seconds(device)
        out["device"] = {
            "name": device.name,
            "label": device.label,
            "hbm_bytes": device.hbm_bytes,
            "bf16_flops": device.bf16_flops,
            "hbm_bandwidth": device.hbm_bandwidth,
            "source": device.source,
        }
        out["fits"] = p.peak_bytes <= device.hbm_bytes
        out["step_seconds_lower_bound"] = sum(secs.values())
        out["program_seconds_lower_bound"] = secs
    return out


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def format_report(r: Mapping[str, Any]) -> str:
    """The printed report (per device, GiB = 2^30 bytes)."""
    c, s, b = r["config"], r["shapes"], r["bytes_per_device"]
    mesh = " ".join(f"{k}={v}" for k, v in c["mesh"].items())
    lines = [
        f"model: {c['model']}, {c['params'] / 1e9:.2f} B params ({c['param_dtype']} params, {c['dtype']} compute, "
        f"remat {c['remat']}, beta {c['beta']}, freeze_vision {c['freeze_vision']})",
        f"mesh: {mesh} over {r['devices']} simulated devices",
        f"shapes: {s['prompts']} prompts x G {s['group_size']} = {s['rows']} rows; prompt {s['prompt_tokens']} tokens "
        f"with a video of grid {tuple(s['video_grid_thw'])} ({s['video_tokens']} tokens); {s['new_tokens']} new "
        f"tokens; micro_batches {s['micro_batches']}",
        "per device (GiB): params "
        + _gib(b["params"])
        + ", optimizer state "
        + _gib(b["opt_state"])
        + ", reference params "
        + _gib(b["ref_params"])
        + ", train state "
        + _gib(b["state"])
        + ", KV cache "
        + _gib(b["kv_cache"]),
        f"{'program':<11}{'args':>8}{'out':>8}{'alias':>8}{'temp':>8}{'code':>8}{'other':>8}{'peak':>8}"
        f"{'TFLOP/dev':>11}{'XLA TF/dev':>11}{'compile s':>10}",
    ]
    for name, q in r["programs"].items():
        lines.append(
            f"{name:<11}{_gib(q['arguments']):>8}{_gib(q['outputs']):>8}{_gib(q['aliased']):>8}"
            f"{_gib(q['temporaries']):>8}{_gib(q['generated_code']):>8}{_gib(q['live_outside']):>8}"
            f"{_gib(q['peak']):>8}{q['flops_per_device'] / 1e12:>11.1f}"
            f"{q['xla_cost_analysis_flops'] / 1e12:>11.1f}{q['lower_s'] + q['compile_s']:>10.1f}"
        )
    worst = max(r["programs"], key=lambda k: r["programs"][k]["peak"])
    lines.append(
        f"peak per device: {_gib(r['peak_bytes'])} GiB ({worst}); step: {r['step_flops'] / 1e15:.1f} PFLOP "
        "(matmuls, all devices; XLA TF/dev: its cost_analysis, every loop body once)"
    )
    if "device" in r:
        d = r["device"]
        margin = (d["hbm_bytes"] - r["peak_bytes"]) / GIB
        verdict = "fits" if r["fits"] else "does not fit"
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in r["program_seconds_lower_bound"].items())
        lines.append(
            f"{d['label']}: {verdict} in {d['hbm_bytes'] / GIB:.0f} GiB ({margin:+.1f} GiB left); step time "
            f">= {r['step_seconds_lower_bound']:.2f} s ({parts}) at {d['bf16_flops'] / 1e12:.0f} TFLOP/s "
            f"bf16, {d['hbm_bandwidth'] / 1e12:.2f} TB/s"
        )
    lines.append(f"note: {r['note']}")
    return "\n".join(lines)


def simulate_devices(n: int) -> None:
    """``n`` CPU devices stand in for the accelerators; must run before JAX starts its backends."""
    if n < 1:
        raise ValueError(f"--devices {n}: must be >= 1")
    os.environ["JAX_PLATFORMS"] = "cpu"
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    try:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # JAX already started (a test calling main in-process): only the same devices will do
        pass
    if jax.default_backend() != "cpu" or jax.device_count() != n:
        raise ValueError(
            f"--devices {n}: JAX already started with {jax.device_count()} {jax.default_backend()} "
            "device(s) in this process; run the planner in a fresh process"
        )


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(
        prog="python -m tempr1_jax.plan",
        allow_abbrev=False,
        description="Compile one GRPO step of a config on N simulated devices: memory per device, FLOPs, a "
        "verdict and a step-time bound for a device kind (docs/planner.md). Exit status 0: fits (or no "
        f"--device-kind), {DOES_NOT_FIT}: does not fit, 2: bad command line or config.",
    )
    ap.add_argument(
        "--config",
        required=True,
        help="configs/NAME.py[:ARG], as for python -m tempr1_jax.train; --config.KEY=VALUE overrides pass through",
    )
    ap.add_argument("--devices", type=int, required=True, help="devices (chips / GPUs) of the target machine")
    ap.add_argument(
        "--device-kind",
        default="",
        help="short name ("
        + ", ".join(d.name for d in devices.DEVICES)
        + ") or jax device_kind string ('TPU v4', 'TPU v5 lite', 'NVIDIA H100 80GB HBM3', ...)",
    )
    ap.add_argument("--output", default="", help="write the report as JSON to this file")
    ap.add_argument(
        "--suggest",
        type=int,
        default=8,
        help="when it does not fit: at most this many variant "
        "plans of the existing options (0: none; default %(default)s)",
    )
    return ap.parse_known_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args, rest = parse_args(argv[1:])
    try:
        device = devices.lookup(args.device_kind) if args.device_kind else None
        simulate_devices(args.devices)
        cfg = configlib.parse_flags([argv[0], f"--config={args.config}", *rest]).config
        t0 = time.perf_counter()
        p = plan(cfg)
    except ValueError as e:  # configlib.ConfigError included: the trainer's own messages
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = report(p, device) | {"plan_seconds": time.perf_counter() - t0}
    print(format_report(r), flush=True)
    if device is not None and not r["fits"] and args.suggest > 0:
        print(f"options (each compiled; at most {args.suggest}):", flush=True)
        r["suggestions"] = suggest(cfg, device, args.suggest, log=lambda s: print(s, flush=True))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(r, f, indent=1)
    return DOES_NOT_FIT if device is not None and not r["fits"] else 0


if __name__ == "__main__":
    sys.exit(main())
