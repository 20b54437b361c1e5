"""Draw the demo's per-task reward curves from a training run's ``metrics.jsonl``.

    python docs/plot_demo.py workdir/demo/metrics.jsonl docs/demo_rewards.png [VAL.jsonl]

One panel per task: the GRPO rollouts' mean localization reward of that task (every logged step, with a
running mean) and the held-out greedy localization reward of each evaluation (step 0 is right after the
warm-up, before GRPO). With the held-out samples file (the demo's ``val.jsonl`` in its cache directory), each
panel also draws the task's pixel-blind bar as a dashed line (``tempr1_jax.baselines.pixel_blind_bars``: the
best answer that reads the prompt but not the video). Needs matplotlib, which is not a dependency of the package
(``pip install matplotlib``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, when run from anywhere

TASKS = ("tg", "dtg", "vhd", "gvqa", "tal")
TITLES = {"tg": "tg (IoU)", "dtg": "dtg (mean paired IoU)", "vhd": "vhd (IoU of unions)",
          "gvqa": "gvqa (evidence IoU of unions)", "tal": "tal (count + matched F1, of 2)"}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python docs/plot_demo.py METRICS.jsonl OUT.png [VAL.jsonl]\n\n" + __doc__)
        return 0
    if len(argv) not in (2, 3):
        print("usage: python docs/plot_demo.py METRICS.jsonl OUT.png [VAL.jsonl]", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(argv[0], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    train = [r for r in rows if "reward/localization" in r]
    evals = [r for r in rows if "eval/reward/localization" in r]
    if not train:
        print(f"error: {argv[0]} has no training rows", file=sys.stderr)
        return 2
    bars = {}
    if len(argv) == 3:
        from tempr1_jax.baselines import pixel_blind_bars

        with open(argv[2], encoding="utf-8") as f:
            bars = pixel_blind_bars([json.loads(line) for line in f if line.strip()])
    tasks = [t for t in TASKS if any(f"eval/{t}/reward/localization" in r for r in evals)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), dpi=110, squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=True):
        pts = [(r["step"], r[f"reward/{t}/localization"]) for r in train if f"reward/{t}/localization" in r]
        if pts:
            steps, y = np.array(pts).T
            ax.plot(steps, y, color="tab:blue", alpha=0.2, lw=1)
            k = max(1, len(y) // 8)
            ax.plot(steps[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), color="tab:blue", lw=2,
                    label="rollouts, running mean")
        ev = [(r["step"], r[f"eval/{t}/reward/localization"]) for r in evals if f"eval/{t}/reward/localization" in r]
        ax.plot(*np.array(ev).T, "o-", color="tab:red", lw=2, label="held-out, greedy")
        if t in bars:
            ax.axhline(bars[t]["localization"], color="tab:red", ls="--", lw=1.2, label="pixel-blind bar")
        ax.set_title(TITLES[t], fontsize=9)
        ax.set_xlabel("GRPO step", fontsize=8)
        ax.set_ylim(-0.02, 2.05 if t == "tal" else 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("mean localization reward", fontsize=8)
    axes[0][0].legend(loc="lower right", fontsize=7)
    fig.suptitle("configs/demo.py: multi-task GRPO after a loose warm-up", fontsize=10)
    fig.tight_layout()
    fig.savefig(argv[1])
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
