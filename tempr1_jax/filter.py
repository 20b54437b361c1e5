"""``python -m tempr1_jax.filter``: offline difficulty filtering of RL samples with a policy's own rollouts.

    python -m tempr1_jax.filter --config configs/NAME.py --checkpoint DIR --samples IN.jsonl [IN2.jsonl ...] \
        --output OUT.jsonl [--k 8] [--keep informative|all] [--reward total] [--min-mean X] [--max-mean Y] \
        [--kept KEPT.jsonl] [--config.KEY=VALUE ...]

rolls out k completions per sample (at ``rollout.temperature``, ``rollout.max_new_tokens``) with the policy of DIR
(a train.py checkpoint or a Hugging Face directory, loaded as ``evaluate`` loads them), scores each with the
sample's own reward (``tempr1_jax.rewards.compute_rewards``) and writes:

- ``OUT.jsonl``: every sample as it was read, plus ``reward_mean`` / ``reward_std`` (population std) of the
  chosen reward over its k completions, ``reward_k`` and ``rewards`` (the k values). Appended batch by batch:
  a restarted command skips the ids already there (a long pass over a corpus never starts again from zero).
- ``KEPT.jsonl`` (default ``OUT.kept.jsonl``): the samples that pass the filter, as they were read, in input
  order: a samples file to train on. ``--keep informative`` (default) drops the samples whose k rewards are all
  equal (always or never solved: a GRPO group with no learning signal); ``--min-mean`` / ``--max-mean`` bound
  the mean reward too.

The stream, batching (``eval.batch_size`` prompts per batch), sharding and processes are those of
``evaluate --config ... --checkpoint ...`` (``tempr1_jax.evaluator.Evaluator`` with G = k); frames come from
``data.frames``. A progress line with ETA is printed per batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger("tempr1_jax.filter")

KEEP = ("informative", "all")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tempr1_jax.filter",
        description="Score samples by k rollouts of a policy and keep those it neither always nor never solves.",
        epilog="--config.KEY=VALUE overrides any config key (e.g. --config.eval.batch_size=16).",
    )
    p.add_argument("--config", required=True, metavar="configs/NAME.py", help="the training config (model, data)")
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="a train.py workdir / checkpoint directory, or a Hugging Face directory",
    )
    p.add_argument("--samples", required=True, nargs="+", metavar="IN.jsonl", help="samples JSONL file(s)")
    p.add_argument(
        "--output",
        required=True,
        metavar="OUT.jsonl",
        help="every sample with its reward mean / std (appended; a rerun resumes)",
    )
    p.add_argument("--kept", metavar="KEPT.jsonl", help="the filtered samples (default: OUT.kept.jsonl)")
    p.add_argument("--k", type=int, default=8, help="completions per sample (default: 8)")
    p.add_argument(
        "--keep",
        choices=KEEP,
        default="informative",
        help="informative: drop samples whose k rewards are all equal (default); all: no such drop",
    )
    p.add_argument(
        "--reward", default="total", help="the reward the filter reads: total (default), format, localization or answer"
    )
    p.add_argument("--min-mean", type=float, default=-np.inf, metavar="X", help="keep mean reward >= X")
    p.add_argument("--max-mean", type=float, default=np.inf, metavar="Y", help="keep mean reward <= Y")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    from tempr1_jax import configlib, evaluate, rewards, train_log  # heavy: after --help and flag errors

    if args.k < 1:
        parser.error(f"--k {args.k}: must be >= 1")
    if args.reward not in rewards.REWARD_KEYS + ("total",):
        parser.error(f"--reward {args.reward!r}: must be one of total, {', '.join(rewards.REWARD_KEYS)}")
    try:
        cfg = configlib.parse_flags(["filter", "--config", args.config, *extra]).config
        kind, where, step = evaluate.resolve_checkpoint(args.checkpoint)
        train_log.setup_logging(None)
        return run_filter(cfg, kind, where, step, args)
    except (configlib.ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def read_done(path: str) -> dict[str, dict]:
    """The records already in ``OUT.jsonl`` by id; a last line cut short by a kill is dropped (and the file
    truncated to its complete lines)."""
    if not os.path.isfile(path):
        return {}
    with open(path, "rb") as f:
        raw = f.read()
    good = raw[: raw.rfind(b"\n") + 1]
    if len(good) != len(raw):
        log.warning("%s: dropping a last line cut short (%d bytes)", path, len(raw) - len(good))
        with open(path, "wb") as f:
            f.write(good)
    done = {}
    for lineno, line in enumerate(good.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
                done[str(rec["id"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{lineno}: not a record of this command (JSON with an id)") from None
    return done


def score_record(sample: Mapping[str, Any], values: np.ndarray) -> dict[str, Any]:
    """A sample plus the statistics of its k reward values (float64 [k])."""
    return {
        **sample,
        "reward_mean": float(np.mean(values)),
        "reward_std": float(np.std(values)),
        "reward_k": int(values.size),
        "rewards": [float(v) for v in values],
    }


def keeps(rec: Mapping[str, Any], keep: str, lo: float, hi: float) -> bool:
    """Whether a scored record passes the filter (``--keep``, ``--min-mean``, ``--max-mean``)."""
    return (keep == "all" or rec["reward_std"] > 0) and lo <= rec["reward_mean"] <= hi


def run_filter(cfg: Any, kind: str, where: str, step: int | None, args: argparse.Namespace) -> int:
    """The command (see the module docstring); every process calls it, process 0 writes. Returns 0."""
    import jax

    from data_pipeline import stream as data_stream
    from tempr1_jax import evaluator, setup, sharding

    sharding.maybe_initialize_distributed(**cfg.distributed)
    mesh = sharding.make_mesh(cfg.mesh.to_dict())
    samples = data_stream.samples_of(args.samples)
    # Process 0 writes OUT.jsonl: its ids decide what is left, for every process (no shared file system needed).
    done = set(read_done(args.output)) if jax.process_index() == 0 else set()
    if jax.process_count() > 1:
        done = set(sharding.gather_json(sorted(done))[0])
    todo = [s for s in samples if s["id"] not in done]
    log.info(
        "%d samples, %d already scored in %s, %d to go (k = %d)",
        len(samples),
        len(samples) - len(todo),
        args.output,
        len(todo),
        args.k,
    )
    if todo:
        # The stream reads files: the samples left, in input order, one copy per process.
        todo_path = f"{args.output}.todo{jax.process_index()}.jsonl"
        with open(todo_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(s) + "\n" for s in todo)
        setup.apply_overrides(cfg, setup.prepare_synthetic(cfg))  # the demo's frames and tokenizer
        with cfg.unlocked():
            cfg.eval.samples, cfg.eval.max_samples = (todo_path,), 0
            if "extra_samples" in cfg.eval:
                cfg.eval.extra_samples = ()
        setup.check_batch_sizes(cfg, mesh)
        tokenizer, graphdef, params, mcfg, cfg, _ = evaluator.load_policy(cfg, kind, where, step, mesh)
        ev = evaluator.Evaluator(
            cfg,
            graphdef,
            mcfg,
            tokenizer,
            mesh,
            group_size=args.k,
            temperature=cfg.rollout.temperature,
            max_new_tokens=cfg.rollout.max_new_tokens,
        )
        with jax.set_mesh(mesh):
            score_batches(ev, params, args, setup.reward_kwargs(cfg), tokenizer)
        os.remove(todo_path)
    if jax.process_index() == 0:
        write_kept(samples, read_done(args.output), args)
    return 0


def score_batches(ev: Any, params: Any, args: argparse.Namespace, reward_kw: Mapping[str, Any], tokenizer: Any) -> None:
    """k completions per sample of every batch, scored, appended to ``args.output`` (process 0) batch by batch."""
    import jax

    from data_pipeline import stream as data_stream
    from tempr1_jax import evaluator, policy, rewards, train_log

    progress, n, kept = None, 0, 0
    out = open(args.output, "a", encoding="utf-8") if jax.process_index() == 0 else None
    try:
        for i, batch in enumerate(ev.batches(), 1):
            tokens, mask = ev.generate(params, batch)
            rows = data_stream.batch_samples(batch, valid_only=False)
            texts = policy.decode_completions(tokenizer, tokens, mask)
            rew = rewards.compute_rewards(texts, [r for r in rows for _ in range(args.k)], **reward_kw)
            values = np.asarray(rew[args.reward], np.float64).reshape(len(rows), args.k)
            recs = [score_record(r, values[j]) for j, r in enumerate(rows) if batch.sample_mask[j]]
            recs = evaluator.gather_records(recs)
            n += len(recs)
            kept += sum(keeps(r, args.keep, args.min_mean, args.max_mean) for r in recs)
            if out is not None:
                out.writelines(json.dumps(r) + "\n" for r in recs)
                out.flush()
                os.fsync(out.fileno())
            if progress is None:  # the number of batches is known once the stream is open
                progress = train_log.Progress(ev.num_batches, every=1, keys=("kept",), unit="batch")
            progress.update(i, {"kept": kept / max(n, 1)})
    finally:
        if out is not None:
            out.close()


def write_kept(
    samples: Sequence[Mapping[str, Any]], scored: Mapping[str, Mapping[str, Any]], args: argparse.Namespace
) -> None:
    """The samples that pass the filter, as they were read, in input order; a summary line on stdout."""
    path = args.kept or os.path.splitext(args.output)[0] + ".kept.jsonl"
    kept = [s for s in samples if s["id"] in scored and keeps(scored[s["id"]], args.keep, args.min_mean, args.max_mean)]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(s) + "\n" for s in kept)
    os.replace(tmp, path)
    missing = sum(s["id"] not in scored for s in samples)
    means = [scored[s["id"]]["reward_mean"] for s in samples if s["id"] in scored]
    equal = sum(scored[s["id"]]["reward_std"] == 0 for s in samples if s["id"] in scored)
    print(
        f"scored {len(means)} samples (k = {args.k}, mean {args.reward} reward "
        f"{np.mean(means) if means else float('nan'):.4f}; {equal} with all k rewards equal); kept {len(kept)} "
        f"-> {path}; every sample with its reward mean / std -> {args.output}"
        + (f"; {missing} not scored (their video is not in data.frames)" if missing else "")
    )


if __name__ == "__main__":
    sys.exit(main())
