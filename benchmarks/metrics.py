"""Speed of tempr1_jax.metrics against a straightforward per-sample Python implementation of the same definitions.

    python benchmarks/metrics.py --data DIR [--repeats 3]

Scores, with both implementations side by side in this process, and checks that they agree:
  - QVHighlights val (1550 queries): moment retrieval (R1 + mAP at 10 thresholds, full/short/middle/long) and
    highlight mAP / HIT@1, for ground truth as prediction and for moment_detr's 10-window sample submission;
  - ActivityNet-1.3 val (BMN's 4728 videos, 7293 instances): detection mAP at 0.5:0.05:0.95 and MUSEG mF1, for
    ground truth as prediction and for a jittered ground truth with 9 extra random detections per sample.
Prints the wall time of each (best of --repeats) and the ratio. The baseline is tests/_support/metrics_reference.py;
the public annotation files are read from --data DIR (qvhighlights/ and activitynet13/ as docs/data.md lists
them). Timings on a shared machine are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "_support")]

import metrics_data as data  # noqa: E402
import metrics_reference as ref  # noqa: E402

from tempr1_jax import metrics  # noqa: E402
from tempr1_jax.evaluate import evaluate_predictions  # noqa: E402
from tempr1_jax.metrics import Prediction, Rules  # noqa: E402


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def close(a, b, tol=1e-9) -> bool:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol))


# --- QVHighlights --------------------------------------------------------------------------------------------


def qvh_case(samples, records):
    """(ours, reference) callables for MR (4 ranges) and HL on one QVHighlights prediction set."""
    rules = Rules()
    recs = {str(r.get("id", r.get("qid"))): r for r in records}
    preds, windows, scores, sal = [], [], [], []
    for s in samples:
        r = recs[s["id"]]
        w = np.asarray(r.get("pred_relevant_windows", r.get("segments")), float)
        seg = w[:, :2]
        sc = w[:, 2] if w.shape[1] == 3 else np.zeros(len(w))
        sv = np.asarray(r.get("pred_saliency_scores", r.get("saliency")), float)
        preds.append(Prediction(seg, sc, saliency=sv))
        windows.append(seg.tolist())
        scores.append(sc.tolist())
        sal.append(sv.tolist())
    gts = [np.asarray(s["segments"], float) for s in samples]
    gt_lists = [s["segments"] for s in samples]

    def ours_mr():
        mr = metrics.moment_retrieval(preds, gts, rules)
        return [mr[r]["MR-mAP"] for r in ("full", "short", "middle", "long")] + [mr["full"]["MR-R1@0.7"]]

    def ref_mr():
        out, r1 = [], None
        for lo, hi in ((None, None), (0, 10), (10, 30), (30, 150)):
            idx = [i for i, g in enumerate(gt_lists) if lo is None or any(lo < e - s <= hi for s, e in g)]
            sub = [[w for w in gt_lists[i] if lo is None or lo < w[1] - w[0] <= hi] for i in idx]
            res = ref.moment_retrieval([windows[i] for i in idx], [scores[i] for i in idx], sub)
            out.append(res["MR-mAP"])
            r1 = res["MR-R1@0.7"] if r1 is None else r1
        return out + [r1]

    def ours_hl():
        return list(metrics.highlight(samples, preds, rules).values())

    def ref_hl():  # like ours, it builds the per-clip ground truth (moment_detr mk_gt_scores) from the samples
        clip_rows = []
        for s in samples:
            rows = [[0, 0, 0] for _ in range(int(s["duration"] / 2))]
            for cid, row in zip(s["relevant_clip_ids"], s["saliency_scores"], strict=True):
                if cid < len(rows):
                    rows[cid] = row
            clip_rows.append(rows)
        res = ref.highlight(clip_rows, sal)
        return [res[k] for k in metrics.highlight(samples[:1], preds[:1], rules)]

    return ours_mr, ref_mr, ours_hl, ref_hl


# --- ActivityNet-1.3 -----------------------------------------------------------------------------------------


def jittered(samples, seed=0, extra=9):
    """Each GT window shifted by N(0, 0.1 len) at each end, plus `extra` random windows; random scores."""
    rng = random.Random(seed)
    out = []
    for s in samples:
        segs = []
        for a, b in s["segments"]:
            d = 0.1 * (b - a)
            x, y = a + rng.gauss(0, d), b + rng.gauss(0, d)
            segs.append([min(x, y), max(x, y)])
        top = max(e for _, e in s["segments"])
        for _ in range(extra):
            a = rng.uniform(0, top)
            segs.append([a, a + rng.uniform(0, top / 3)])
        out.append({"id": s["id"], "segments": segs, "scores": [round(rng.random(), 3) for _ in segs]})
    return out


def anet_case(samples, records):
    rules = Rules()
    recs = {r["id"]: r for r in records}
    preds, dets, plist = [], [], []
    for s in samples:
        r = recs[s["id"]]
        seg = np.asarray(r["segments"], float).reshape(-1, 2)
        sc = np.asarray(r.get("scores", [1.0] * len(seg)), float)
        preds.append(Prediction(seg, sc))
        dets.append([(w, c) for w, c in zip(seg.tolist(), sc.tolist(), strict=True)])
        plist.append(seg.tolist())
    gts = [np.asarray(s["segments"], float).reshape(-1, 2) for s in samples]
    labels = [s["action"] for s in samples]
    thresholds = metrics.ANET_THRESHOLDS

    def ours_map():
        ap, _ = metrics.detection_map(preds, gts, labels, thresholds, rules)
        return list(100 * ap.mean(1))

    def ref_map():
        _, maps = ref.detection_map(list(zip(labels, [s["segments"] for s in samples], strict=True)), dets, thresholds)
        return maps

    def ours_f1():
        return list(100 * metrics.tal_f1([p.segments for p in preds], gts).mean(1))

    def ref_f1():
        return ref.tal_f1(plist, [s["segments"] for s in samples])

    return ours_map, ref_map, ours_f1, ref_f1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats; the best is reported")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="the directory holding qvhighlights/ and activitynet13/ (docs/data.md)")
    args = parser.parse_args()
    data.DATA = Path(args.data)
    need = ["qvhighlights/highlight_val_release.jsonl", "qvhighlights/moment_detr_sample_val_preds.jsonl",
            "activitynet13/anet_anno_action.json", "activitynet13/video_info_new.csv"]  # fmt: skip
    missing = [n for n in need if not data.path(n).exists()]
    if missing:
        print(f"error: {args.data}: annotation files absent: {', '.join(missing)}", file=sys.stderr)
        return 2

    qvh = data.qvh_samples("val")
    anet = data.anet13_samples()
    cases = []
    for name, recs in (("GT", data.qvh_gt_predictions(qvh)), ("moment_detr", data.qvh_moment_detr_predictions())):
        mr, mr_ref, hl, hl_ref = qvh_case(qvh, recs)
        cases += [(f"QVH val {name}: MR R1+mAP, 4 ranges", mr, mr_ref), (f"QVH val {name}: HL mAP+HIT@1", hl, hl_ref)]
    for name, recs in (("GT", data.gt_predictions(anet)), ("jitter+9FP", jittered(anet))):
        m, m_ref, f1, f1_ref = anet_case(anet, recs)
        cases += [(f"ANet-1.3 val {name}: detection mAP", m, m_ref), (f"ANet-1.3 val {name}: mF1", f1, f1_ref)]

    print(f"{'case':<44}{'ours (s)':>10}{'reference (s)':>15}{'ratio':>9}  agree")
    for name, ours, theirs in cases:
        t_ours, v_ours = best_of(ours, args.repeats)
        t_ref, v_ref = best_of(theirs, max(1, args.repeats // 2))
        agree = close(v_ours, v_ref)
        print(f"{name:<44}{t_ours:>10.3f}{t_ref:>15.3f}{t_ref / t_ours:>8.1f}x  {'yes' if agree else 'NO'}")
        if not agree:
            print(f"  ours {v_ours}\n  reference {v_ref}", file=sys.stderr)
            return 1

    # End to end through the public entry point (validation + normalisation + every metric of the task).
    for name, preds, samples in (("QVH val moment_detr", data.qvh_moment_detr_predictions(), qvh),
                                 ("ANet-1.3 val jitter+9FP", jittered(anet), anet)):  # fmt: skip
        t, _ = best_of(lambda p=preds, s=samples: evaluate_predictions(p, s), args.repeats)
        print(f"evaluate_predictions, {name}: {t:.3f} s for {len(samples)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
