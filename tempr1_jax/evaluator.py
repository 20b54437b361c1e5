"""Greedy evaluation of a policy on a held-out sample set: the trainer's periodic evaluation and the
``python -m tempr1_jax.evaluate --config ... --checkpoint DIR`` mode run this same code.

    evaluator = Evaluator(cfg, graphdef, mcfg, tokenizer, mesh)
    result = evaluator.run(params, out_dir)    # predictions.jsonl + metrics.json under out_dir

Decoding uses ``eval.temperature`` (0: greedy) and ``eval.max_new_tokens`` on ``eval.samples`` (frames from
``data.frames``); predictions are scored by ``tempr1_jax.scoring`` (the official evaluators' metrics) and by
the training rewards.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from data_pipeline import stream as data_stream
from tempr1_jax import checkpoint, policy, rewards, rollout, scoring, setup, sharding, train_log
from tempr1_jax.models.qwen25vl import config as qconfig

log = logging.getLogger(__name__)


def generate_predictions(
    batches: Iterable[data_stream.Batch],
    generate: Callable[[data_stream.Batch], tuple[np.ndarray, np.ndarray]],
    tokenizer: Any,
    *,
    think: str = "optional",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prediction records and their samples for every valid row of ``batches`` (stream batches of this host).

    generate: ``generate(batch) -> (tokens int [B, T], completion_mask bool [B, T])``, one completion per row
    (numpy, this host's rows), e.g. ``Evaluator``'s greedy sampler. Completions are decoded with ``tokenizer``
    (special tokens dropped) and parsed by the completion rules (``scoring.prediction_record``).
    """
    records, samples = [], []
    for batch in batches:
        tokens, mask = generate(batch)
        texts = policy.decode_completions(tokenizer, tokens, mask)
        valid = np.asarray(batch.sample_mask, bool)
        rows = data_stream.batch_samples(batch, valid_only=False)
        if len(texts) != len(rows):
            raise ValueError(f"generate returned {len(texts)} completions for a batch of {len(rows)} prompts")
        for j, sample in enumerate(rows):
            if valid[j]:
                records.append(scoring.prediction_record(texts[j], sample, think))
                samples.append(sample)
    return records, samples


def gather_records(records: list[dict]) -> list[dict]:
    """Every process's JSON records, concatenated in process order (identity on one process)."""
    if jax.process_count() == 1:
        return records
    return [r for part in sharding.gather_json(records) for r in part]


class Evaluator:
    """Greedy (``eval.temperature``) decoding over ``eval.samples``, scored by ``tempr1_jax.scoring``.

    ``group_size``, ``temperature`` and ``max_new_tokens`` override the evaluation's 1 completion per prompt,
    ``eval.temperature`` and ``eval.max_new_tokens`` (``tempr1_jax.filter`` samples k completions per prompt at
    the rollout's temperature through the same stream and sampler)."""

    def __init__(self, cfg: ml_collections.ConfigDict, graphdef: Any, mcfg: qconfig.Qwen25VLConfig,
                 tokenizer: Any, mesh: jax.sharding.Mesh, *, group_size: int = 1, temperature: float | None = None,
                 max_new_tokens: int | None = None) -> None:
        self.cfg, self.tokenizer, self.mcfg = cfg, tokenizer, mcfg
        e = cfg.eval
        self.group_size = group_size
        self.scfg = rollout.sampling_config(
            cfg.rollout, group_size, mcfg.eos_token_id, tokenizer,
            temperature=e.temperature if temperature is None else temperature,
            max_new_tokens=max_new_tokens or e.max_new_tokens)
        self.sampler = rollout.Sampler(graphdef, mcfg, mesh, self.scfg)
        self.sizer: policy.VisionSizer | None = None
        stream_cfg = ml_collections.ConfigDict(cfg.data.to_dict())
        stream_cfg.samples = list(e.samples)
        stream_cfg.repeat = False
        stream_cfg.shuffle = False
        stream_cfg.task_weights = ml_collections.ConfigDict()
        self.stream_cfg = setup.host_stream_config(stream_cfg, int(e.batch_size))
        self.rng = jax.random.PRNGKey(cfg.seed + 7)  # only used when eval.temperature > 0

    def batches(self) -> Iterator[data_stream.Batch]:
        s = data_stream.make_stream(self.stream_cfg, process_index=jax.process_index(),
                                    process_count=jax.process_count(), tokenizer=self.tokenizer)
        n = s.batches_per_pass()
        if self.cfg.eval.max_samples:
            per_batch = self.stream_cfg.batch_size * jax.process_count()
            n = min(n, -(-int(self.cfg.eval.max_samples) // per_batch))
        self.num_batches = n
        if self.sizer is None:
            self.sizer = policy.stream_sizer(self.mcfg, s, self.cfg.model.vision_multiples)
            rows = min(s.num_samples, n * self.stream_cfg.batch_size * jax.process_count())
            setup.prime_rewards(s.samples, rows * self.group_size, setup.reward_kwargs(self.cfg))
        try:
            for _ in range(n):
                yield next(s)
        finally:
            s.close()

    def run(self, params: Any, out_dir: str | None = None, *, rules: Mapping[str, Any] | None = None,
            think: str | None = None) -> dict[str, Any]:
        """Predictions and metrics of ``params`` (every process must call it). Returns ``{"metrics": metrics.json
        dict, "rewards": mean reward components, "predictions": records, "samples": samples, "seconds"}`` (the
        full lists on process 0, after gathering every host's); writes ``predictions.jsonl`` and ``metrics.json``
        into ``out_dir`` when given. rules: ``tempr1_jax.metrics.Rules`` fields (default: ``eval.missing``)."""
        t0 = time.perf_counter()
        think = think or self.cfg.reward.think
        records, samples = generate_predictions(
            self.batches(), lambda batch: self.generate(params, batch), self.tokenizer, think=think)
        records, samples = gather_records(records), gather_records(samples)
        out: dict[str, Any] = {"predictions": records, "samples": samples, "metrics": {}, "rewards": {}}
        if jax.process_index() == 0 and records:
            rules = dict(rules) if rules is not None else {"missing": self.cfg.eval.missing}
            out["metrics"] = scoring.evaluate_predictions(records, samples, think=think, **rules)
            r = rewards.compute_rewards([p["completion"] for p in records], samples,
                                        **(setup.reward_kwargs(self.cfg) | {"think": think}))
            out["rewards"] = {k: float(np.mean(v)) for k, v in r.items()}
            if out_dir is not None:
                scoring.write_predictions(records, os.path.join(out_dir, "predictions.jsonl"))
                scoring.write_metrics(out["metrics"], out_dir)
        out["seconds"] = time.perf_counter() - t0
        return out

    def generate(self, params: Any, batch: data_stream.Batch) -> tuple[np.ndarray, np.ndarray]:
        """This host's completions of ``batch``: tokens int [b * group_size, T] and their mask (numpy)."""
        self.rng, key = jax.random.split(self.rng)
        roll = self.sampler(params, batch, self.sizer, key)
        return roll.tokens, roll.completion_mask


def eval_dir(workdir: str, step: int) -> str:
    """``<workdir>/eval/step_<step>``: where the trainer's evaluation of ``step`` writes its files."""
    return os.path.join(workdir, "eval", f"step_{step}")


def log_eval(result: Mapping[str, Any], step: int, tb: train_log.Writers | train_log.TensorBoard | None,
             jsonl: train_log.MetricsFile | None) -> None:
    """One evaluation's metrics and mean rewards: a log line, the per-task table, TensorBoard and metrics.jsonl
    (``eval/<task>/<metric>``, ``eval/reward/<component>``)."""
    if jax.process_index() != 0 or not result["predictions"]:
        return
    scalars = scoring.flat_metrics(result["metrics"]) | {f"eval/reward/{k}": v for k, v in result["rewards"].items()}
    scalars["eval/seconds"] = result["seconds"]
    r = result["rewards"]
    log.info("eval at step %d (%d samples, %.1f s): reward %.3f, format %.3f, localization %.3f", step,
             len(result["predictions"]), result["seconds"], r["total"], r["format"], r["localization"])
    print(scoring.format_table(result["metrics"]), file=sys.stderr, flush=True)
    if tb is not None:
        tb.scalars(step, scalars)
    if jsonl is not None:
        jsonl.write(step, scalars)


def policy_of(cfg: ml_collections.ConfigDict, kind: str, where: str, step: int | None,
               mesh: jax.sharding.Mesh) -> tuple[Any, Any, Any, qconfig.Qwen25VLConfig, Any, int | None]:
    """(tokenizer, graphdef, params, model config, cfg, step) of a Hugging Face directory (kind "hf") or of a
    train checkpoint's params (kind "train": ``where`` is its checkpoints directory; no optimizer state read)."""
    if kind == "hf":
        if not cfg.data.tokenizer:
            cfg.data.tokenizer = where
        tokenizer = setup.load_tokenizer(cfg)
        with cfg.unlocked():
            cfg.model.path, cfg.model.preset = where, ""
        mcfg = setup.model_config(cfg, tokenizer)
        graphdef, params, _ = setup.hf_params(where, mcfg, mesh)
        return tokenizer, graphdef, params, mcfg, cfg, None
    tokenizer = setup.load_tokenizer(cfg)
    mcfg = setup.with_lora(cfg, setup.model_config(cfg, tokenizer))  # a LoRA run's checkpoint holds its adapters
    graphdef, target = setup.abstract_params(mcfg, mesh)
    ckpt = checkpoint.Checkpointer(where, every=1, keep=1 << 30, async_save=False, read_only=True)
    params, step = ckpt.restore_params(target, step=step)
    ckpt.close()
    return tokenizer, graphdef, params, mcfg, cfg, step


def evaluate_checkpoint(cfg: ml_collections.ConfigDict, kind: str, where: str, step: int | None, *,
                        output: str | None, rules: Mapping[str, Any], think: str | None = None) -> int:
    """``python -m tempr1_jax.evaluate --config ... --checkpoint ...``: decode ``eval.samples`` with the policy
    of ``where`` (kind "hf": a Hugging Face directory with its own config.json, the tokenizer of
    ``data.tokenizer`` or of ``where``; kind "train": a train checkpoint for the model of ``cfg``), write the
    predictions and metrics under ``output`` and print the table. Returns the exit status."""
    sharding.maybe_initialize_distributed(**cfg.distributed)
    mesh = sharding.make_mesh(cfg.mesh.to_dict())
    setup.apply_overrides(cfg, setup.prepare_synthetic(cfg))
    if not cfg.eval.samples:
        raise ValueError("config.eval.samples is empty: give the held-out samples JSONL to decode")
    setup.check_batch_sizes(cfg, mesh)
    tokenizer, graphdef, params, mcfg, cfg, step = policy_of(cfg, kind, where, step, mesh)
    if kind == "hf":
        out_dir = output or os.path.join("eval", os.path.basename(where.rstrip(os.sep)))
    else:
        out_dir = output or eval_dir(os.path.dirname(where.rstrip(os.sep)), step)
    evaluator = Evaluator(cfg, graphdef, mcfg, tokenizer, mesh)
    with jax.set_mesh(mesh):
        result = evaluator.run(params, out_dir, rules=rules, think=think)
    if jax.process_index() == 0:
        if not result["predictions"]:
            raise ValueError(f"no samples to evaluate in {list(cfg.eval.samples)}")
        print(scoring.format_table(result["metrics"], scoring.Rules(**rules)))
        r = result["rewards"]
        print(f"mean reward {r['total']:.4f} (format {r['format']:.4f}, localization {r['localization']:.4f}, "
              f"answer {r['answer']:.4f}) over {len(result['predictions'])} samples")
        print(f"wrote {os.path.join(out_dir, 'predictions.jsonl')} and {os.path.join(out_dir, 'metrics.json')}")
    return 0
