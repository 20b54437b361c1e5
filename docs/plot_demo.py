"""Draw the demo's reward curves from a training run's ``metrics.jsonl``.

    python docs/plot_demo.py workdir/demo/metrics.jsonl docs/demo_rewards.png [VAL.jsonl]

Plots the mean localization and format rewards of the GRPO rollouts (every logged step, with a running mean)
and the held-out greedy localization reward of each evaluation. With the held-out samples file (the demo's
``val.jsonl`` in its cache directory), also draws the best constant answer's mean IoU on it as a dashed line
(``data_pipeline.synthetic.best_constant_iou``): what a model that ignores the pixels can reach. Needs
matplotlib, which is not a dependency of the package (``pip install matplotlib``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # data_pipeline, when run from anywhere


def main(argv: list[str]) -> int:
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
    steps = np.array([r["step"] for r in train])
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    for key, color, label in (("reward/localization", "tab:blue", "rollouts: localization (IoU)"),
                              ("reward/format", "tab:gray", "rollouts: format")):
        y = np.array([r[key] for r in train])
        ax.plot(steps, y, color=color, alpha=0.25, lw=1)
        k = max(1, len(y) // 10)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color=color, lw=2, label=f"{label}, running mean")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval/reward/localization"] for r in evals], "o-", color="tab:red",
                lw=2, label="held-out, greedy: localization (IoU)")
    if len(argv) == 3:
        from data_pipeline import synthetic

        with open(argv[2], encoding="utf-8") as f:
            samples = [json.loads(line) for line in f if line.strip()]
        (a, b), iou = synthetic.best_constant_iou(samples)
        ax.axhline(iou, color="tab:red", ls="--", lw=1.2,
                   label=f"held-out: best constant answer ({a:g} to {b:g}), IoU {iou:.2f}")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("configs/demo.py: when is the red square on screen?", fontsize=10)
    fig.tight_layout()
    fig.savefig(argv[1])
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
