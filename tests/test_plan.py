"""python -m tempr1_jax.plan: exact bytes from shapes and shardings, FLOPs with loops multiplied out (checked against
an unrolled compile), verdicts for every device kind, the trainer's own config errors, the command line and its
exit statuses; slow: the 3B recipe on 8 simulated devices, the whole train_step scanned vs unrolled."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tempr1_jax import configlib, devices, plan, setup
from tempr1_jax.models.qwen25vl import config as qconfig
from tempr1_jax.models.qwen25vl.model import Qwen25VL, token_logprobs_and_entropy

ROOT = Path(__file__).resolve().parents[1]
# The demo's tiny model at the smallest shapes that still hold a video: 2 prompts x G 2, 64-token prompts, 4 new tokens.
SMALL = [
    "--config.train.prompts_per_step=2",
    "--config.grpo.num_generations=2",
    "--config.rollout.max_new_tokens=4",
    "--config.data.prompt_buckets=(64,)",
    "--config.data.max_frames=8",
]


def config(*overrides: str, file: str = "configs/demo.py"):
    return configlib.parse_flags(["plan", f"--config={ROOT / file}", *overrides]).config


@pytest.fixture(scope="module")
def tiny_plan() -> plan.Plan:
    if jax.device_count() != 1:
        pytest.skip("the in-process plans need the test process's single CPU device")
    return plan.plan(config(*SMALL))


def run_plan(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The planner in a fresh process (the device count is fixed when JAX starts)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tempr1_jax.plan", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_param_count() -> int:
    """The demo model's parameters counted by hand from its sizes (model.py's layout)."""
    m = setup.model_config(config(*SMALL), None)
    t, v = m.text, m.vision
    hq, hkv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    d, i = t.hidden_size, t.intermediate_size
    layer = 2 * d + d * hq + hq + 2 * (d * hkv + hkv) + hq * d + 3 * d * i
    text = t.vocab_size * d + t.num_hidden_layers * layer + d + d * t.vocab_size  # embed, layers, norm, lm_head
    dv, iv = v.hidden_size, v.intermediate_size
    block = 2 * dv + dv * 3 * dv + 3 * dv + dv * dv + dv + 2 * (dv * iv + iv) + iv * dv + dv
    d4 = 4 * dv
    merger = dv + d4 * d4 + d4 + d4 * v.out_hidden_size + v.out_hidden_size
    return text + 1176 * dv + v.depth * block + merger


def test_exact_bytes_equal_a_hand_count(tiny_plan):
    n = tiny_param_count()
    b = tiny_plan.bytes
    assert tiny_plan.config["params"] == n
    assert b["params"] == 4 * n  # float32 params
    assert b["opt_state"] == 2 * 4 * n + 4 + 4  # Adam's two float32 moments, its int32 count, the schedule's count
    assert b["ref_params"] == 4 * n  # beta 0.04: a float32 reference copy
    assert b["state"] == b["params"] + b["opt_state"] + b["ref_params"] + 4 + 4 + 8  # step, skipped, rng
    t = setup.model_config(config(*SMALL), None).text
    rows, length = 2 * 2, 64 + 4
    assert b["kv_cache"] == rows * (2 * t.num_hidden_layers * length * t.num_key_value_heads * t.head_dim * 4 + length)
    s = tiny_plan.shapes
    assert (s["rows"], s["prompt_tokens"], s["new_tokens"], s["video_grid_thw"]) == (4, 64, 4, [4, 2, 2])
    roll, _, step = tiny_plan.programs
    assert roll.memory["arguments"] >= b["params"] and step.memory["aliased"] == b["state"]  # the state is donated
    assert step.peak_bytes == tiny_plan.peak_bytes > b["state"]


def test_a_verdict_and_a_bound_for_each_device_kind(tiny_plan):
    for d in devices.DEVICES:
        r = plan.report(tiny_plan, d)
        assert r["fits"] and r["step_seconds_lower_bound"] > 0 and r["device_kinds"][d.name]["fits"]
        assert f"{d.label}: fits in {d.hbm_bytes / 2**30:.0f} GiB" in plan.format_report(r)
        json.dumps(r)
    small = dataclasses.replace(devices.lookup("v5e"), hbm_bytes=tiny_plan.peak_bytes - 1)
    text = plan.format_report(plan.report(tiny_plan, small))
    assert "TPU v5e: does not fit in 0 GiB" in text and "estimates" in text
    # the decode loop counts max_new_tokens times: the rollout's bound grows with it, XLA's own count does not
    roll = tiny_plan.programs[0]
    assert roll.loops.flops > 0 and roll.flops > roll.xla_flops


def test_device_kinds_by_short_name_and_jax_device_kind():
    kinds = {
        "h100": "h100",
        "NVIDIA H100 80GB HBM3": "h100",
        "NVIDIA H200": "h200",
        "nvidia a100-sxm4-80gb": "a100",
        "TPU v4": "v4",
        "TPU v5 lite": "v5e",
        "TPU v5": "v5p",
        "TPU v5p": "v5p",
        "TPU v6 lite": "v6e",
        "v6e": "v6e",
    }
    for kind, name in kinds.items():
        assert devices.lookup(kind).name == name
    assert devices.peak_bf16_flops("TPU v5 lite") == 197e12 and devices.peak_bf16_flops("cpu") is None
    with pytest.raises(ValueError, match=r"unknown device; known: h100 \('NVIDIA H100 80GB HBM3'\)"):
        devices.lookup("H800")


def _text_loss_cost(scan_layers: bool) -> tuple[float, float, float, int]:
    """(our matmul FLOPs, our vector FLOPs, XLA's count, temp bytes) of a 4-layer tiny decoder's log-prob loss and
    gradient, full remat (the scanned program is counted on its jaxpr: layers multiplied out)."""
    tiny = qconfig.preset("tiny")
    mcfg = tiny.replace(
        text=dataclasses.replace(tiny.text, num_hidden_layers=4), scan_layers=scan_layers, remat="full", dtype="float32"
    )
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Qwen25VL(mcfg, rngs=nnx.Rngs(0))))

    def loss(p, ids, pos):
        m = nnx.merge(graphdef, p)
        return jnp.sum(token_logprobs_and_entropy(m(ids, pos, jnp.ones_like(ids)), m, ids, chunk_size=32)[0])

    args = (params, jax.ShapeDtypeStruct((2, 32), np.int32), jax.ShapeDtypeStruct((3, 2, 32), np.int32))
    traced = jax.jit(jax.value_and_grad(loss)).trace(*args)
    compiled = traced.lower().compile(compiler_options=plan.COMPILER_OPTIONS)
    main, loops, _ = plan.jaxpr_cost(traced.jaxpr, [True] * len(jax.tree.leaves(params)) + [False, False])
    assert loops.flops == 0
    return main.flops, main.vector_flops, plan._xla_flops(compiled), compiled.memory_analysis().temp_size_in_bytes


def test_flops_multiply_the_scanned_layers_out_as_an_unrolled_compile_counts_them():
    flops, vector, xla_scanned, temp_scanned = _text_loss_cost(scan_layers=True)
    flops_u, vector_u, xla_unrolled, temp_unrolled = _text_loss_cost(scan_layers=False)
    assert (flops, vector) == (flops_u, vector_u)  # the count does not depend on how the layers run
    assert flops <= xla_unrolled <= flops + vector  # XLA counts elementwise ops too (transcendentals apart)
    assert xla_scanned < 0.5 * flops  # XLA counts the scanned body once
    # memory needs no multiplying: a scan's residuals are stacked [layers, ...] buffers, counted whole
    assert temp_scanned <= 2 * temp_unrolled


def test_a_config_that_cannot_shard_gets_the_trainers_error():
    r = run_plan("--config", "configs/demo.py", "--devices", "4", "--config.train.prompts_per_step=6")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        "error: config.train.prompts_per_step=6: must be a positive multiple of the 4 batch "
        "shards (mesh data x fsdp) and of the 1 process(es)"
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config.model.attention_impl=cudnn"], "config.model.attention_impl='cudnn': the model's cuDNN path"),
        (["--config.mesh.data=2"], "needs 2 devices, but there are 1"),
        (["--config.data.vision_buckets=(6,)"], "vision_buckets must be multiples of 4 patches"),
        (["--config.data.max_frames=8", "--config.data.prompt_buckets=(8,)"], "cannot hold the 4 video tokens"),
        (["--device-kind", "tpu v9"], "--device-kind 'tpu v9': unknown device"),
        (["--config.model.nope=1"], "unknown config key 'model.nope'"),
    ],
)
def test_bad_configs_are_one_line_errors_before_any_compile(tiny_plan, capsys, flags, message):
    rc = plan.main(["plan", "--config", str(ROOT / "configs/demo.py"), "--devices", "1", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_main_prints_writes_json_and_exits_3_when_it_does_not_fit(tiny_plan, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plan, "plan", lambda cfg: tiny_plan)
    out = tmp_path / "plan.json"
    argv = ["plan", "--config", str(ROOT / "configs/demo.py"), "--devices", "1", "--output", str(out)]
    assert plan.main([*argv, "--device-kind", "TPU v5 lite"]) == 0
    text = capsys.readouterr().out
    assert "TPU v5e: fits in 16 GiB" in text and "per device (GiB): params 0.00" in text
    r = json.loads(out.read_text())
    assert (
        r["fits"]
        and r["bytes_per_device"] == tiny_plan.bytes
        and set(r["programs"]) == {"rollout", "assemble", "train_step"}
        and r["device"]["name"] == "v5e"
        and "XLA:CPU" in r["note"]
    )
    small = dataclasses.replace(devices.lookup("v5e"), hbm_bytes=1000)
    monkeypatch.setattr(plan.devices, "lookup", lambda kind: small)
    assert plan.main([*argv, "--device-kind", "v5e", "--suggest", "0"]) == plan.DOES_NOT_FIT == 3
    assert "does not fit in 0 GiB" in capsys.readouterr().out and not json.loads(out.read_text())["fits"]


def test_the_options_are_existing_config_keys():
    cfg = config(file="configs/tempr1_7b.py")
    opts = plan.options(cfg)
    keys = [k for o in opts for k in o]
    assert keys == [
        "model.freeze_vision",
        "train.micro_batches",
        "grpo.beta",
        "data.max_frames",
        "data.total_pixels",
        "data.prompt_buckets",
    ]  # the recipe already shards over fsdp with full remat
    changed = plan.with_overrides(cfg, {k: v for o in opts for k, v in o.items()})
    assert (
        changed.grpo.beta == 0
        and changed.data.max_frames == 224
        and tuple(changed.data.prompt_buckets) == (1024, 2048, 4096)
        and cfg.grpo.beta == 0.04
    )  # a copy: the config itself is untouched
    assert plan.planning_config(cfg)[1] == "preset 7b"
    cfg.model.plan_preset = ""
    with pytest.raises(ValueError, match="config.model.preset and config.model.plan_preset are empty"):
        plan.planning_config(cfg)


@pytest.mark.slow
def test_plans_the_3b_recipe_on_8_simulated_devices(tmp_path):
    out = tmp_path / "plan.json"
    r = run_plan(
        "--config",
        "configs/tempr1_3b.py",
        "--devices",
        "8",
        "--device-kind",
        "v5e",
        "--suggest",
        "1",
        "--output",
        str(out),
        timeout=1200,
    )
    assert r.returncode == plan.DOES_NOT_FIT, r.stderr  # 16 GiB chips: no
    rep = json.loads(out.read_text())
    n = rep["config"]["params"]
    assert n == 3_754_622_976 and rep["config"]["mesh"] == {"data": 1, "fsdp": 8, "tp": 1}
    assert n * 4 / 8 <= rep["bytes_per_device"]["params"] < n * 4 / 8 * 1.01  # a few small params are replicated
    assert rep["shapes"]["rows"] == 64 and rep["shapes"]["prompt_tokens"] + rep["shapes"]["new_tokens"] == 9216
    assert rep["device_kinds"]["h100"]["fits"] and not rep["device_kinds"]["v5e"]["fits"]
    assert len(rep["suggestions"]) == 1 and "model.freeze_vision" in rep["suggestions"][0]["overrides"]
    step = rep["programs"]["train_step"]
    assert step["flops"] > 10 * step["xla_cost_analysis_flops"]  # 36 scanned layers and the chunk loops
    # the update computes each prompt once (8 rows x 8192) and its 8 completions (64 rows x 1024) on top of it
    tokens = rep["shapes"]["prompts"] * rep["shapes"]["prompt_tokens"] + 64 * rep["shapes"]["new_tokens"]
    assert tokens == 8 * 8192 + 64 * 1024
    assert 6 * n * tokens < step["flops"] < 16 * n * tokens  # fwd + bwd + remat fwd + reference fwd, attention
    assert step["flops"] < 6 * n * 64 * 9216  # less than fwd + bwd alone of the 64 concatenated rows would take


@pytest.mark.slow
def test_the_whole_train_step_scanned_vs_unrolled():
    """Every loop but the layers has one iteration (one log-prob chunk, no attention chunks, one micro-batch): the
    unrolled compile's XLA count is then the whole program's."""
    flags = [
        *SMALL,
        "--config.model.logprob_chunk=64",
        "--config.model.text.num_hidden_layers=4",
        "--config.model.vision.depth=4",
    ]
    scanned = plan.plan(config(*flags)).programs[2]
    unrolled = plan.plan(config(*flags, "--config.model.scan_layers=False")).programs[2]
    vector = scanned.main.vector_flops
    assert scanned.flops == unrolled.flops and scanned.flops <= unrolled.xla_flops <= scanned.flops + vector
    assert scanned.xla_flops < 0.5 * scanned.flops
    assert math.isclose(scanned.memory["arguments"], unrolled.memory["arguments"])
