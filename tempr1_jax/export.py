"""``python -m tempr1_jax.export``: a train.py checkpoint's policy as a Hugging Face directory.

    python -m tempr1_jax.export --checkpoint WORKDIR_OR_STEP_DIR --output HF_DIR [--dtype bfloat16|float32] \\
        [--config configs/NAME.py] [--config.KEY=VALUE ...] [--overwrite]

reads the params of the checkpoint (the latest step of a workdir or of its ``checkpoints/`` directory, or one
``checkpoints/<step>`` directory; verified as ``evaluate`` reads them, no optimizer state) into the model of
the run's saved config (``WORKDIR/config.py``, or ``--config``), and writes ``HF_DIR``: ``config.json``,
``*.safetensors`` and the tokenizer / processor files of the run's tokenizer directory (``data.tokenizer``, else
the base model ``model.path``), loadable by ``transformers``' ``Qwen2_5_VLForConditionalGeneration`` and by
``tempr1_jax.models.qwen25vl.params.load_hf_checkpoint``. An existing non-empty ``HF_DIR`` is replaced only
with ``--overwrite``. Exit status 0, or 2 on bad input (one line).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

DTYPES = ("bfloat16", "float32")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tempr1_jax.export",
        description="Write a train.py checkpoint's policy as a Hugging Face directory.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="a train.py workdir, its checkpoints/ directory, or one checkpoints/<step> directory",
    )
    p.add_argument("--output", required=True, metavar="HF_DIR", help="the Hugging Face directory to write")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="bfloat16",
        help="weights dtype (default bfloat16, as Qwen releases them; float32 keeps the trained values)",
    )
    p.add_argument(
        "--config",
        metavar="configs/NAME.py",
        help="the run's config (default: its saved WORKDIR/config.py); --config.KEY=VALUE overrides",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty HF_DIR")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if a.startswith("--config.")]
    if len(overrides) != len(extra):
        parser.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in overrides)}")
    # Imported on use (JAX and the model): --help stays fast.
    from tempr1_jax import configlib, evaluate, evaluator, setup, sharding, train_log

    try:
        cfg, kind, where, step, _ = evaluate.generation_config(args.config, args.checkpoint, overrides)
        if kind == "hf":
            raise configlib.ConfigError(f"--checkpoint {args.checkpoint}: already a Hugging Face directory")
        out = os.path.abspath(args.output)
        if os.path.isdir(out) and os.listdir(out) and not args.overwrite:
            raise configlib.ConfigError(f"--output {args.output}: not empty (give --overwrite to replace it)")
        if os.path.exists(out) and not os.path.isdir(out):
            raise configlib.ConfigError(f"--output {args.output}: a file, not a directory")
    except (configlib.ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train_log.setup_logging(None)
    try:
        sharding.maybe_initialize_distributed(**cfg.distributed)
        mesh = sharding.make_mesh(cfg.mesh.to_dict())
        setup.apply_overrides(cfg, setup.prepare_synthetic(cfg))
        _, graphdef, params, _, cfg, step = evaluator.load_policy(cfg, kind, where, step, mesh)
        setup.export_params(graphdef, params, out, tokenizer_dir=cfg.data.tokenizer or cfg.model.path, dtype=args.dtype)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: the policy of step {step} of {os.path.dirname(where)} ({args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
