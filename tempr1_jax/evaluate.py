"""``python -m tempr1_jax.evaluate``: score predictions, or decode a checkpoint's, with the official metrics.

    python -m tempr1_jax.evaluate --predictions PRED.jsonl --annotations SAMPLES.jsonl [--output DIR] [rules]

reads SAMPLES.jsonl (docs/formats.md, as ``python -m data_pipeline.convert`` writes) and PRED.jsonl (``id`` plus
either ``completion``, raw model text, or parsed fields ``segments`` / ``scores`` / ``answer`` / ``saliency``;
moment_detr submissions are read as they are), prints a table per task and writes ``DIR/metrics.json``. Every
rule for awkward predictions is a flag (``--help``; docs/evaluation.md).

    python -m tempr1_jax.evaluate --checkpoint WORKDIR_OR_STEP_DIR [--config.eval.KEY=V] [--output DIR]
    python -m tempr1_jax.evaluate --config configs/NAME.py --checkpoint HF_DIR --output DIR

decodes the config's held-out samples (``eval.samples``, greedy by default) with the policy of DIR (a train.py
checkpoint, whose run's saved config ``WORKDIR/config.py`` is the default ``--config``, or a Hugging Face
directory), writes ``predictions.jsonl`` (raw completion, parsed intervals and answer) and ``metrics.json`` to
a new directory (default ``WORKDIR/evaluate/step_<n>``; an existing evaluation is only replaced with
``--overwrite``), and prints the same table (``tempr1_jax.evaluator``, which the trainer's periodic evaluation
runs too).

The scoring API is ``tempr1_jax.scoring`` (``evaluate_predictions``, ``evaluate_files``, ``flat_metrics``...),
also importable from here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from tempr1_jax.metrics import RULE_CHOICES, RULE_HELP, Rules
from tempr1_jax.scoring import (  # noqa: F401  (the public scoring API, importable from the command's module)
    EvalInputError,
    evaluate_files,
    evaluate_predictions,
    flat_metrics,
    format_table,
    normalize_prediction,
    prediction_record,
    read_jsonl,
    score_records,
    validate_sample,
    write_metrics,
    write_predictions,
)

# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tempr1_jax.evaluate",
        description="Score predictions with metrics equal to the official evaluators (docs/evaluation.md).",
    )
    p.add_argument("--predictions", metavar="PRED.jsonl", help="predictions: id + completion or parsed fields")
    p.add_argument("--annotations", metavar="SAMPLES.jsonl", help="samples written by data_pipeline.convert")
    p.add_argument("--output", metavar="DIR", help="write DIR/metrics.json")
    p.add_argument("--config", metavar="configs/NAME.py",
                   help="generation mode: the config (model, data, eval.*; default for a train.py checkpoint: its "
                        "run's saved WORKDIR/config.py); --config.KEY=VALUE overrides")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="generation mode: a train.py workdir / checkpoint directory, or a Hugging Face directory")
    p.add_argument("--overwrite", action="store_true",
                   help="generation mode: replace the predictions and metrics an earlier evaluation left in the "
                        "output directory (default: refuse)")
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
        if not args.checkpoint:
            parser.error("generation mode needs --checkpoint DIR (and --config for a Hugging Face directory)")
        if args.predictions or args.annotations:
            parser.error("give either --config/--checkpoint (generate) or --predictions/--annotations (score)")
        given = {a.split("=", 1)[0] for a in argv}
        if "--hl-saliency" not in given:  # completions carry no saliency: score the highlights from the windows
            rules = dataclasses.replace(rules, hl_saliency="from_segments")
        return run_generation(args.config, args.checkpoint, overrides, output=args.output, rules=rules,
                              think=args.think if "--think" in given else None, overwrite=args.overwrite)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.predictions or not args.annotations:
        parser.error("give --predictions PRED.jsonl and --annotations SAMPLES.jsonl")
    if args.overwrite:
        parser.error("--overwrite belongs to generation mode (--checkpoint)")
    try:
        preds, samples = read_jsonl(args.predictions), read_jsonl(args.annotations)
        for path, rows, what in ((args.annotations, samples, "sample"), (args.predictions, preds, "prediction")):
            if not rows:
                raise EvalInputError(f"{path}: no {what} in the file (empty): nothing to score")
        result = score_records(preds, samples, rules, args.think, f"annotations {args.annotations}")
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


def generation_config(config: str | None, checkpoint: str, overrides: Sequence[str]) -> tuple:
    """(config, kind, checkpoint path, step, the run's saved config dict or None) of generation mode: the
    config file is ``config``, else the saved ``WORKDIR/config.py`` of a train.py checkpoint's run. Raises
    ConfigError / FileNotFoundError with one line."""
    from tempr1_jax import configlib

    kind, where, step = resolve_checkpoint(checkpoint)
    workdir = os.path.dirname(where) if kind == "train" else None
    saved_py = os.path.join(workdir, configlib.RUN_CONFIG) if workdir else None
    if config is None:
        if kind == "hf":
            raise configlib.ConfigError(f"--checkpoint {checkpoint} is a Hugging Face directory: give --config "
                                        "configs/NAME.py (its data and eval.samples)")
        if not os.path.isfile(saved_py):
            raise configlib.ConfigError(f"--checkpoint {checkpoint}: its run saved no config ({saved_py}, written "
                                        "by train since it exists): give --config configs/NAME.py and the run's "
                                        "overrides")
        config = saved_py
    cfg = configlib.parse_flags(["evaluate", "--config", config, *overrides]).config
    saved = configlib.read_run_config(workdir) if workdir and config != saved_py else None
    return cfg, kind, where, step, saved


def run_generation(config: str | None, checkpoint: str, overrides: Sequence[str], *, output: str | None,
                   rules: Rules, think: str | None = None, overwrite: bool = False) -> int:
    """``--checkpoint DIR [--config configs/NAME.py]``: decode the config's ``eval.samples`` with the policy of
    ``DIR`` (``eval.temperature``, greedy by default), write ``predictions.jsonl`` and ``metrics.json`` under
    ``output`` and print the table. ``output`` defaults to ``<workdir>/evaluate/step_<n>`` for a train.py
    checkpoint and is required for a Hugging Face directory; an existing evaluation there is replaced only
    with ``overwrite``. Returns the exit status."""
    # Imported on use: generation needs JAX, the model and TensorFlow's data stream; scoring needs none of them.
    from tempr1_jax import configlib, evaluator, train_log

    try:
        cfg, kind, where, step, saved = generation_config(config, checkpoint, overrides)
        if kind == "hf" and not output:
            raise configlib.ConfigError(f"--checkpoint {checkpoint} is a Hugging Face directory: give --output DIR "
                                        "(there is no run directory to write into)")
    except (configlib.ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train_log.setup_logging(None)
    try:
        return evaluator.evaluate_checkpoint(cfg, kind, where, step, output=output, rules=dataclasses.asdict(rules),
                                             think=think, overwrite=overwrite, run_config=saved)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
