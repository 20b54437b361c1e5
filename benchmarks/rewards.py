"""Reward speed: the jitted array rewards and compute_rewards vs the same formulas as per-sample Python.

Side by side in one process, on B in {512, 4096} mixed-task completions with up to 32 intervals each:
  (a) scoring only: one_to_one / many_to_one / many_to_many on packed arrays (after compilation)
      vs tempr1_jax.rewards_reference's per-sample functions on the same parsed intervals;
  (b) end to end: compute_rewards (validate + parse + pack + score) vs, per completion, check_sample (the same
      validation) and rewards_reference.reward (parse + score in plain Python).
Prints the best of --repeats runs as process CPU time (robust when other jobs share the machine; it also charges
XLA's worker threads to the jitted side) and as wall time, with the ratios.
Usage: python benchmarks/rewards.py [--sizes 512 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from tempr1_jax import rewards as R
from tempr1_jax import rewards_reference as ref

TASKS = ["tg", "dtg", "vhd", "gvqa", "tal"]


def make_batch(batch: int, seed: int = 0, max_intervals: int = 32) -> tuple[list[str], list[dict]]:
    """Mixed-task samples and noisy completions (about 10% malformed), up to max_intervals intervals each."""
    rng = np.random.default_rng(seed)
    texts, samples = [], []
    for i in range(batch):
        task = TASKS[i % len(TASKS)]
        duration = float(rng.uniform(30, 600))
        n_gt = {"tg": 1}.get(task, int(rng.integers(1, max_intervals + 1)))
        starts = np.sort(rng.uniform(0, duration * 0.9, n_gt))
        gt = [[round(s, 1), round(min(s + rng.uniform(1, duration / 10), duration), 1)] for s in starts]
        sample = {"task": task, "duration": duration, "segments": gt}
        n_pred = n_gt if task in ("tg", "dtg") else int(rng.integers(1, max_intervals + 1))
        jitter = rng.normal(0, 3, (n_pred, 2))
        pred = [np.clip(np.sort(np.array(gt[k % n_gt]) + jitter[k]), 0, duration + 20) for k in range(n_pred)]
        payload = ", ".join(f"{s:.1f} to {e:.1f}" for s, e in pred)
        if rng.random() < 0.1:
            payload = payload.replace(",", " and", 1) if rng.random() < 0.5 else payload + " seconds"
        think = "<think>The event starts when the person enters and ends when they leave.</think>\n"
        if task == "gvqa":
            sample["answer"] = "ABCDE"[int(rng.integers(5))]
            texts.append(f"{think}<answer>({'ABCDE'[int(rng.integers(5))]})</answer>\n<evidence>{payload}</evidence>")
        else:
            texts.append(f"{think}<answer>{payload}</answer>")
        samples.append(sample)
    return texts, samples


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(best CPU seconds, best wall seconds) over repeats."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall)


def run(batch: int, repeats: int) -> dict[str, float]:
    texts, samples = make_batch(batch)
    gts = [R.check_sample(s) for s in samples]
    parsed = [R.parse_completion(t, s) for t, s in zip(texts, samples, strict=True)]

    # (a) scoring only, on already parsed intervals: one packed group per correspondence type
    groups = {}
    for kind in R.LOCALIZATION_FNS:
        rows = [i for i, g in enumerate(gts) if g.rule.localization == kind and parsed[i].intervals is not None]
        p = R.bucket(max(len(parsed[i].intervals) for i in rows))
        m = R.bucket(max(len(gts[i].segments) for i in rows))
        n = R.bucket(len(rows), R.MIN_ROWS)
        pred = R.pack_intervals([parsed[i].intervals for i in rows], p, n)
        gt = R.pack_intervals([gts[i].segments for i in rows], m, n)
        args = (*pred, *gt) + ((np.float32(1.0),) if kind == "many_to_many" else ())
        args = jax.device_put(args)
        py_args = [(parsed[i].intervals.tolist(), list(gts[i].segments)) for i in rows]
        groups[kind] = (args, py_args)

    py_fns = {"one_to_one": ref.one_to_one, "many_to_one": ref.many_to_one, "many_to_many": ref.many_to_many}

    def jax_scores():
        outs = [R.LOCALIZATION_FNS[k](*a) for k, (a, _) in groups.items()]
        jax.block_until_ready(outs)

    def py_scores():
        for kind, (_, py_args) in groups.items():
            for p, g in py_args:
                py_fns[kind](p, g)

    jax_scores()  # compile
    # sanity: both sides agree on what they compute
    for kind, (args, py_args) in groups.items():
        got = np.asarray(R.LOCALIZATION_FNS[kind](*args))[: len(py_args)]
        np.testing.assert_allclose(got, [py_fns[kind](p, g) for p, g in py_args], atol=1e-4)

    # (b) end to end
    def ours_e2e():
        return R.compute_rewards(texts, samples)

    def py_e2e():
        return [R.check_sample(s) and ref.reward(t, s) for t, s in zip(texts, samples, strict=True)]

    ours_e2e()  # compile
    np.testing.assert_allclose(ours_e2e()["total"], [r["total"] for r in py_e2e()], atol=1e-4)

    t = {"jax_score": best_time(jax_scores, repeats), "py_score": best_time(py_scores, max(1, repeats // 2)),
         "ours_e2e": best_time(ours_e2e, repeats), "py_e2e": best_time(py_e2e, max(1, repeats // 2))}
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; best of {args.repeats} runs; times in ms")
    print(f"{'B':>6} {'clock':>5} | {'(a) jitted':>10} {'python':>8} {'ratio':>6} | "
          f"{'(b) compute_rewards':>19} {'python':>8} {'ratio':>6}")
    for b in args.sizes:
        t = run(b, args.repeats)
        for k, clock in enumerate(("cpu", "wall")):
            a_ours, a_py, b_ours, b_py = (t[key][k] for key in ("jax_score", "py_score", "ours_e2e", "py_e2e"))
            print(f"{b:>6} {clock:>5} | {a_ours * 1e3:>10.2f} {a_py * 1e3:>8.1f} {a_py / a_ours:>5.0f}x | "
                  f"{b_ours * 1e3:>19.1f} {b_py * 1e3:>8.1f} {b_py / b_ours:>5.1f}x")


if __name__ == "__main__":
    main()
