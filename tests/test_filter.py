"""``python -m tempr1_jax.filter``: k rollouts per sample scored by its own reward, every sample written with its
reward mean / std, the filtered file, resuming after an interruption, the progress line, bad flags; from a
Hugging Face directory and from a train checkpoint (the policy of a short demo run with a warm-up that leaves
some groups varying), all on the single-task square world (configs/demo_square.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train import SQUARE, env, run, small, square_dir  # noqa: F401 (fixtures)

K = 4


def overrides(data_dir) -> list[str]:  # noqa: F811
    return small(data_dir, **{"eval.batch_size": 4, "synthetic.num_train": 32})


@pytest.fixture(scope="module")
def policy_run(tmp_path_factory, env, square_dir):  # noqa: F811
    """One GRPO step after a 45-step warm-up: warmup_model/ (HF) and checkpoints/1 (train)."""
    wd = tmp_path_factory.mktemp("filter_policy")
    r = run(
        [
            "--config",
            SQUARE,
            "--workdir",
            str(wd),
            *small(
                square_dir,
                **{
                    "synthetic.num_train": 32,
                    "train.total_steps": 1,
                    "warmup.steps": 45,
                    "warmup.batch_size": 8,
                    "eval.every": 0,
                    "logging.tensorboard": False,
                },
            ),
        ],
        env,
    )
    assert r.returncode == 0, r.stderr[-6000:]
    return wd


def filter_cmd(checkpoint, samples, out, data_dir, *extra):  # noqa: F811
    return [
        "--config",
        SQUARE,
        "--checkpoint",
        str(checkpoint),
        "--samples",
        str(samples),
        "--output",
        str(out),
        "--k",
        str(K),
        *extra,
        *overrides(data_dir),
    ]


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_every_sample_scored_and_the_informative_ones_kept_from_an_hf(tmp_path, env, square_dir, policy_run):  # noqa: F811
    data_dir = square_dir
    samples = data_dir / "train.jsonl"
    out = tmp_path / "scored.jsonl"
    r = run(filter_cmd(policy_run / "warmup_model", samples, out, data_dir), env, module="tempr1_jax.filter")
    assert r.returncode == 0, r.stderr[-6000:]
    inputs = lines(samples)
    scored = {x["id"]: x for x in lines(out)}
    assert sorted(scored) == sorted(s["id"] for s in inputs)
    for s in inputs:
        x = scored[s["id"]]
        assert {k: x[k] for k in s} == s and x["reward_k"] == K and len(x["rewards"]) == K
        assert x["reward_mean"] == pytest.approx(np.mean(x["rewards"]))
        assert x["reward_std"] == pytest.approx(np.std(x["rewards"]))
        assert all(0 <= v <= 2 for v in x["rewards"])  # tg: format + localization
    kept = lines(tmp_path / "scored.kept.jsonl")
    assert kept == [s for s in inputs if scored[s["id"]]["reward_std"] > 0]  # input order, as read
    assert 0 < len(kept) < len(inputs), [scored[i]["reward_std"] for i in scored]  # the warm-up leaves a mix
    assert "batch 8/8" in r.stderr and "ETA" in r.stderr  # 32 samples, 4 per batch
    assert f"kept {len(kept)}" in r.stdout


@pytest.mark.slow
def test_an_interrupted_pass_resumes_without_scoring_again(tmp_path, env, square_dir, policy_run):  # noqa: F811
    """A train checkpoint as the policy; the output cut after 12 records and half a line, as a kill leaves it."""
    data_dir = square_dir
    samples = data_dir / "train.jsonl"
    out = tmp_path / "scored.jsonl"
    args = filter_cmd(policy_run, samples, out, data_dir, "--min-mean", "0.5", "--kept", str(tmp_path / "k.jsonl"))
    r = run(args, env, module="tempr1_jax.filter")
    assert r.returncode == 0, r.stderr[-6000:]
    full = out.read_text().splitlines(keepends=True)
    out.write_text("".join(full[:12]) + full[12][:20])
    r = run(args, env, module="tempr1_jax.filter")
    assert r.returncode == 0, r.stderr[-6000:]
    assert "20 to go" in r.stderr and "batch 5/5" in r.stderr
    again = out.read_text().splitlines(keepends=True)
    assert again[:12] == full[:12] and len(again) == 32  # the first 12 kept, not rescored
    assert len({json.loads(x)["id"] for x in again}) == 32
    scored = {x["id"]: x for x in lines(out)}
    kept = lines(tmp_path / "k.jsonl")
    assert [s["id"] for s in kept] == [
        s["id"] for s in lines(samples) if scored[s["id"]]["reward_std"] > 0 and scored[s["id"]]["reward_mean"] >= 0.5
    ]
    r = run(args, env, module="tempr1_jax.filter")  # nothing left: writes the filtered file again, loads no model
    assert r.returncode == 0 and "0 to go" in r.stderr and lines(tmp_path / "k.jsonl") == kept


@pytest.mark.parametrize(
    "flag, message",
    [(["--k", "0"], "--k 0: must be >= 1"), (["--reward", "iou"], "--reward 'iou': must be one of total")],
)
def test_bad_flags_are_errors_naming_them(tmp_path, env, square_dir, flag, message):  # noqa: F811
    r = run(
        filter_cmd(tmp_path, square_dir / "train.jsonl", tmp_path / "o.jsonl", square_dir, *flag),
        env,
        module="tempr1_jax.filter",
        timeout=120,
    )
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
