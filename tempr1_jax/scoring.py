"""Prediction records -> metrics equal to the official evaluators (docs/evaluation.md).

    scores = evaluate_predictions(predictions, samples, missing="zero")   # in memory
    scores = evaluate_files("PRED.jsonl", "SAMPLES.jsonl")               # files; errors name FILE:LINE

A sample is a samples-JSONL record (docs/formats.md, as ``python -m data_pipeline.convert`` writes); a
prediction is ``id`` plus either ``completion`` (raw model text, parsed by ``tempr1_jax.rewards.parse_completion``)
or parsed fields ``segments`` / ``scores`` / ``answer`` / ``saliency``; moment_detr submissions with ``qid`` /
``pred_relevant_windows`` / ``pred_saliency_scores`` are read as they are. Every rule for awkward predictions is
a field of ``tempr1_jax.metrics.Rules``. The result is what ``metrics.json`` holds:
``{task: {metric: percent}, "counts": {task: {"total", "missing", "unparsable", "empty"}}}``.

Used by ``python -m tempr1_jax.evaluate`` and by ``tempr1_jax.evaluator`` (a policy's greedy predictions).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from data_pipeline.schema import TASKS, check_ground_truth
from tempr1_jax import metrics
from tempr1_jax.metrics import Prediction, Rules

PREDICTION_FIELDS = (
    "completion",
    "segments",
    "answer",
    "saliency",
    "pred_relevant_windows",
    "pred_saliency_scores",
)


class EvalInputError(ValueError):
    """Bad evaluation input. The message names the file and line (or list index), the field and the value."""


Record = tuple[str, Any]  # (where, decoded JSON value): where is "FILE:LINE" or "predictions[i]"


# ----------------------------------------------------------------------------------------------------------
# Reading and validating
# ----------------------------------------------------------------------------------------------------------


def read_jsonl(path: str) -> list[Record]:
    """Decoded non-blank lines of a JSONL file as ("PATH:LINE", value); lines split on "\\n" only, so a raw U+2028
    inside a string (as ``ensure_ascii=False`` writes it) stays in its line."""
    try:
        with open(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except OSError as e:
        raise EvalInputError(f"{path}: cannot read: {e}") from e
    out, offset = [], 0
    for n, raw in enumerate(raw_lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EvalInputError(f"{path}:{n}: not UTF-8 text ({e.reason}: {raw[e.start : e.start + 1]!r} at byte "
                                 f"{offset + e.start} of the file)") from None
        offset += len(raw) + 1
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{n}", json.loads(line)))
        except json.JSONDecodeError as e:
            msg = e.msg.removesuffix(" at")  # "Unterminated string starting at" + " at column"
            raise EvalInputError(f"{path}:{n}: not valid JSON ({msg} at column {e.colno})") from e
    return out


def _fail(where: str, field: str | None, msg: str) -> EvalInputError:
    return EvalInputError(f"{where}: field {field!r}: {msg}" if field else f"{where}: {msg}")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, np.ndarray) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(x: Any, where: str, field: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise _fail(where, field, f"expected a finite number, got {_short(x)}")
    return float(x)


def _number_list(x: Any, where: str, field: str) -> np.ndarray:
    if not isinstance(x, list | tuple):
        raise _fail(where, field, f"expected a list of numbers, got {_short(x)}")
    return np.array([_number(v, where, field) for v in x], np.float64)


def _windows(x: Any, where: str, field: str, width: int = 2) -> np.ndarray:
    """[[start, end], ...] (width 3 adds a score) -> float64 [K, width]."""
    if not isinstance(x, list | tuple):
        raise _fail(where, field, f"expected a list of [start, end] pairs, got {_short(x)}")
    rows = []
    for item in x:
        if not isinstance(item, list | tuple) or len(item) != width:
            shape = "[start, end]" if width == 2 else "[start, end, score]"
            raise _fail(where, field, f"expected items {shape}, got {_short(item)}")
        rows.append([_number(v, where, field) for v in item])
    return np.array(rows, np.float64).reshape(-1, width)


def _id(obj: Mapping, where: str, key: str = "id") -> str:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise _fail(where, key, f"expected a non-empty string id, got {_short(value)}")
    return str(value)


def validate_sample(obj: Any, where: str) -> dict:
    """Check one sample for what the metrics need (the shared rules of ``data_pipeline.schema.check_ground_truth``
    plus ``id``, the tal ``action`` and the vhd highlight labels); returns it with ``id`` as a string."""
    if not isinstance(obj, Mapping):
        raise _fail(where, None, f"expected a JSON object, got {_short(obj)}")
    sid = _id(obj, where)
    try:
        task, _, _ = check_ground_truth(obj, as_released=True)  # the dataset's own segments
    except ValueError as e:
        raise EvalInputError(f"{where}: {e}") from None
    if task == "tal":
        action = obj.get("action")
        if not isinstance(action, str) or not action:
            raise _fail(where, "action", f"expected the action class name, got {_short(action)}")
    if task == "vhd" and ("relevant_clip_ids" in obj or "saliency_scores" in obj):
        ids, sal = obj.get("relevant_clip_ids"), obj.get("saliency_scores")
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise _fail(where, "relevant_clip_ids", f"expected a list of clip indices >= 0, got {_short(ids)}")
        if not isinstance(sal, list) or len(sal) != len(ids):
            raise _fail(
                where,
                "saliency_scores",
                f"expected one row per relevant clip ({len(ids)}), got {_short(sal)}",
            )
        rows = [_number_list(r, where, "saliency_scores") for r in sal]
        if len({len(r) for r in rows}) > 1:
            raise _fail(where, "saliency_scores", "rows have different numbers of annotators")
    out = dict(obj)
    out["id"] = sid
    return out


def _letter(value: Any, where: str, task: str = "gvqa") -> str | None:
    """A parsed ``answer`` field by the reward library's letter rule: gvqa 'B', '(B)' or 'B.' -> 'B', any other
    text unparsable (None); mcq: ``rewards.parse_option``, a leading letter ('B. dunking a ball' -> 'B'), so that a
    model's bare reply can be given here as it is."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(where, "answer", f"expected an option letter or null, got {_short(value)}")
    from tempr1_jax.rewards import parse_letter, parse_option  # on use: the rewards bring in JAX

    return parse_option(value) if task == "mcq" else parse_letter(value)


def mcq_letter(text: str, sample: Mapping, think: str = "optional", where: str = "completion") -> str | None:
    """The option letter the metrics read from an mcq completion: that of its last ``<answer>`` block (the
    completion rules, docs/rewards.md), or, for a reply with no answer block at all (another model's bare output,
    as the benchmarks' own scripts read it), the reply's leading letter (``rewards.parse_option``)."""
    if re.search(r"<answer>.*?</answer>", text, re.DOTALL):
        return _parse_completion(text, sample, where, think).letter
    return _letter(text, where, "mcq")


def _mcq_prediction(obj: Mapping, sample: Mapping, where: str, think: str) -> Prediction:
    """An mcq line: ``answer`` (the letter, or a reply that leads with it), else ``mcq_letter`` of
    ``completion``; no intervals."""
    if "answer" in obj:
        return Prediction(None, answer=_letter(obj["answer"], where, "mcq"))
    text = obj.get("completion")
    if not isinstance(text, str):
        raise _fail(where, "completion" if "completion" in obj else None,
                    f"an mcq prediction needs 'answer' or the raw 'completion' text, got {_short(text)}")
    return Prediction(None, answer=mcq_letter(text, sample, think, where))


def _parse_completion(text: str, sample: Mapping, where: str, think: str) -> Any:
    """``rewards.parse_completion`` (docs/rewards.md), with a sample it rejects reported at this line (a benchmark
    sample the metrics accept as released, e.g. a tg query with several annotators' windows)."""
    from tempr1_jax.rewards import parse_completion  # on use: the rewards bring in JAX, parsed fields need none

    try:
        return parse_completion(text, sample, think=think)
    except ValueError as e:
        raise _fail(where, "completion", f"cannot be parsed against sample {sample['id']!r}: {e}") from e


def normalize_prediction(
    obj: Mapping, sample: Mapping, where: str, rules: Rules, think: str = "optional"
) -> Prediction:
    """One prediction record -> :class:`metrics.Prediction` (parsed fields win over ``completion``)."""
    task = sample["task"]
    fields = set(obj) & set(PREDICTION_FIELDS)
    if not fields:
        raise _fail(where, None, f"no prediction field: expected one of {', '.join(PREDICTION_FIELDS[:4])}")
    if task == "mcq":
        return _mcq_prediction(obj, sample, where, think)
    duration = float(sample["duration"])
    parsed = None
    if "completion" in obj:
        text = obj["completion"]
        if not isinstance(text, str):
            raise _fail(where, "completion", f"expected the raw model text, got {_short(text)}")
        if "segments" not in obj or (task == "gvqa" and "answer" not in obj):
            parsed = _parse_completion(text, sample, where, think)

    scores = None
    if "segments" in obj:
        raw = obj["segments"]
        segs = None if raw is None else _windows(raw, where, "segments")
        if "scores" in obj and obj["scores"] is not None:
            scores = _number_list(obj["scores"], where, "scores")
            if segs is not None and len(scores) != len(segs):
                raise _fail(where, "scores", f"{len(scores)} scores for {len(segs)} segments")
    elif "pred_relevant_windows" in obj:
        w = _windows(obj["pred_relevant_windows"], where, "pred_relevant_windows", width=3)
        segs, scores = w[:, :2], w[:, 2]
    elif parsed is not None:  # the completion parser already rejected reversed items and clipped to the duration
        segs = None if parsed.intervals is None else np.asarray(parsed.intervals, np.float64).reshape(-1, 2)
    else:
        segs = None
    if segs is not None and ("segments" in obj or "pred_relevant_windows" in obj):
        if (segs[:, 0] > segs[:, 1]).any():
            if rules.reversed == "swap":
                segs = np.sort(segs, axis=1)
            elif rules.reversed == "unparsable":
                segs, scores = None, None
        if segs is not None and rules.clip:
            segs = np.clip(segs, 0.0, duration)

    answer = None
    if task == "gvqa":
        if "answer" in obj:
            answer = _letter(obj["answer"], where, task)
        elif parsed is not None:
            answer = parsed.letter

    saliency = None
    for key in ("saliency", "pred_saliency_scores"):
        if key in obj and obj[key] is not None:
            saliency = _number_list(obj[key], where, key)
            break
    windows_given = bool(fields & {"completion", "segments", "pred_relevant_windows"})
    # A vhd line with only saliency is a highlight-only prediction (window metrics are not attempted).
    return Prediction(segs, scores, answer, saliency, windows_given or task != "vhd" or saliency is None)


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------


def score_records(
    pred_records: Sequence[Record],
    sample_records: Sequence[Record],
    rules: Rules,
    think: str,
    pred_label: str,
) -> dict[str, dict[str, Any]]:
    """Metrics of decoded records ``(where, object)`` (``read_jsonl``); errors name each record's ``where``, and
    ``pred_label`` names where the samples came from in an unknown-id error."""
    samples, where_of = [], {}
    for where, obj in sample_records:
        s = validate_sample(obj, where)
        if s["id"] in where_of:
            raise _fail(where, "id", f"duplicate sample id {s['id']!r} (first at {where_of[s['id']]})")
        where_of[s["id"]] = where
        samples.append(s)
    by_id = {s["id"]: s for s in samples}
    preds: dict[str, Prediction] = {}
    seen: dict[str, str] = {}
    for where, obj in pred_records:
        if not isinstance(obj, Mapping):
            raise _fail(where, None, f"expected a JSON object, got {_short(obj)}")
        pid = _id(obj, where, "id" if "id" in obj or "qid" not in obj else "qid")
        if pid in seen:
            raise _fail(where, "id", f"duplicate prediction for id {pid!r} (first at {seen[pid]})")
        seen[pid] = where
        if pid not in by_id:
            if rules.unknown_ids == "ignore":
                continue
            raise _fail(where, "id", f"unknown id {pid!r}: not in the {pred_label}")
        preds[pid] = normalize_prediction(obj, by_id[pid], where, rules, think)
    try:
        return metrics.score(samples, preds, rules)
    except ValueError as e:
        raise EvalInputError(str(e)) from e


def evaluate_predictions(
    predictions: Sequence[Mapping], samples: Sequence[Mapping], *, think: str = "optional", **rules: Any
) -> dict[str, dict[str, Any]]:
    """Metrics of in-memory prediction records against samples; what ``metrics.json`` holds.

    predictions: prediction records (docs/formats.md) (``id`` plus ``completion`` or parsed fields), in the order
    used to break score ties. samples: samples records. think: the think mode for
    ``rewards.parse_completion``. rules: fields of :class:`metrics.Rules` (e.g. ``missing="skip"``).
    Returns ``{task: {metric: percent}, "counts": {task: {"total", "missing", "unparsable", "empty"}}}``.
    Raises :class:`EvalInputError` (a ValueError) naming ``predictions[i]`` / ``samples[i]`` and the field.
    """
    r = Rules.make(**rules)
    return score_records(
        [(f"predictions[{i}]", p) for i, p in enumerate(predictions)],
        [(f"samples[{i}]", s) for i, s in enumerate(samples)],
        r,
        think,
        "samples",
    )


def evaluate_files(
    pred_path: str, ann_path: str, *, think: str = "optional", **rules: Any
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_predictions` on two JSONL files; errors name ``FILE:LINE`` and the field."""
    r = Rules.make(**rules)
    return score_records(read_jsonl(pred_path), read_jsonl(ann_path), r, think, f"annotations {ann_path}")


# ----------------------------------------------------------------------------------------------------------
# Generation: predictions of a policy (the trainer's periodic evaluation and the --config/--checkpoint mode)
# ----------------------------------------------------------------------------------------------------------


def prediction_record(completion: str, sample: Mapping, think: str = "optional") -> dict[str, Any]:
    """A PRED.jsonl line for one generated completion: ``id``, ``task``, the raw ``completion``, and what the
    completion parser reads from it: ``segments`` (clipped ``[[start, end], ...]`` seconds; null when unparsable;
    not for mcq), ``format`` (the format check) and, for gvqa and mcq, ``answer`` (the letter; null when
    unparsable)."""
    parsed = _parse_completion(completion, sample, f"sample {sample.get('id')!r}", think)
    rec: dict[str, Any] = {"id": str(sample["id"]), "task": sample["task"], "completion": completion}
    if sample["task"] != "mcq":
        rec["segments"] = None if parsed.intervals is None else np.asarray(parsed.intervals).tolist()
    rec["format"] = bool(parsed.format)
    if sample["task"] == "gvqa":
        rec["answer"] = parsed.letter
    elif sample["task"] == "mcq":
        rec["answer"] = mcq_letter(completion, sample, think)
    return rec


def write_predictions(records: Iterable[Mapping[str, Any]], path: str) -> str:
    """Write prediction records as JSONL (directories created); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------


def _table(names: Iterable[str], values: Mapping[str, float], width: int = 100) -> list[str]:
    cols = [(n, f"{values[n]:.2f}") for n in names if n in values]
    lines, head, row = [], "", ""
    for name, val in cols:
        w = max(len(name), len(val)) + 2
        if head and len(head) + w > width:
            lines += [head.rstrip(), row.rstrip()]
            head, row = "", ""
        head += name.rjust(w)
        row += val.rjust(w)
    if head:
        lines += [head.rstrip(), row.rstrip()]
    return lines


def format_table(result: Mapping[str, Mapping[str, Any]], rules: Rules | None = None) -> str:
    """Human-readable table per task: headline metrics (all of them are in metrics.json) and counts."""
    rules = rules or Rules()
    out = []
    for task in TASKS:
        if task not in result:
            continue
        c = result.get("counts", {}).get(task, {})
        missing = c.get("missing", 0)
        how = {"zero": "scored 0", "skip": "skipped"}.get(rules.missing, "")
        out.append(
            f"{task}: {c.get('total', 0)} samples, {missing} missing{f' ({how})' if missing else ''}, "
            f"{c.get('unparsable', 0)} unparsable, {c.get('empty', 0)} empty"
        )
        values = result[task]
        names = list(metrics.metric_names(task)) + (sorted(k for k in values if k.startswith("Acc/"))
                                                     if task == "mcq" else [])
        lines = _table(names, values)
        out += ["  " + ln for ln in lines] if lines else ["  (nothing to score)"]
        extra = len(set(values) - set(names))
        if extra:
            out.append(f"  (+{extra} more in metrics.json)")
    return "\n".join(out)


def flat_metrics(result: Mapping[str, Mapping[str, Any]], prefix: str = "eval/") -> dict[str, float]:
    """``{"eval/tg/R1@0.5": 61.2, ..., "eval/tg/count/missing": 0.0}``: scalars for a training logger."""
    out = {}
    for task, values in result.items():
        if task == "counts":
            continue
        out.update({f"{prefix}{task}/{k}": float(v) for k, v in values.items()})
    for task, counts in result.get("counts", {}).items():
        out.update({f"{prefix}{task}/count/{k}": float(v) for k, v in counts.items()})
    return out


def write_metrics(result: Mapping[str, Any], output_dir: str) -> str:
    """Write ``output_dir/metrics.json`` (created if needed); returns its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "metrics.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return path
