"""Property tests: the vectorised metrics equal a per-sample reference, stay in range, ignore input order
where they should and are monotone in their thresholds."""

from __future__ import annotations

import random

import metrics_reference as ref
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tempr1_jax import metrics
from tempr1_jax.metrics import Prediction, Rules

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Half-second grid: exact IoU boundaries (0.5, 0.7...) and zero-length windows happen often.
coord = st.integers(0, 60).map(lambda x: x / 2)
length = st.integers(0, 24).map(lambda x: x / 2)
window = st.tuples(coord, length).map(lambda t: [t[0], t[0] + t[1]])
pos_window = st.tuples(coord, st.integers(1, 24).map(lambda x: x / 2)).map(lambda t: [t[0], t[0] + t[1]])
any_window = st.one_of(window, st.tuples(coord, coord).map(list))  # may be reversed
score = st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0])
op = st.sampled_from(["ge", "gt"])


def pred_list(w=any_window, max_size=6):
    """A prediction: None (unparsable), [] (empty) or windows."""
    return st.one_of(st.none(), st.lists(w, max_size=max_size))


def as_pred(p, scores=None, **kw):
    if p is None:
        return Prediction(None, **kw)
    segs = np.asarray(p, float).reshape(-1, 2)
    return Prediction(segs, None if scores is None else np.asarray(scores, float), **kw)


def arr(g):
    return np.asarray(g, float).reshape(-1, 2)


def in_range(d):
    return all(0.0 <= v <= 100.0 + 1e-9 for v in d.values())


# --- equivalence with the reference ------------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.tuples(st.lists(pos_window, min_size=1, max_size=3), pred_list()), min_size=1, max_size=8), op)
def test_tg_matches_reference(data, op):
    gts, preds = [d[0] for d in data], [d[1] for d in data]
    rules = Rules(threshold=op)
    ours = metrics.score_tg([{"segments": g} for g in gts], [as_pred(p) for p in preds], rules)
    theirs = ref.tg(preds, gts, op)
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert in_range(ours)
    assert ours["R1@0.3"] >= ours["R1@0.5"] >= ours["R1@0.7"]


@SETTINGS
@given(st.lists(st.tuples(st.lists(pos_window, min_size=1, max_size=4), pred_list()), min_size=1, max_size=6), op)
def test_dtg_matches_reference(data, op):
    gts, preds = [d[0] for d in data], [d[1] for d in data]
    ours = metrics.score_dtg([{"segments": g} for g in gts], [as_pred(p) for p in preds], Rules(threshold=op))
    assert ours == pytest.approx(ref.dtg(preds, gts, op), abs=1e-9)
    assert ours["R1@0.3"] >= ours["R1@0.5"] >= ours["R1@0.7"]


@SETTINGS
@given(
    st.lists(
        st.tuples(st.lists(pos_window, min_size=1, max_size=4), pred_list(max_size=12), st.lists(score, max_size=12)),
        min_size=1,
        max_size=6,
    ),
    op,
    st.sampled_from(["match", "miss"]),
    st.sampled_from([10, 0, 3]),
    st.sampled_from(["skip", "zero"]),
)
def test_moment_retrieval_matches_reference(data, op, zl, max_windows, mr_empty):
    gts = [d[0] for d in data]
    preds = [d[1] for d in data]
    scores = [None if p is None else (d[2] + [0.3] * len(p))[: len(p)] for p, d in zip(preds, data, strict=True)]
    rules = Rules(threshold=op, map_zero_length=zl, max_windows=max_windows, mr_empty=mr_empty)
    ours = metrics.moment_retrieval(
        [as_pred(p, s) for p, s in zip(preds, scores, strict=True)], [arr(g) for g in gts], rules
    )
    theirs = ref.moment_retrieval(preds, scores, gts, op, zl, max_windows, mr_empty)
    assert ours["full"] == pytest.approx(theirs, abs=1e-9)  # same key names: str(0.55) == "0.55"
    full = ours["full"]
    assert in_range(full)
    maps = [full[f"MR-mAP@{metrics.threshold_name(t)}"] for t in metrics.MR_THRESHOLDS]
    r1s = [full[f"MR-R1@{metrics.threshold_name(t)}"] for t in metrics.MR_THRESHOLDS]
    assert all(a >= b - 1e-9 for a, b in zip(maps, maps[1:], strict=False))
    assert all(a >= b for a, b in zip(r1s, r1s[1:], strict=False))


@SETTINGS
@given(st.lists(st.tuples(st.lists(window, min_size=1, max_size=4), pred_list()), min_size=1, max_size=6))
def test_union_iou_matches_reference(data):
    gts, preds = [d[0] for d in data], [d[1] for d in data]
    ours = metrics.union_iou([arr(p or []) for p in preds], [arr(g) for g in gts])
    assert ours == pytest.approx([ref.union_iou(p, g) for p, g in zip(preds, gts, strict=True)], abs=1e-12)
    assert np.all((ours >= 0) & (ours <= 1))


@SETTINGS
@given(
    st.lists(
        st.integers(1, 12).flatmap(
            lambda n: st.tuples(
                st.lists(st.lists(st.integers(0, 4), min_size=3, max_size=3), min_size=n, max_size=n),
                st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, -1.0]), max_size=n + 3),
            )
        ),
        min_size=1,
        max_size=6,
    )
)
def test_highlight_matches_reference(rows):
    samples, preds = [], []
    for k, (clips, sal) in enumerate(rows):
        ids = [i for i, c in enumerate(clips) if any(c)]
        samples.append(
            {
                "id": str(k),
                "duration": 2.0 * len(clips) + 1.0,
                "relevant_clip_ids": ids,
                "saliency_scores": [clips[i] for i in ids],
            }
        )
        preds.append(Prediction(None, saliency=np.asarray(sal, float), windows_given=False))
    ours = metrics.highlight(samples, preds, Rules())
    theirs = ref.highlight([clips for clips, _ in rows], [sal for _, sal in rows])
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert in_range(ours)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.lists(window, min_size=1, max_size=3),
            pred_list(),
            st.sampled_from("ABC"),
            st.sampled_from([None, "A", "B"]),
        ),
        min_size=1,
        max_size=8,
    ),
    op,
)
def test_gvqa_matches_reference(data, op):
    samples = [{"segments": g, "answer": a} for g, _, a, _ in data]
    preds = [as_pred(p, answer=ans) for _, p, _, ans in data]
    ours = metrics.score_gvqa(samples, preds, Rules(threshold=op))

    def hull(p):
        valid = [w for w in (p or []) if w[1] >= w[0]]
        return [min(w[0] for w in valid), max(w[1] for w in valid)] if valid else None

    theirs = ref.gqa([d[3] for d in data], [hull(d[1]) for d in data], [d[2] for d in data], [d[0] for d in data], op)
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert in_range(ours)
    assert ours["IoU@0.3"] >= ours["IoU@0.5"] and ours["IoP@0.3"] >= ours["IoP@0.5"]
    assert ours["Acc"] >= ours["Acc@GQA"] and ours["mIoP"] >= ours["mIoU"] - 1e-9


@SETTINGS
@given(st.lists(st.tuples(st.lists(window, max_size=4), pred_list(window)), min_size=1, max_size=8), op)
def test_tal_f1_matches_reference(data, op):
    gts, preds = [d[0] for d in data], [d[1] for d in data]
    ours = metrics.tal_f1([arr(p or []) for p in preds], [arr(g) for g in gts], op)
    assert 100 * ours.mean(1) == pytest.approx(ref.tal_f1(preds, gts, op), abs=1e-9)
    assert np.all(np.diff(ours, axis=0) <= 1e-12)  # F1@t does not grow with t


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.lists(window, max_size=4),
            st.one_of(st.none(), st.lists(st.tuples(any_window, score), max_size=6)),
        ),
        min_size=1,
        max_size=10,
    ),
    op,
    st.sampled_from(["match", "miss"]),
    st.sampled_from(["stable", "reverse"]),
)
def test_detection_map_matches_reference(data, op, zl, ties):
    labels = [d[0] for d in data]
    gts = [d[1] for d in data]
    dets = [d[2] for d in data]
    preds = [None if d is None else as_pred([w for w, _ in d], [s for _, s in d]) for d in dets]
    thresholds = metrics.ANET_THRESHOLDS
    ap, names = metrics.detection_map(
        preds, [arr(g) for g in gts], labels, thresholds, Rules(threshold=op, map_zero_length=zl, ties=ties)
    )
    per_class, maps = ref.detection_map(list(zip(labels, gts, strict=True)), dets, thresholds, op, zl, ties)
    assert names == sorted(per_class)
    for j, c in enumerate(names):
        assert ap[:, j] == pytest.approx(per_class[c], abs=1e-9)
    assert np.all((ap >= 0) & (ap <= 1 + 1e-12))
    if names:
        m = ap.mean(1)
        assert np.all(np.diff(m) <= 1e-9)  # mAP@t does not grow with t


# --- order invariance ---------------------------------------------------------------------------------------


def _samples_preds(draw_data):
    samples, preds = [], []
    for k, (task, gt, p, sc) in enumerate(draw_data):
        sid = f"s{k}"
        s = {"id": sid, "task": task, "duration": 60.0, "segments": gt}
        if task == "gvqa":
            s["answer"] = "A"
        if task == "tal":
            s["action"] = "ab"[k % 2]
        samples.append(s)
        rec = {"id": sid, "segments": p}
        if p is not None:
            rec["scores"] = sc[: len(p)] + [0.2] * max(0, len(p) - len(sc))
        if task == "gvqa":
            rec["answer"] = "A" if k % 3 else "B"
        preds.append(rec)
    return samples, preds


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["tg", "dtg", "vhd", "gvqa", "tal"]),
            st.lists(pos_window, min_size=1, max_size=3),
            pred_list(window),
            st.lists(st.floats(0, 1, allow_nan=False), min_size=6, max_size=6, unique=True),
        ),
        min_size=1,
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_order_invariance_and_ranges(data, rnd: random.Random):
    from tempr1_jax.evaluate import evaluate_predictions

    samples, preds = _samples_preds(data)
    base = evaluate_predictions(preds, samples)
    for task, values in base.items():
        if task != "counts":
            assert in_range(values), (task, values)
    s2, p2 = samples[:], preds[:]
    rnd.shuffle(s2)
    rnd.shuffle(p2)
    # Scores are distinct within each prediction, so only cross-sample ties in TAL mAP could depend on
    # input order; every other number must not move.
    shuffled = evaluate_predictions(p2, s2)
    for task, values in base.items():
        if task == "counts":
            assert shuffled[task] == values
            continue
        for k, v in values.items():
            if task == "tal" and k.startswith("mAP"):
                continue
            assert shuffled[task][k] == pytest.approx(v, abs=1e-9), (task, k)
