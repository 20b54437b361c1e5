"""The reward rules of docs/rewards.md written as plainly as possible: one completion at a time, pure Python, no arrays.

This is the oracle that tests compare ``tempr1_jax.rewards`` against and the baseline that
``benchmarks/rewards.py`` measures it against. It shares no code with ``tempr1_jax.rewards``: it reads the
rules literally (``re.findall`` for the last block, a full dynamic-programming table, merge-then-sweep unions),
which is slow on long or adversarial text, so use it for checking, not for training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

TAGS = ("<think>", "</think>", "<answer>", "</answer>", "<evidence>", "</evidence>")
NUMBER = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
ITEM = re.compile(rf"\s*({NUMBER})\s*(?:to|-)\s*({NUMBER})\s*")
LETTER = re.compile(r"\s*(?:([A-H])|\(([A-H])\)|([A-H])\.)\s*")
OPTION = re.compile(r"\s*(?:([A-H])\s*|\(([A-H])\)(?:\s.*)?|([A-H])[.)].*)", re.DOTALL)  # mcq: a leading letter

LOCALIZATION = {"tg": "one_to_one", "dtg": "one_to_one", "vhd": "many_to_one", "gvqa": "many_to_one",
                "tal": "many_to_many", "mcq": None}


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def one_to_one(pred: list, gt: list) -> float:
    if not gt:
        return 0.0
    return sum(iou(pred[i], gt[i]) for i in range(min(len(pred), len(gt)))) / len(gt)


def merge(intervals: list) -> list:
    """Union of intervals as a sorted list of disjoint [start, end] (overlapping or touching ones merged)."""
    merged: list[list[float]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return merged


def many_to_one(pred: list, gt: list) -> float:
    a, b = merge(pred), merge(gt)
    inter, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):  # two-pointer sweep over the two disjoint lists
        inter += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    union = sum(e - s for s, e in a) + sum(e - s for s, e in b) - inter
    return inter / union if union > 0 else 0.0


def many_to_many(pred: list, gt: list, sigma: float = 1.0) -> float:
    n_pred, n_gt = len(pred), len(gt)
    if n_gt == 0:
        return 2.0 if n_pred == 0 else 0.0
    r_num = math.exp(-abs(n_pred - n_gt) / (min(n_gt, 3) * sigma))
    if n_pred == 0:
        return r_num
    p, g = sorted(pred), sorted(gt)
    d = [[0.0] * (n_gt + 1) for _ in range(n_pred + 1)]
    for i in range(1, n_pred + 1):
        for j in range(1, n_gt + 1):
            d[i][j] = max(d[i - 1][j], d[i][j - 1], d[i - 1][j - 1] + iou(p[i - 1], g[j - 1]))
    s_iou = d[n_pred][n_gt]
    precision, recall = s_iou / n_pred, s_iou / n_gt
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return r_num + f1


def parse_intervals(payload: str, duration: float) -> list | None:
    if payload.strip() == "":
        return []
    out = []
    for item in re.split(r"[,;]", payload):
        m = ITEM.fullmatch(item)
        if m is None:
            return None
        start, end = float(m.group(1)), float(m.group(2))
        if start > end:
            return None
        out.append((min(max(start, 0.0), duration), min(max(end, 0.0), duration)))
    return out


def parse_letter(payload: str) -> str | None:
    m = LETTER.fullmatch(payload)
    return None if m is None else next(g for g in m.groups() if g)


def parse_option(payload: str) -> str | None:
    m = OPTION.fullmatch(payload.rstrip())
    return None if m is None else next(g for g in m.groups() if g)


def last_block(text: str, tag: str) -> str | None:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return found[-1] if found else None


def format_reward(text: str, sample: Mapping, think: str = "optional") -> float:
    task, n_gt = sample["task"], len(sample["segments"])
    answer, evidence = r"<answer>(.*?)</answer>", r"<evidence>(.*?)</evidence>"
    layout = answer + (r"\s*" + evidence if task == "gvqa" else "")
    patterns = {"required": [r"<think>(.*?)</think>\s*" + layout], "forbidden": [layout],
                "optional": [r"<think>(.*?)</think>\s*" + layout, layout]}[think]
    for pattern in patterns:
        m = re.fullmatch(pattern, text.strip(), re.DOTALL)
        if m and not any(tag in block for block in m.groups() for tag in TAGS):
            blocks = m.groups()
            break
    else:
        return 0.0
    if task == "mcq":
        return 0.0 if parse_option(blocks[-1]) is None else 1.0
    duration = float(sample["duration"])
    if task == "gvqa":
        if parse_letter(blocks[-2]) is None:
            return 0.0
        intervals = parse_intervals(blocks[-1], duration)
    else:
        intervals = parse_intervals(blocks[-1], duration)
    if intervals is None:
        return 0.0
    n = len(intervals)
    ok = {"tg": n == 1, "dtg": n == n_gt, "vhd": n >= 1, "gvqa": n >= 1, "tal": True}[task]
    return 1.0 if ok else 0.0


def localization_reward(text: str, sample: Mapping, sigma: float = 1.0) -> float:
    task = sample["task"]
    if LOCALIZATION[task] is None:
        return 0.0
    duration = float(sample["duration"])
    gt = [(min(max(float(s), 0.0), duration), min(max(float(e), 0.0), duration)) for s, e in sample["segments"]]
    block = last_block(text, "evidence" if task == "gvqa" else "answer")
    pred = None if block is None else parse_intervals(block, duration)
    if pred is None:
        return 0.0
    kind = LOCALIZATION[task]
    if kind == "one_to_one":
        return one_to_one(pred, gt)
    if kind == "many_to_one":
        return many_to_one(pred, gt)
    return many_to_many(pred, gt, sigma)


def answer_reward(text: str, sample: Mapping) -> float:
    if sample["task"] not in ("gvqa", "mcq"):
        return 0.0
    block = last_block(text, "answer")
    parse = parse_option if sample["task"] == "mcq" else parse_letter
    return 1.0 if block is not None and parse(block) == sample["answer"] else 0.0


def reward(text: str, sample: Mapping, think: str = "optional", weights: Mapping | None = None,
           sigma: float = 1.0) -> dict[str, float]:
    """All reward terms of one completion: {"format", "localization", "answer", "total"}."""
    w = {"format": 1.0, "localization": 1.0, "answer": 1.0, **(weights or {})}
    out = {"format": format_reward(text, sample, think), "localization": localization_reward(text, sample, sigma),
           "answer": answer_reward(text, sample)}
    out["total"] = sum(w[k] * v for k, v in out.items())
    return out
