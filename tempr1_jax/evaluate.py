"""Score predictions with metrics equal to the official evaluators: ``python -m tempr1_jax.evaluate``.

    python -m tempr1_jax.evaluate --predictions PRED.jsonl --annotations SAMPLES.jsonl [--output DIR] [rules]

reads SAMPLES.jsonl (SPEC section 6, as ``python -m data_pipeline.convert`` writes) and PRED.jsonl (``id``
plus either ``completion``, raw model text parsed by ``tempr1_jax.rewards.parse_completion``, or parsed fields
``segments`` / ``scores`` / ``answer`` / ``saliency``; moment_detr submissions with ``qid`` /
``pred_relevant_windows`` / ``pred_saliency_scores`` are read as they are), prints a table per task and writes
``DIR/metrics.json``. Every rule for awkward predictions is a flag (``--help``; README "## Evaluation").

    python -m tempr1_jax.evaluate --config configs/NAME.py --checkpoint DIR [--config.eval.KEY=V] [--output DIR]

decodes the config's held-out samples (``eval.samples``, greedy by default) with the policy of DIR (a train.py
checkpoint or a Hugging Face directory), writes ``predictions.jsonl`` (raw completion, parsed intervals and
answer) and ``metrics.json``, and prints the same table. The trainer's periodic evaluation runs the same code
(``generate_predictions`` then :func:`evaluate_predictions` on in-memory records).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tempr1_jax import metrics
from tempr1_jax.metrics import RULE_CHOICES, RULE_HELP, TASKS, Prediction, Rules

LETTERS = "ABCDEFGH"
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
    """Decoded non-blank lines of a JSONL file as ("PATH:LINE", value)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EvalInputError(f"{path}: cannot read: {e}") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{n}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise EvalInputError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from e
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
    """Check one SPEC section 6 sample for what the metrics need; returns it with ``id`` as a string."""
    if not isinstance(obj, Mapping):
        raise _fail(where, None, f"expected a JSON object, got {_short(obj)}")
    sid = _id(obj, where)
    task = obj.get("task")
    if task not in TASKS:
        raise _fail(where, "task", f"{_short(task)} is not one of {', '.join(TASKS)}")
    duration = _number(obj.get("duration"), where, "duration")
    if duration < 0:
        raise _fail(where, "duration", f"must be >= 0 seconds, got {duration}")
    segs = _windows(obj.get("segments"), where, "segments")
    if np.any(segs[:, 0] > segs[:, 1]):
        bad = segs[segs[:, 0] > segs[:, 1]][0].tolist()
        raise _fail(where, "segments", f"start > end in {bad}")
    if task != "tal" and len(segs) == 0:
        raise _fail(where, "segments", f"a {task} sample needs at least one ground-truth window")
    if task == "gvqa":
        answer = obj.get("answer")
        if not isinstance(answer, str) or len(answer) != 1 or answer not in LETTERS:
            raise _fail(where, "answer", f"expected one option letter A-H, got {_short(answer)}")
        options = obj.get("options")
        if isinstance(options, list) and LETTERS.index(answer) >= len(options):
            raise _fail(where, "answer", f"{answer!r} but only {len(options)} options")
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


def _letter(value: Any, where: str) -> str | None:
    """A parsed ``answer`` field by the reward library's letter rule: 'B', '(B)' or 'B.' -> 'B'; any other text
    is an unparsable answer (None)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(where, "answer", f"expected an option letter or null, got {_short(value)}")
    from tempr1_jax.rewards import parse_letter  # imported on use: it brings in JAX

    return parse_letter(value)


def _parse_completion(text: str, sample: Mapping, where: str, think: str) -> Any:
    """``rewards.parse_completion`` (SPEC section 2), with a sample it rejects reported at this line."""
    from tempr1_jax.rewards import parse_completion  # imported on use: it brings in JAX

    try:
        return parse_completion(text, sample, think=think)
    except ValueError as e:
        raise _fail(where, "completion", f"cannot be parsed against sample {sample['id']!r}: {e}") from e


def normalize_prediction(
    obj: Mapping, sample: Mapping, where: str, rules: Rules, think: str = "optional"
) -> Prediction:
    """One prediction record -> :class:`metrics.Prediction` (parsed fields win over ``completion``)."""
    task = sample["task"]
    duration = float(sample["duration"])
    fields = set(obj) & set(PREDICTION_FIELDS)
    if not fields:
        raise _fail(where, None, f"no prediction field: expected one of {', '.join(PREDICTION_FIELDS[:4])}")
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
    elif parsed is not None:  # the SPEC parser already rejected reversed items and clipped to the duration
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
            answer = _letter(obj["answer"], where)
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


def _score_records(
    pred_records: Sequence[Record],
    sample_records: Sequence[Record],
    rules: Rules,
    think: str,
    pred_label: str,
) -> dict[str, dict[str, Any]]:
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

    predictions: SPEC section 6 prediction records (``id`` plus ``completion`` or parsed fields), in the order
    used to break score ties. samples: SPEC section 6 samples. think: the think mode for
    ``rewards.parse_completion``. rules: fields of :class:`metrics.Rules` (e.g. ``missing="skip"``).
    Returns ``{task: {metric: percent}, "counts": {task: {"total", "missing", "unparsable", "empty"}}}``.
    Raises :class:`EvalInputError` (a ValueError) naming ``predictions[i]`` / ``samples[i]`` and the field.
    """
    r = Rules.make(**rules)
    return _score_records(
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
    return _score_records(read_jsonl(pred_path), read_jsonl(ann_path), r, think, f"annotations {ann_path}")


# ----------------------------------------------------------------------------------------------------------
# Generation: predictions of a policy (the trainer's periodic evaluation and the --config/--checkpoint mode)
# ----------------------------------------------------------------------------------------------------------


def prediction_record(completion: str, sample: Mapping, think: str = "optional") -> dict[str, Any]:
    """A PRED.jsonl line for one generated completion: ``id``, ``task``, the raw ``completion``, and what the
    SPEC parser reads from it: ``segments`` (clipped ``[[start, end], ...]`` seconds; null when unparsable),
    ``format`` (the format check) and, for gvqa, ``answer`` (the letter; null when unparsable)."""
    parsed = _parse_completion(completion, sample, f"sample {sample.get('id')!r}", think)
    rec: dict[str, Any] = {"id": str(sample["id"]), "task": sample["task"], "completion": completion}
    rec["segments"] = None if parsed.intervals is None else np.asarray(parsed.intervals).tolist()
    rec["format"] = bool(parsed.format)
    if sample["task"] == "gvqa":
        rec["answer"] = parsed.letter
    return rec


def generate_predictions(
    batches: Iterable[Mapping[str, np.ndarray]],
    generate: Any,
    tokenizer: Any,
    *,
    think: str = "optional",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prediction records and their samples for every valid row of ``batches`` (``data_pipeline.stream``
    batches of this host).

    generate: ``generate(batch) -> (tokens int [B, T], completion_mask bool [B, T])``, one completion per row
    (numpy, this host's rows): the policy's decoding, e.g. ``tempr1_jax.train.Evaluator``'s greedy sampler.
    Completions are decoded with ``tokenizer`` (special tokens dropped) and parsed by the SPEC rules.
    """
    from data_pipeline.stream import batch_samples  # imported on use: the scoring path needs neither
    from tempr1_jax.policy import decode_completions

    records, samples = [], []
    for batch in batches:
        tokens, mask = generate(batch)
        texts = decode_completions(tokenizer, tokens, mask)
        valid = np.asarray(batch["sample_mask"], bool)
        rows = batch_samples(batch, valid_only=False)
        if len(texts) != len(rows):
            raise ValueError(f"generate returned {len(texts)} completions for a batch of {len(rows)} prompts")
        for j, sample in enumerate(rows):
            if valid[j]:
                records.append(prediction_record(texts[j], sample, think))
                samples.append(sample)
    return records, samples


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
        lines = _table(metrics.metric_names(task), values)
        out += ["  " + ln for ln in lines] if lines else ["  (nothing to score)"]
        extra = len(set(values) - set(metrics.metric_names(task)))
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


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tempr1_jax.evaluate",
        description="Score predictions with metrics equal to the official evaluators (README: Evaluation).",
    )
    p.add_argument("--predictions", metavar="PRED.jsonl", help="predictions: id + completion or parsed fields")
    p.add_argument("--annotations", metavar="SAMPLES.jsonl", help="samples written by data_pipeline.convert")
    p.add_argument("--output", metavar="DIR", help="write DIR/metrics.json")
    p.add_argument("--config", metavar="configs/NAME.py",
                   help="generation mode: the training config (model, data, eval.*); --config.KEY=VALUE overrides")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="generation mode: a train.py workdir / checkpoint directory, or a Hugging Face directory")
    p.add_argument(
        "--think",
        default="optional",
        choices=("optional", "required", "forbidden"),
        help="think mode passed to the completion parser (default: optional)",
    )
    g = p.add_argument_group("metric rules (defaults reproduce the official evaluators)")
    defaults = Rules()
    for f in dataclasses.fields(Rules):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name in RULE_CHOICES:
            g.add_argument(
                flag,
                choices=RULE_CHOICES[f.name],
                default=default,
                help=f"{RULE_HELP[f.name]} (default: {default})",
            )
        elif isinstance(default, bool):
            g.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=f"{RULE_HELP[f.name]} (default: {default})",
            )
        else:
            g.add_argument(
                flag, type=int, default=default, metavar="N", help=f"{RULE_HELP[f.name]} (default: {default})"
            )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    rules = Rules(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Rules)})
    overrides = [a for a in extra if a.startswith("--config.")]
    if args.config or args.checkpoint or overrides:
        unknown = [a for a in extra if not a.startswith("--config.")]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if not args.config or not args.checkpoint:
            parser.error("generation mode needs both --config configs/NAME.py and --checkpoint DIR")
        if args.predictions or args.annotations:
            parser.error("give either --config/--checkpoint (generate) or --predictions/--annotations (score)")
        return run_generation(args.config, args.checkpoint, overrides, output=args.output, rules=rules,
                              think=args.think if "--think" in argv else None)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.predictions or not args.annotations:
        parser.error("give --predictions PRED.jsonl and --annotations SAMPLES.jsonl")
    try:
        result = _score_records(
            read_jsonl(args.predictions),
            read_jsonl(args.annotations),
            rules,
            args.think,
            f"annotations {args.annotations}",
        )
    except EvalInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result, rules))
    if args.output:
        print(f"wrote {write_metrics(result, args.output)}")
    return 0


def resolve_checkpoint(path: str) -> tuple[str, str, int | None]:
    """``--checkpoint``: ("hf", dir, None) for a Hugging Face directory (config.json + *.safetensors), or
    ("train", checkpoints dir, step or None = latest) for a train.py workdir, its ``checkpoints`` directory,
    or one step directory in it. Raises FileNotFoundError naming the path otherwise."""
    p = os.path.abspath(path)
    if not os.path.isdir(p):
        raise FileNotFoundError(f"--checkpoint {path}: no such directory")
    names = os.listdir(p)
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        return "hf", p, None
    if os.path.isdir(os.path.join(p, "checkpoints")):
        return "train", os.path.join(p, "checkpoints"), None
    base = os.path.basename(p)
    if base.isdigit() and os.path.isdir(os.path.join(p, "state")):
        return "train", os.path.dirname(p), int(base)
    if any(n.isdigit() and os.path.isdir(os.path.join(p, n, "state")) for n in names):
        return "train", p, None
    raise FileNotFoundError(
        f"--checkpoint {path}: neither a Hugging Face model directory (config.json + *.safetensors) nor a "
        "train.py checkpoint (a workdir, its checkpoints/ directory or one checkpoints/<step> directory)"
    )


def run_generation(config: str, checkpoint: str, overrides: Sequence[str], *, output: str | None,
                   rules: Rules, think: str | None = None) -> int:
    """``--config configs/NAME.py --checkpoint DIR``: decode the config's ``eval.samples`` with the policy of
    ``DIR`` (``eval.temperature``, greedy by default), write ``predictions.jsonl`` and ``metrics.json`` under
    ``output`` and print the table. ``output`` defaults to ``<workdir>/eval/step_<n>`` for a train.py checkpoint
    and ``eval/<directory name>`` for a Hugging Face directory. Returns the exit status."""
    from tempr1_jax import configlib  # imported on use: generation needs JAX, the model and the data pipeline

    try:
        cfg = configlib.parse_flags(["evaluate", "--config", config, *overrides]).config
        kind, where, step = resolve_checkpoint(checkpoint)
    except (configlib.ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tempr1_jax import train

    train.setup_logging(None)
    try:
        return train.evaluate_checkpoint(cfg, kind, where, step, output=output, rules=dataclasses.asdict(rules),
                                         think=think)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
