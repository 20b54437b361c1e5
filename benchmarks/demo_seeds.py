"""The demo's GRPO gain per task over several seeds, against each task's pixel-blind bar; and the synergy check.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--workdir DIR] [--synergy] [-- --config.KEY=VALUE ...]

Runs ``python -m tempr1_jax.train --config configs/demo.py --config.seed=S`` once per seed (each run: its own
warm-up, then GRPO), reads each run's ``metrics.jsonl`` and prints, per task, the held-out greedy
localization reward before GRPO (the evaluation at step 0, right after the warm-up) and after it (the last
evaluation), the gain's mean and standard deviation over the seeds, gvqa's answer accuracy, and the task's
pixel-blind bar (``tempr1_jax.baselines.pixel_blind_bars`` on the held-out samples: the best answer that reads
the prompt but not the video). The verdict column applies the demo's acceptance rule: a gain of at least 0.05
and at least twice its seed-to-seed standard deviation.

``--synergy`` (first seed only): the same GRPO budget per task, multi-task vs single-task. From the multi-task
run's warm-up (copied, so both start from the same policy), one GRPO run per task on that task alone
(``configs/demo.py:TASK``) for ``total_steps / number of tasks`` steps, so each task gets as many GRPO prompts
as it had in the multi-task run; all runs are evaluated on every task.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS = ("tg", "dtg", "vhd", "gvqa", "tal")


def run_demo(workdir: Path, config: str, args: list[str]) -> float:
    """One training run; returns its wall time (s). Its log is workdir/train.log."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "tempr1_jax.train", "--config", config, "--workdir", str(workdir), *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"demo_seeds: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def evaluations(workdir: Path) -> list[dict]:
    """The evaluation rows of a run's metrics.jsonl, in step order."""
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if "eval/reward/total" in r]


def before_after(workdir: Path) -> dict[str, dict[str, float]]:
    """Per task: held-out localization (and gvqa answer) at the first and the last evaluation."""
    evals = evaluations(workdir)
    first, last = evals[0], evals[-1]
    out = {}
    for t in TASKS:
        key = f"eval/{t}/reward/localization"
        if key in first:
            out[t] = {"before": first[key], "after": last[key],
                      "answer_before": first.get(f"eval/{t}/reward/answer", 0.0),
                      "answer_after": last.get(f"eval/{t}/reward/answer", 0.0)}
    return out


def bars(val_path: Path) -> dict[str, dict]:
    from tempr1_jax.baselines import pixel_blind_bars

    samples = [json.loads(x) for x in val_path.read_text().splitlines() if x.strip()]
    return pixel_blind_bars(samples)


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def seed_table(results: dict[int, dict], blind: dict[str, dict]) -> str:
    lines = [f"{'task':<6}{'before':>16}{'after':>16}{'gain':>16}{'blind bar':>11}  verdict"]
    for t in TASKS:
        runs = [r[t] for r in results.values() if t in r]
        if not runs:
            continue
        (b, bs), (a, as_) = mean_sd([x["before"] for x in runs]), mean_sd([x["after"] for x in runs])
        g, gs = mean_sd([x["after"] - x["before"] for x in runs])
        ok = g >= 0.05 and g >= 2 * gs
        lines.append(f"{t:<6}{b:>9.3f} ± {bs:.3f}{a:>9.3f} ± {as_:.3f}{g:>+9.3f} ± {gs:.3f}"
                     f"{blind[t]['localization']:>11.3f}  {'gain >= 0.05 and >= 2 sd' if ok else 'not met'}"
                     f"{'' if a > blind[t]['localization'] else ' (after <= bar)'}")
    gv = [r["gvqa"] for r in results.values() if "gvqa" in r]
    if gv:
        (b, bs), (a, as_) = mean_sd([x["answer_before"] for x in gv]), mean_sd([x["answer_after"] for x in gv])
        lines.append(f"{'gvqa answer accuracy':<22}{b:.3f} ± {bs:.3f} -> {a:.3f} ± {as_:.3f}"
                     f"   (blind bar {blind['gvqa']['answer']:.3f})")
    return "\n".join(lines)


def synergy(base: Path, seed: int, steps: int, extra: list[str]) -> str:
    """Single-task GRPO runs from the multi-task run's warm-up; a table of per-task gains, multi vs single."""
    multi = before_after(base / f"seed{seed}")
    lines = [f"{'task':<6}{'multi-task gain':>17}{'single-task gain':>18}   (same GRPO prompts per task)"]
    per_task = max(1, steps // len(TASKS))
    for t in TASKS:
        wd = base / f"seed{seed}_only_{t}"
        shutil.rmtree(wd, ignore_errors=True)
        wd.mkdir(parents=True)
        shutil.copytree(base / f"seed{seed}" / "warmup_model", wd / "warmup_model")
        run_demo(wd, f"configs/demo.py:{t}", [f"--config.seed={seed}", f"--config.train.total_steps={per_task}",
                                                f"--config.eval.every={per_task}", *extra])
        single = before_after(wd)[t]
        lines.append(f"{t:<6}{multi[t]['after'] - multi[t]['before']:>+17.3f}"
                     f"{single['after'] - single['before']:>+18.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workdir", default="workdir/demo_seeds")
    p.add_argument("--synergy", action="store_true", help="also the multi- vs single-task comparison")
    p.add_argument("--reuse", action="store_true", help="read finished runs in --workdir instead of running them")
    p.add_argument("extra", nargs="*", help="overrides passed to every run, after --")
    a = p.parse_args(argv)
    base = Path(a.workdir).resolve()
    results, seconds = {}, {}
    for s in a.seeds:
        wd = base / f"seed{s}"
        if not (a.reuse and (wd / "metrics.jsonl").is_file()):
            shutil.rmtree(wd, ignore_errors=True)
            seconds[s] = run_demo(wd, "configs/demo.py", [f"--config.seed={s}", *a.extra])
        results[s] = before_after(wd)
    from tempr1_jax import configlib, setup

    cfg = configlib.parse_flags(["demo_seeds", "--config", str(ROOT / "configs" / "demo.py"), *a.extra]).config
    blind = bars(Path(setup.prepare_synthetic(cfg)["eval.samples"][0]))
    print(f"configs/demo.py, seeds {a.seeds}: held-out greedy localization reward per task (mean ± sd over seeds)")
    print(seed_table(results, blind))
    if seconds:
        print("wall time per run: " + ", ".join(f"seed {s} {t / 60:.1f} min" for s, t in seconds.items()))
    if a.synergy:
        print(synergy(base, a.seeds[0], int(cfg.train.total_steps), a.extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
