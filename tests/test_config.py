"""configs/base.py and tempr1_jax.configlib: the recipe values, overrides, and errors that name the key."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tempr1_jax import configlib, grpo

REPO = Path(__file__).resolve().parents[1]
BASE = str(REPO / "configs" / "base.py")


def parse(*overrides: str):
    return configlib.parse_flags(["train", "--config", BASE, *overrides])


def test_base_config_is_the_recipe():
    cfg = parse().config
    g = grpo.GRPOConfig.from_mapping(cfg.grpo.to_dict())
    assert g == grpo.GRPOConfig()  # the recipe defaults, the same in both places
    assert (g.num_generations, g.beta, g.kl_estimator, g.aggregation) == (
        8,
        0.04,
        "k3",
        "seq_mean_token_mean",
    )
    assert cfg.optimizer.learning_rate == 1e-6 and cfg.optimizer.decay == "linear"
    assert cfg.optimizer.warmup_steps == 0 and cfg.train.num_epochs == 1
    assert cfg.reward.think == "optional" and dict(cfg.reward.weights) == {
        "format": 1.0, "localization": 1.0, "answer": 1.0,
    }  # fmt: skip
    assert cfg.reward.sigma == 1.0


def test_overrides_are_typed():
    fv = parse(
        "--config.grpo.beta=0",
        "--config.grpo.kl_estimator=k1",
        "--config.train.total_steps=100",
        "--config.checkpoint.async_save=false",
        "--config.mesh.fsdp=4",
        "--config.optimizer.freeze=visual/.*",
        "--workdir=/tmp/run",
    )
    cfg = fv.config
    assert cfg.grpo.beta == 0.0 and isinstance(cfg.grpo.beta, float)
    assert cfg.grpo.kl_estimator == "k1" and cfg.train.total_steps == 100
    assert cfg.checkpoint.async_save is False and cfg.mesh.fsdp == 4
    assert cfg.optimizer.freeze == "visual/.*" and fv.workdir == "/tmp/run"


def test_file_lists_are_overridable_from_the_command_line():
    """data.samples / eval.samples are tuples: ml_collections overrides tuples, not lists."""
    seven = str(REPO / "configs" / "tempr1_7b.py")
    cfg = configlib.parse_flags(["train", "--config", f"{seven}:/data/t"]).config
    assert cfg.data.samples[0] == "/data/t/samples/charades_sta_train.jsonl" and len(cfg.eval.samples) == 5
    cfg = configlib.parse_flags([
        "train", "--config", f"{seven}:/data/t", "--config.data.samples=('/a.jsonl', '/b.jsonl')",
        "--config.eval.samples=('/c.jsonl',)",
    ]).config
    assert cfg.data.samples == ("/a.jsonl", "/b.jsonl") and cfg.eval.samples == ("/c.jsonl",)


@pytest.mark.parametrize(
    "arg,key",
    [
        ("--config.grpo.betta=0.1", "grpo.betta"),
        ("--config.optimiser.learning_rate=1e-5", "optimiser.learning_rate"),
        ("--config.reward.weights.loc=2", "reward.weights.loc"),
        ("--config.grpo.beta.x=1", "grpo.beta.x"),
    ],
)
def test_unknown_override_key_is_an_error_naming_it(arg, key):
    with pytest.raises(configlib.ConfigError, match=f"unknown config key '{key}'"):
        parse(arg)


def test_bad_values_and_files_are_named():
    with pytest.raises(configlib.ConfigError, match="config.grpo.kl_estimator='k4'"):
        parse("--config.grpo.kl_estimator=k4")
    with pytest.raises(configlib.ConfigError, match="--config.grpo.num_generations"):
        parse("--config.grpo.num_generations=eight")
    with pytest.raises(configlib.ConfigError, match="config.checkpoint.keep=0"):
        parse("--config.checkpoint.keep=0")
    with pytest.raises(configlib.ConfigError, match="config.reward.think='sometimes'"):
        parse("--config.reward.think=sometimes")
    with pytest.raises(configlib.ConfigError, match="mesh"):
        parse("--config.mesh.tp=0")
    with pytest.raises(configlib.ConfigError, match="no such file"):
        configlib.parse_flags(["train", "--config", "configs/nope.py"])
    with pytest.raises(configlib.ConfigError, match="--config is required"):
        configlib.parse_flags(["train"])


def test_extra_flags_and_the_exit_path(tmp_path):
    def extra(fv):
        from absl import flags

        flags.DEFINE_string("checkpoint", None, "a checkpoint", flag_values=fv)

    fv = configlib.parse_flags(["evaluate", "--config", BASE, "--checkpoint=/x"], define_extra=extra)
    assert fv.checkpoint == "/x"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tempr1_jax import configlib
        configlib.parse_flags_or_exit(["train", "--config", {BASE!r}, "--config.grpo.bta=1"])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: unknown config key 'grpo.bta' in '--config.grpo.bta=1': grpo has no 'bta' (it has: "
        "advantage_ddof, advantage_eps, advantage_scale, aggregation, beta, dynamic_sampling, eps_high, eps_low, "
        "importance_level, kl_estimator, max_draws_per_step, norm_constant, num_generations, num_iterations)"
    ]


def test_base_config_blocks_feed_the_trainer_functions(monkeypatch):
    """The wiring of docs/grpo.md: each block goes straight into the function that consumes it."""
    from tempr1_jax import sharding, trainer

    for k in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    cfg = parse("--config.optimizer.warmup_steps=2", "--config.mesh.data=-1").config
    assert sharding.maybe_initialize_distributed(**cfg.distributed) is False
    assert sharding.mesh_shape(cfg.mesh, 4) == (4, 1, 1)
    tx, schedule = trainer.make_optimizer(cfg.optimizer, 10)
    assert float(schedule(1)) == pytest.approx(0.5e-6) and float(schedule(2)) == pytest.approx(1e-6)
    assert grpo.GRPOConfig.from_mapping(cfg.grpo.to_dict()).beta == 0.04


def test_help_prints_the_usage_and_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        configlib.parse_flags_or_exit(["train", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: python -m tempr1_jax.train --config configs/NAME.py")
    assert "--config.KEY=VALUE" in out and "--workdir DIR" in out


def test_a_repeated_override_replaces_instead_of_concatenating(capsys):
    """ml_collections concatenates repeated tuple overrides; the last value wins here, as for scalars."""
    cfg = parse("--config.data.prompt_buckets=(512,)", "--config.data.prompt_buckets=(256,)",
                "--config.eval.samples=('/a.jsonl',)", "--config.eval.samples=('/b.jsonl', '/c.jsonl')",
                "--config.seed=3", "--config.seed=4").config
    assert cfg.data.prompt_buckets == (256,) and cfg.eval.samples == ("/b.jsonl", "/c.jsonl") and cfg.seed == 4
    err = capsys.readouterr().err
    assert "note: --config.data.prompt_buckets given 2 times: the last one wins (--config.data.prompt_buckets=(256,))" \
        in err
    assert parse("--config.data.prompt_buckets=(512, 1024)").config.data.prompt_buckets == (512, 1024)


def test_a_config_file_that_fails_to_load_names_the_cause():
    base, demo = str(REPO / "configs" / "base.py"), str(REPO / "configs" / "demo.py")
    for extra in ((), ("--config.seed=1",)):  # (overrides take another loading path)
        with pytest.raises(configlib.ConfigError) as e:
            configlib.parse_flags(["train", "--config", f"{base}:badarg", *extra])
        assert str(e.value) == (
            f"--config {base}:badarg: cannot load: TypeError: get_config() takes 0 positional arguments but 1 was "
            "given (the text after ':' is passed to get_config(); this config takes no ':ARG')")
        with pytest.raises(configlib.ConfigError) as e:
            configlib.parse_flags(["train", "--config", f"{demo}:tg,badarg", *extra])
        assert str(e.value) == (
            f"--config {demo}:tg,badarg: cannot load: ValueError: configs/demo.py:tg,badarg: unknown task(s) "
            "['badarg']; tasks: ('tg', 'dtg', 'vhd', 'gvqa', 'tal')")


def test_the_demo_config_takes_a_task_subset():
    demo = str(REPO / "configs" / "demo.py")
    assert not configlib.parse_flags(["train", "--config", demo]).config.data.task_weights
    weights = configlib.parse_flags(["train", "--config", f"{demo}:tg, tal"]).config.data.task_weights
    assert dict(weights) == {"tg": 1.0, "tal": 1.0}



def test_an_error_inside_get_config_is_shown(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(arg=None):\n    raise ValueError(f'size {arg!r} is not 3b or 7b')\n")
    with pytest.raises(configlib.ConfigError) as e:
        configlib.parse_flags(["train", "--config", f"{bad}:9b"])
    assert str(e.value) == f"--config {bad}:9b: cannot load: ValueError: size '9b' is not 3b or 7b"


@pytest.mark.parametrize("name", ["demo.py", "tempr1_7b.py:/data/t"])
def test_the_saved_run_config_loads_back_as_a_config_file(tmp_path, name):
    """<workdir>/config.py gives the same values, and overrides keep their types (placeholders included)."""
    cfg = configlib.parse_flags(["train", "--config", str(REPO / "configs" / name),
                                 "--config.data.max_pixels=12544"]).config
    path = configlib.write_run_config(cfg, str(tmp_path))
    assert configlib.read_run_config(str(tmp_path)) == json.loads(cfg.to_json())
    again = configlib.parse_flags(["evaluate", "--config", path, "--config.train.total_steps=7",
                                   "--config.model.path=/m", "--config.data.prompt_buckets=(64,)"]).config
    want = cfg.to_dict()
    want["train"]["total_steps"], want["model"]["path"], want["data"]["prompt_buckets"] = 7, "/m", (64,)
    assert again.to_dict() == want
    assert isinstance(again.data.samples, tuple) and again.data.max_pixels == 12544
