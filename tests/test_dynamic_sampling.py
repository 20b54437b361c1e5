"""Dynamic sampling (DAPO, ``grpo.dynamic_sampling``): which groups count as informative, how a step's draws
become one static-shape update batch (kept groups, then masked padding groups), the counters, the cap on draws,
bad values, and a run through ``python -m tempr1_jax.train``: flat compile count, the stream position counting
every drawn prompt, and an exact resume in a new process. (That padding rows change nothing in the update is
tests/test_trainer.py::test_padding_rows_change_nothing.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train import SQUARE, env, flat, read_state, run, small, square_dir, train_rows  # noqa: F401 (fixtures)

from data_pipeline.stream import Batch
from tempr1_jax import dynamic_sampling as ds
from tempr1_jax import grpo

G = 2


def fake_batch(k: int, b: int = 3, L: int = 4, N: int = 2) -> Batch:
    """A stream-like batch: row j of draw k has id ``k:j``, input ids ``10 * k + j``, pixels ``k + j / 10``."""
    rows = np.arange(b)
    fields = {f: np.zeros((b,), np.int32) for f in Batch._fields}
    fields |= dict(
        input_ids=np.full((b, L), 10 * k, np.int32) + rows[:, None],
        attention_mask=np.ones((b, L), np.int32),
        pixel_values=np.full((b, N, 3), k, np.float32) + rows[:, None, None] / 10,
        pixel_mask=np.ones((b, N), bool),
        sample_mask=np.ones(b, bool),
        id=np.array([f"{k}:{j}".encode() for j in rows]),
    )
    return Batch(**fields)


def fake_rollout(totals: list[list[float]]):
    """rollout(batch, k) -> Draw whose group j has rewards ``totals[k][j * G: (j + 1) * G]``."""

    def rollout(batch: Batch, k: int) -> ds.Draw:
        n = batch.input_ids.shape[0] * G
        tokens = np.repeat(batch.input_ids[:, :1], G, axis=0) + np.zeros((n, 5), np.int32)
        return ds.Draw(
            batch,
            tokens,
            np.ones((n, 5), bool),
            np.full((n, 5), -float(k)),
            {"total": np.asarray(totals[k], np.float32), "format": np.zeros(n, np.float32)},
            [f"c{k}.{i}" for i in range(n)],
            [{"id": f"{k}:{i // G}"} for i in range(n)],
        )

    return rollout


def test_informative_groups_are_those_whose_valid_finite_rewards_vary():
    total = np.array([1, 1, 0, 1, np.nan, 0.5, 0.5, 0.5, 0.2, 0.9, 3, 4], np.float32)
    valid = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1], bool)
    # [1, 1] equal; [0, 1] varies; [nan, .5] one finite value; [.5, .5] equal; [.2, masked] one valid; [3, 4]
    np.testing.assert_array_equal(ds.informative_groups(total, valid, 2), [False, True, False, False, False, True])


def test_draw_keeps_the_informative_groups_in_order_until_the_quota():
    totals = [
        [1, 1, 0, 1, 2, 2],  # draw 0: group 1 informative
        [0, 0, 0, 0, 0, 0],  # draw 1: none
        [5, 6, 7, 8, 9, 9],
    ]  # draw 2: groups 0, 1 (only one more is needed)
    batches = iter([fake_batch(1), fake_batch(2), fake_batch(3)])
    upd, draws, counts = ds.draw(fake_batch(0), lambda: next(batches), fake_rollout(totals), G=G, max_draws=8, pad_id=0)
    assert len(draws) == 3 and next(batches).id[0] == b"3:0"  # stopped as soon as it had 3 groups
    assert counts == {
        "dynamic/draws": 3,
        "dynamic/groups_drawn": 9,
        "dynamic/informative": 3,
        "dynamic/groups_kept": 3,
        "dynamic/rollouts": 18,
    }
    assert list(upd.batch.id) == [b"0:1", b"2:0", b"2:1"] and upd.batch.sample_mask.all()
    np.testing.assert_array_equal(upd.rewards["total"], [0, 1, 5, 6, 7, 8])
    np.testing.assert_array_equal(upd.tokens[:, 0], [1, 1, 20, 20, 21, 21])  # each group's own completions
    np.testing.assert_array_equal(upd.logp[:, 0], [0, 0, -2, -2, -2, -2])
    assert upd.completions == ["c0.2", "c0.3", "c2.0", "c2.1", "c2.2", "c2.3"]


def test_the_cap_trains_on_what_it_has_and_pads_with_masked_groups():
    totals = [[1, 1, 0, 1, 2, 2], [0, 0, 0, 0, 0, 0]]
    batches = iter([fake_batch(1)])
    upd, draws, counts = ds.draw(fake_batch(0), lambda: next(batches), fake_rollout(totals), G=G, max_draws=2, pad_id=0)
    assert counts["dynamic/draws"] == 2 and counts["dynamic/groups_kept"] == 1 and counts["dynamic/rollouts"] == 12
    assert upd.batch.input_ids.shape == (3, 4) and upd.tokens.shape == (6, 5)  # the static shape
    np.testing.assert_array_equal(upd.batch.sample_mask, [True, False, False])
    assert list(upd.batch.id) == [b"0:1", b"1:0", b"1:1"]  # padding: rows of the last draw


def test_a_draw_of_one_batch_with_nothing_informative_is_all_padding():
    upd, draws, counts = ds.draw(
        fake_batch(0), lambda: pytest.fail("drew again"), fake_rollout([[1] * 6]), G=G, max_draws=1, pad_id=0
    )
    assert counts["dynamic/groups_kept"] == 0 and not upd.batch.sample_mask.any() and len(draws) == 1


def test_rows_of_batches_of_different_buckets_are_padded_to_the_largest():
    small_b, big = fake_batch(0, L=3, N=1), fake_batch(1, L=5, N=2)
    got = ds.take_rows([small_b, big], [(0, 2), (1, 0)], [True, False], pad_id=7)
    np.testing.assert_array_equal(got.input_ids, [[7, 7, 2, 2, 2], [10, 10, 10, 10, 10]])
    np.testing.assert_array_equal(got.attention_mask, [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(got.pixel_mask, [[True, False], [True, True]])
    np.testing.assert_allclose(got.pixel_values[:, :, 0], [[0.2, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(got.sample_mask, [True, False])


def test_bad_values_are_errors_naming_the_key():
    with pytest.raises(ValueError, match=r"grpo\.max_draws_per_step=0: must be an integer >= 1"):
        grpo.GRPOConfig(max_draws_per_step=0)
    with pytest.raises(ValueError, match=r"grpo\.dynamic_sampling='yes'"):
        grpo.GRPOConfig(dynamic_sampling="yes")


# ----------------------------------------------------------------------------------------------------------
# Through the entry point (the fixtures env / data_dir come from tests/test_train.py)
# ----------------------------------------------------------------------------------------------------------


def dynamic(data_dir, **extra):  # noqa: F811
    """The small square demo (configs/demo_square.py) with dynamic sampling: a 45-step warm-up leaves the policy
    between no format and the format, so some groups have rewards that vary and some do not (measured: steps
    drawing 1 and 2 batches)."""
    return small(
        data_dir,
        **{
            "grpo.dynamic_sampling": True,
            "grpo.max_draws_per_step": 3,
            "warmup.steps": 45,
            "warmup.batch_size": 8,
            "eval.every": 0,
            "logging.samples_every": 0,
            **extra,
        },
    )


@pytest.fixture(scope="module")
def dyn_straight(tmp_path_factory, env, square_dir):  # noqa: F811
    wd = tmp_path_factory.mktemp("dyn_straight")
    r = run(["--config", SQUARE, "--workdir", str(wd), *dynamic(square_dir)], env)
    assert r.returncode == 0, r.stderr[-6000:]
    return wd


def test_a_dynamic_run_logs_its_draws_compiles_once_and_counts_every_drawn_prompt(dyn_straight):
    rows = train_rows(dyn_straight)
    assert sorted(rows) == [1, 2, 3, 4]
    for r in rows.values():
        assert 1 <= r["dynamic/draws"] <= 3 and r["dynamic/groups_drawn"] == 2 * r["dynamic/draws"]
        assert r["dynamic/rollouts"] == 4 * r["dynamic/groups_drawn"]  # G = 4
        assert r["dynamic/groups_kept"] == min(2, r["dynamic/informative"])
        assert r["dynamic/draws"] == 3 or r["dynamic/groups_kept"] == 2  # drew until full or capped
        assert r["zero_std_groups"] == 0  # the update sees only informative groups (padding is masked)
        assert r["reward/tg/count"] == 4 * r["dynamic/groups_drawn"]  # logged rewards: every rollout
    assert sum(r["dynamic/groups_kept"] for r in rows.values()) > 0, rows
    assert max(r["dynamic/draws"] for r in rows.values()) > 1, rows  # some step drew again
    assert [rows[s]["compiles"] for s in (2, 3, 4)] == [0, 0, 0]
    position = json.loads((dyn_straight / "checkpoints" / "4" / "data" / "metadata").read_text())["positions"][0]
    assert position["stream"]["position"] == 2 * sum(r["dynamic/draws"] for r in rows.values())


@pytest.mark.slow
def test_a_dynamic_run_resumes_exactly_in_a_new_process(tmp_path, env, square_dir, dyn_straight):  # noqa: F811
    wd = tmp_path / "dyn_resumed"
    args = ["--config", SQUARE, "--workdir", str(wd), *dynamic(square_dir, **{"train.steps_per_run": 2})]
    for _ in range(2):
        r = run(args, env)
        assert r.returncode == 0, r.stderr[-6000:]
    assert "resumed from step 2" in r.stderr and "done at step 4/4" in r.stderr
    a, b = flat(read_state(dyn_straight, 4)), flat(read_state(wd, 4))
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ra, rb = train_rows(dyn_straight), train_rows(wd)
    for s in (3, 4):
        for k in ("loss", "dynamic/draws", "dynamic/groups_kept", "reward/total"):
            assert ra[s][k] == rb[s][k], (s, k)


def test_a_bad_max_draws_on_the_command_line_is_an_error_naming_it(tmp_path, env):  # noqa: F811
    r = run(["--config", SQUARE, "--workdir", str(tmp_path), "--config.grpo.max_draws_per_step=0"], env, timeout=120)
    assert r.returncode == 2 and "grpo.max_draws_per_step=0" in r.stderr and "Traceback" not in r.stderr
