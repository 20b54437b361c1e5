"""Straightforward per-sample Python versions of the metric definitions: test oracle and benchmark baseline.

Written from the public sources of the official evaluators (docs/evaluation.md lists them),
independently of ``tempr1_jax.metrics``: plain loops over samples, predictions and ground truths, no
vectorisation. Inputs are plain lists: windows are ``[start, end]`` lists of floats in seconds; a prediction
is None (missing / unparsable: scored as nothing) or a list of windows. Results are percentages.
"""

from __future__ import annotations

import math

MR_THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
ANET_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]  # not bit-identical to linspace; tests use their own
F1_THRESHOLDS = [0.1, 0.3, 0.5, 0.7]


def passes(v: float, t: float, op: str = "ge") -> bool:
    return v > t if op == "gt" else v >= t


def iou_hull(p, g) -> float:
    inter = min(p[1], g[1]) - max(p[0], g[0])
    if inter <= 0:
        return 0.0
    return inter / (max(p[1], g[1]) - min(p[0], g[0]))


def iou_sum(p, g, zero_length: str = "miss") -> float:
    if zero_length == "match" and p[1] == p[0] and g[1] == g[0]:
        return math.inf
    inter = min(p[1], g[1]) - max(p[0], g[0])
    if inter <= 0:
        return 0.0
    return inter / ((p[1] - p[0]) + (g[1] - g[0]) - inter)


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


# --- grounding -------------------------------------------------------------------------------------------


def tg(preds, gts, op="ge"):
    """preds: per sample a window list or None; gts: per sample a list of windows. First window, best GT."""
    ious = []
    for p, g in zip(preds, gts, strict=True):
        ious.append(max(iou_hull(p[0], w) for w in g) if p else 0.0)
    out = {f"R1@{t}": 100 * mean(passes(v, t, op) for v in ious) for t in (0.3, 0.5, 0.7)}
    out["mIoU"] = 100 * mean(ious)
    return out


def dtg(preds, gts, op="ge"):
    ious = []
    for p, g in zip(preds, gts, strict=True):
        for i, w in enumerate(g):
            ious.append(iou_hull(p[i], w) if p and i < len(p) else 0.0)
    out = {f"R1@{t}": 100 * mean(passes(v, t, op) for v in ious) for t in (0.3, 0.5, 0.7)}
    out["mIoU"] = 100 * mean(ious)
    return out


def merge(windows):
    out = []
    for s, e in sorted(w for w in windows if w[1] >= w[0]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def union_iou(p, g) -> float:
    """|U_p ∩ U_g| / |U_p ∪ U_g|."""
    up, ug = merge(p or []), merge(g)
    inter = sum(max(0.0, min(a[1], b[1]) - max(a[0], b[0])) for a in up for b in ug)
    union = sum(e - s for s, e in up) + sum(e - s for s, e in ug) - inter
    return inter / union if union > 0 else 0.0


# --- detection AP (ActivityNet compute_average_precision_detection / moment_detr) ---------------------------


def voc_ap(tp, npos) -> float:
    prec, rec, ctp = [], [], 0
    for i, h in enumerate(tp):
        ctp += h
        prec.append(ctp / (i + 1))
        rec.append(ctp / npos)
    mprec, mrec = [0.0] + prec + [0.0], [0.0] + rec + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def greedy_tp(ranked, gts_by_key, t, op="ge", zero_length="match"):
    """ranked: [(key, window)] best first; each takes its key's free GT of highest IoU if that IoU passes."""
    locked, tp = set(), []
    for key, p in ranked:
        cands = gts_by_key.get(key, [])
        ious = [iou_sum(p, g, zero_length) for g in cands]
        hit = False
        for j in sorted(range(len(cands)), key=lambda j: (-ious[j], -j)):
            if not passes(ious[j], t, op):
                break
            if (key, j) in locked:
                continue
            locked.add((key, j))
            hit = True
            break
        tp.append(hit)
    return tp


def ranked(items, ties):
    """items: [(score, input_index, payload)] -> payloads best first; ties by input order or reversed."""
    sign = 1 if ties == "stable" else -1
    return [x[2] for x in sorted(items, key=lambda x: (-x[0], sign * x[1]))]


def mr_ap_query(pred, scores, gt, thresholds, op="ge", zero_length="match", max_windows=10):
    """One query's AP per threshold (moment_detr): first max_windows windows, stable sort by score."""
    if max_windows:
        pred, scores = pred[:max_windows], scores[:max_windows]
    order = ranked([(s, i, ("q", w)) for i, (w, s) in enumerate(zip(pred, scores, strict=True))], "stable")
    return [voc_ap(greedy_tp(order, {"q": gt}, t, op, zero_length), len(gt)) for t in thresholds]


def moment_retrieval(preds, scores, gts, op="ge", zero_length="match", max_windows=10, mr_empty="skip"):
    """Full-range MR metrics: R1@t of the first window vs best GT, mAP@t over queries (empty skipped)."""
    out = {}
    r1 = [max(iou_hull(p[0], g) for g in gt) if p else 0.0 for p, gt in zip(preds, gts, strict=True)]
    aps = []
    for p, s, gt in zip(preds, scores, gts, strict=True):
        if p is not None and len(p) == 0 and mr_empty == "skip":
            continue
        aps.append(mr_ap_query(p or [], s or [], gt, MR_THRESHOLDS, op, zero_length, max_windows))
    for k, t in enumerate(MR_THRESHOLDS):
        out[f"MR-mAP@{t}"] = 100 * mean(a[k] for a in aps)
    out["MR-mAP"] = mean(out[f"MR-mAP@{t}"] for t in MR_THRESHOLDS)
    for t in MR_THRESHOLDS:
        out[f"MR-R1@{t}"] = 100 * mean(passes(v, t, op) for v in r1)
    return out


def detection_map(samples, preds, thresholds, op="ge", zero_length="match", ties="reverse"):
    """samples: [(label, gt windows)]; preds: per sample [(window, score)] or None, in input order.

    Per class: rank all its detections, greedy matching per (sample), interpolated AP; mean over classes with
    ground truth. Returns (AP per class per threshold dict, mAP per threshold list).
    """
    classes = sorted({lab for lab, g in samples if g})
    per_class = {}
    for c in classes:
        items, gts, npos, k = [], {}, 0, 0
        for i, ((lab, g), p) in enumerate(zip(samples, preds, strict=True)):
            if lab != c:
                continue
            gts[i] = g
            npos += len(g)
            for w, s in p or []:
                items.append((s, k, (i, w)))
                k += 1
        order = ranked(items, ties)
        per_class[c] = [voc_ap(greedy_tp(order, gts, t, op, zero_length), npos) for t in thresholds]
    maps = [100 * mean(per_class[c][j] for c in classes) for j in range(len(thresholds))]
    return per_class, maps


def tal_f1(preds, gts, op="ge"):
    """MUSEG: per sample F1 at each threshold without one-to-one matching; mean over samples. [T] percent."""
    out = []
    for t in F1_THRESHOLDS:
        total = 0.0
        for p, g in zip(preds, gts, strict=True):
            p = p or []
            if not g:
                total += 1.0 if not p else 0.0
                continue
            if not p:
                continue
            m = [[iou_sum(a, b) for a in p] for b in g]
            rec = mean(passes(max(row), t, op) for row in m)
            prc = mean(passes(max(m[j][i] for j in range(len(g))), t, op) for i in range(len(p)))
            if rec > 0 and prc > 0:
                total += 2 * prc * rec / (prc + rec)
        out.append(100 * total / len(gts) if gts else 0.0)
    return out


# --- highlight detection (moment_detr get_ap on sklearn precision_recall_curve) -----------------------------


def hl_ap(labels, scores) -> float:
    if len(labels) == 0 or len(set(labels)) == 1:
        return 1.0 if labels and labels[0] == 1 else 0.0
    pairs = sorted(zip(scores, labels, strict=True), key=lambda x: -x[0])
    npos, tp, fp, points, i = sum(labels), 0, 0, [], 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            tp += pairs[j][1]
            fp += 1 - pairs[j][1]
            j += 1
        points.append((tp / (tp + fp), tp / npos))
        i = j
    prec = [p for p, _ in reversed(points)] + [1.0]  # sklearn order: ascending thresholds, then (1, 0)
    rec = [r for _, r in reversed(points)] + [0.0]
    for k in range(1, len(prec)):
        prec[k] = max(prec[k - 1], prec[k])
    idx = [k for k in range(len(rec) - 1) if rec[k + 1] != rec[k]]
    return sum(prec[k] for k in idx) / len(idx)


def highlight(gt_rows, preds):
    """gt_rows: per query a list of per-clip annotator-score lists [[a1, a2, a3], ...] (num_clips long);
    preds: per query a saliency list (or None = scores 0 / miss). Returns HL-mAP / HL-HIT@1 per level."""
    out = {}
    for name, level in (("Fair", 2), ("Good", 3), ("VeryGood", 4)):
        aps, hits = [], []
        for rows, pr in zip(gt_rows, preds, strict=True):
            n_clips, n_ann = len(rows), len(rows[0]) if rows else 3
            binary = [[1 if rows[c][a] >= level else 0 for c in range(n_clips)] for a in range(n_ann)]
            if pr is None or len(pr) == 0:
                aps += [0.0] * n_ann
                hits.append(0.0)
                continue
            sc = list(pr[:n_clips]) + [0.0] * max(0, n_clips - len(pr))
            aps += [hl_ap(binary[a], sc) for a in range(n_ann)]
            best = max(range(len(pr)), key=lambda c: (pr[c], -c))
            hits.append(float(max(binary[a][best] for a in range(n_ann))) if best < n_clips else 0.0)
        out[f"HL-mAP-{name}"] = 100 * mean(aps)
        out[f"HL-HIT@1-{name}"] = 100 * mean(hits)
    return out


# --- grounded QA (NExT-GQA eval_ground) ---------------------------------------------------------------------


def nextgqa_tiou(gt, span):
    """get_tIoU(loc=gt, span=prediction) as in NExT-GQA: (IoU, IoP), may be negative."""
    if span[0] == span[1]:
        return 0.0, (1.0 if gt[0] <= span[0] <= gt[1] else 0.0)
    inter = min(gt[1], span[1]) - max(gt[0], span[0])
    hull = max(gt[1], span[1]) - min(gt[0], span[0])
    iou = inter / hull if hull > 0 else 0.0
    iop = inter / (span[1] - span[0]) if span[1] > span[0] else 0.0
    return iou, iop


def gqa(answers, spans, gt_answers, gts, op="ge"):
    """answers: letters or None; spans: [s, e] or None (already the scored window); NExT-GQA metrics."""
    n = len(gts)
    ious, iops, correct = [], [], []
    for a, sp, ga, g in zip(answers, spans, gt_answers, gts, strict=True):
        best_iou = best_iop = 0.0
        if sp is not None:
            for w in g:
                iou, iop = nextgqa_tiou(w, sp)
                best_iou, best_iop = max(best_iou, iou), max(best_iop, iop)
        ious.append(best_iou)
        iops.append(best_iop)
        correct.append(a is not None and a == ga)
    out = {"Acc": 100 * sum(correct) / n, "mIoU": 100 * mean(ious), "mIoP": 100 * mean(iops)}
    for t in (0.3, 0.5):
        out[f"IoU@{t}"] = 100 * mean(passes(v, t, op) for v in ious)
        out[f"IoP@{t}"] = 100 * mean(passes(v, t, op) for v in iops)
        out[f"Acc&IoU@{t}"] = 100 * mean(c and passes(v, t, op) for c, v in zip(correct, ious, strict=True))
    out["Acc@GQA"] = 100 * mean(c and passes(v, 0.5, op) for c, v in zip(correct, iops, strict=True))
    return out


def nextgqa_eval_ground(gt_ground, pred_ground, pred_qa=None):
    """doc-doc/NExT-GQA ``code/TempGQA/eval_ground.py`` ``eval_ground(gt_ground, pred_ground, pred_qa)`` (gs=False,
    no subset), returning its numbers unrounded instead of printing them to 1 decimal.

    gt_ground: a ``gsub_{val,test}.json`` document as released ``{vid: {duration, location: {qid: [[s, e], ...]}}}``;
    pred_ground: ``{"<vid>_<qid>": [s, e]}`` seconds; pred_qa: ``{"<vid>_<qid>": {"answer", "prediction"}}``.
    Questions without a grounding prediction are skipped (``cnt`` counts the others). ``Acc`` (not printed by
    eval_ground) is the share of the counted questions answered right, the QA accuracy of the same questions.
    """
    miou = miop = 0.0
    cnt = cqt = crt3 = crt5 = crtp3 = crtp5 = correct = 0
    for vid, anno in gt_ground.items():
        for qid, locs in anno["location"].items():
            key = f"{vid}_{qid}"
            if key not in pred_ground:
                continue
            max_iou, max_iop = 0, 0
            for loc in locs:
                iou, iop = nextgqa_tiou(loc, pred_ground[key])
                if iou > max_iou:
                    max_iou = iou
                if iop > max_iop:
                    max_iop = iop
            right = bool(pred_qa) and pred_qa[key]["answer"] == pred_qa[key]["prediction"]
            if max_iop >= 0.3:
                crtp3 += 1
                if max_iop >= 0.5:
                    crtp5 += 1
                    cqt += right
            if max_iou >= 0.3:
                crt3 += 1
                if max_iou >= 0.5:
                    crt5 += 1
            cnt += 1
            correct += right
            miou += max_iou
            miop += max_iop
    return {
        "Acc@GQA": cqt / cnt * 100,
        "mIoP": miop / cnt * 100,
        "IoP@0.3": crtp3 / cnt * 100,
        "IoP@0.5": crtp5 / cnt * 100,
        "mIoU": miou / cnt * 100,
        "IoU@0.3": crt3 / cnt * 100,
        "IoU@0.5": crt5 / cnt * 100,
        "Acc": correct / cnt * 100,
        "count": cnt,
    }
