"""Greedy evaluation of a policy on a held-out sample set: the trainer's periodic evaluation and the
``python -m tempr1_jax.evaluate --config ... --checkpoint DIR`` mode run this same code.

    evaluator = Evaluator(cfg, graphdef, mcfg, tokenizer, mesh)
    result = evaluator.run(params, out_dir)    # predictions.jsonl + metrics.json under out_dir

Decoding uses ``eval.temperature`` (0: greedy) and ``eval.max_new_tokens`` on the first ``eval.max_samples``
of ``eval.samples`` (0: all), then on every sample of ``eval.extra_samples`` (whole benchmarks, e.g. the general
multiple-choice ones; frames from ``data.frames``); predictions are scored by ``tempr1_jax.scoring`` (the
official evaluators' metrics) and by the training rewards.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from data_pipeline import stream as data_stream
from data_pipeline.schema import TASKS
from tempr1_jax import checkpoint, policy, preflight, rewards, rollout, scoring, setup, sharding, train_log
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


def eval_sets(e: ml_collections.ConfigDict) -> list[tuple[str, list[str], int]]:
    """What an evaluation decodes, in order, as (config key, samples files, at most this many samples; 0: all):
    the held-out slice ``eval.samples`` (``eval.max_samples`` of them, the same number per task), then
    ``eval.extra_samples`` in full; empty ones left out."""
    parts = [("config.eval.samples", list(e.samples), int(e.max_samples)),
             ("config.eval.extra_samples", list(e.get("extra_samples", ())), 0)]
    return [part for part in parts if part[1]]


def gather_records(records: list[dict]) -> list[dict]:
    """Every process's JSON records, concatenated in process order (identity on one process)."""
    if jax.process_count() == 1:
        return records
    return [r for part in sharding.gather_json(records) for r in part]


class Evaluator:
    """Greedy (``eval.temperature``) decoding over ``eval.samples``, scored by ``tempr1_jax.scoring``.

    The held-out stream is built here, before any evaluation runs: its files are read and checked, its videos
    joined to the frames index and its prompts sized against the buckets now, not at the first evaluation.
    ``eval.max_samples`` picks a seeded slice with the same number of samples per task
    (``data_pipeline.stream.stratified_subset``, seed ``data.seed``): the same slice at every evaluation.

    ``group_size``, ``temperature`` and ``max_new_tokens`` override the evaluation's 1 completion per prompt,
    ``eval.temperature`` and ``eval.max_new_tokens`` (``tempr1_jax.filter`` samples k completions per prompt at
    the rollout's temperature through the same streams and sampler).
    """

    def __init__(self, cfg: ml_collections.ConfigDict, graphdef: Any, mcfg: qconfig.Qwen25VLConfig,
                 tokenizer: Any, mesh: jax.sharding.Mesh, *, group_size: int = 1, temperature: float | None = None,
                 max_new_tokens: int | None = None) -> None:
        self.cfg, self.tokenizer, self.mcfg = cfg, tokenizer, mcfg
        e = cfg.eval
        self.scfg = rollout.sampling_config(
            cfg.rollout, group_size, mcfg.eos_token_id, tokenizer,
            temperature=e.temperature if temperature is None else temperature,
            max_new_tokens=max_new_tokens or e.max_new_tokens)
        self.sampler = rollout.Sampler(graphdef, mcfg, mesh, self.scfg, name="eval_generate")
        # One stream per evaluation set (eval_sets): built now, reused by every evaluation.
        self.streams, self.sizers = [], []
        for key, files, limit in eval_sets(e):
            stream = data_stream.make_stream(self._stream_config(files, limit), process_index=jax.process_index(),
                                             process_count=jax.process_count(), tokenizer=tokenizer,
                                             name="config.data")
            self.streams.append(stream)
            self.sizers.append(policy.stream_sizer(mcfg, stream, cfg.model.vision_multiples))
            setup.prime_rewards(stream.samples, stream.num_samples * group_size, setup.reward_kwargs(cfg))
            counts = ", ".join(f"{t} {n}" for t, n in stream.samples_per_task.items() if n)
            log.info("evaluation set: %d samples of %s (%s)%s", stream.num_samples, key, counts,
                     f", a seeded slice per task of eval.max_samples={limit}" if limit else "")
        self.sizer: policy.VisionSizer | None = None  # the current set's, used by generate
        # only used when eval.temperature > 0; replicated on the mesh, as _split_key's outputs are (one compile)
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self.rng = jax.device_put(jax.random.PRNGKey(cfg.seed + 7), replicated)

    def _stream_config(self, files: list[str], limit: int) -> ml_collections.ConfigDict:
        stream_cfg = ml_collections.ConfigDict(self.cfg.data.to_dict())
        stream_cfg.samples = files
        stream_cfg.repeat = False
        stream_cfg.shuffle = False
        stream_cfg.task_weights = ml_collections.ConfigDict()
        stream_cfg.max_samples = int(limit)
        return setup.host_stream_config(stream_cfg, int(self.cfg.eval.batch_size))

    def batches(self) -> Iterator[data_stream.Batch]:
        """One pass over every evaluation set (this host's batches; each set's last batch padded)."""
        self.num_batches = sum(stream.batches_per_pass() for stream in self.streams)
        for stream, sizer in zip(self.streams, self.sizers, strict=True):
            self.sizer = sizer
            try:
                for _ in range(stream.batches_per_pass()):
                    yield next(stream)
            finally:
                stream.close()

    def run(self, params: Any, out_dir: str | None = None, *, rules: Mapping[str, Any] | None = None,
            think: str | None = None) -> dict[str, Any]:
        """Predictions and metrics of ``params`` (every process must call it). Returns ``{"metrics": metrics.json
        dict, "rewards": mean reward components, "task_rewards": {task: the same per task}, "predictions":
        records, "samples": samples, "seconds"}`` (the
        full lists on process 0, after gathering every host's); writes ``predictions.jsonl`` and ``metrics.json``
        into ``out_dir`` when given. rules: ``tempr1_jax.metrics.Rules`` fields (default: ``eval.missing``)."""
        t0 = time.perf_counter()
        think = think or self.cfg.reward.think
        records, samples = generate_predictions(
            self.batches(), lambda batch: self.generate(params, batch), self.tokenizer, think=think)
        records, samples = gather_records(records), gather_records(samples)
        out: dict[str, Any] = {"predictions": records, "samples": samples, "metrics": {}, "rewards": {},
                               "task_rewards": {}}
        if jax.process_index() == 0 and records:
            # Completions carry no saliency scores: QVHighlights' HL metrics score the predicted windows.
            rules = dict(rules) if rules is not None else {"missing": self.cfg.eval.missing,
                                                            "hl_saliency": "from_segments"}
            out["metrics"] = scoring.evaluate_predictions(records, samples, think=think, **rules)
            r = rewards.compute_rewards([p["completion"] for p in records], samples,
                                        **(setup.reward_kwargs(self.cfg) | {"think": think}))
            out["rewards"] = {k: float(np.mean(v)) for k, v in r.items()}
            tasks = np.array([s["task"] for s in samples])
            out["task_rewards"] = {t: {k: float(np.mean(v[tasks == t])) for k, v in r.items()}
                                   for t in dict.fromkeys(tasks.tolist())}
            if out_dir is not None:
                scoring.write_predictions(records, os.path.join(out_dir, "predictions.jsonl"))
                scoring.write_metrics(out["metrics"], out_dir)
        out["seconds"] = time.perf_counter() - t0
        return out

    def generate(self, params: Any, batch: data_stream.Batch) -> tuple[np.ndarray, np.ndarray]:
        """This host's completions of ``batch``: tokens int [b * group_size, T] and their mask (numpy)."""
        self.rng, key = _split_key(self.rng)
        roll = self.sampler(params, batch, self.sizer, key)
        return roll.tokens, roll.completion_mask


@jax.jit
def _split_key(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The evaluation's own key split (a program of its own: its first compilation in a resumed process is
    not a recompilation of the trainer's split, whose key lives on the mesh)."""
    a, b = jax.random.split(rng)
    return a, b


def eval_dir(workdir: str, step: int) -> str:
    """``<workdir>/eval/step_<step>``: where the trainer's evaluation of ``step`` writes its files."""
    return os.path.join(workdir, "eval", f"step_{step}")


def log_eval(result: Mapping[str, Any], step: int, tb: train_log.Writers | train_log.TensorBoard | None,
             jsonl: train_log.MetricsFile | None) -> None:
    """One evaluation's metrics and mean rewards: a log line, the per-task table, TensorBoard and metrics.jsonl
    (``eval/<task>/<metric>``, ``eval/reward/<component>``, ``eval/<task>/reward/<component>``)."""
    if jax.process_index() != 0 or not result["predictions"]:
        return
    scalars = scoring.flat_metrics(result["metrics"]) | {f"eval/reward/{k}": v for k, v in result["rewards"].items()}
    for task, means in result.get("task_rewards", {}).items():
        scalars |= {f"eval/{task}/reward/{k}": v for k, v in means.items()}
    scalars["eval/seconds"] = result["seconds"]
    r = result["rewards"]
    log.info("eval at step %d (%d samples: %s; %.1f s): reward %.3f, format %.3f, localization %.3f\n%s", step,
             len(result["predictions"]), task_counts(result["samples"]), result["seconds"], r["total"],
             r["format"], r["localization"], scoring.format_table(result["metrics"]))
    if tb is not None:
        tb.scalars(step, scalars)
    if jsonl is not None:
        jsonl.write(step, scalars)


def task_counts(samples: Iterable[Mapping[str, Any]]) -> str:
    """``"tg 52, vhd 51"``: how many of ``samples`` each task has (in TASKS order)."""
    n: dict[str, int] = {}
    for s in samples:
        n[s["task"]] = n.get(s["task"], 0) + 1
    return ", ".join(f"{t} {n[t]}" for t in TASKS if t in n)


def load_policy(cfg: ml_collections.ConfigDict, kind: str, where: str, step: int | None,
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


def output_dir(kind: str, where: str, step: int | None, output: str | None, *, overwrite: bool) -> str:
    """Where ``evaluate_checkpoint`` writes: ``output``, by default ``<workdir>/evaluate/step_<n>`` for a train
    checkpoint (``where`` its checkpoints directory; never the run's own ``eval/step_<n>``). Raises ValueError
    when it already holds an evaluation's files, unless ``overwrite``."""
    if output is None and kind == "hf":
        raise ValueError(f"{where} is a Hugging Face directory: give --output DIR")
    out = output or os.path.join(os.path.dirname(where.rstrip(os.sep)), "evaluate", f"step_{step}")
    held = [n for n in ("predictions.jsonl", "metrics.json") if os.path.exists(os.path.join(out, n))]
    if held and not overwrite:
        raise ValueError(f"{out} already holds an evaluation ({', '.join(held)}): give another --output, or "
                         "--overwrite to replace it")
    return out


def evaluate_checkpoint(cfg: ml_collections.ConfigDict, kind: str, where: str, step: int | None, *,
                        output: str | None, rules: Mapping[str, Any], think: str | None = None,
                        overwrite: bool = False, run_config: Mapping[str, Any] | None = None) -> int:
    """``python -m tempr1_jax.evaluate --checkpoint ...``: decode ``eval.samples`` with the policy of ``where``
    (kind "hf": a Hugging Face directory with its own config.json, the tokenizer of ``data.tokenizer`` or of
    ``where``; kind "train": a train checkpoint for the model of ``cfg``), write the predictions and metrics
    (``output_dir``) and print the table. ``run_config``: the run's saved config when ``cfg`` is another one
    (its model / data differences are logged). Returns the exit status."""
    sharding.maybe_initialize_distributed(**cfg.distributed)
    mesh = sharding.make_mesh(cfg.mesh.to_dict())
    setup.apply_overrides(cfg, setup.prepare_synthetic(cfg))
    if not cfg.eval.samples and not cfg.eval.get("extra_samples", ()):
        raise ValueError("config.eval.samples and eval.extra_samples are empty: give the held-out samples JSONL to "
                         "decode")
    if kind == "hf":
        with cfg.unlocked():
            cfg.model.path, cfg.model.preset = where, ""
            cfg.data.tokenizer = cfg.data.tokenizer or where
    preflight.check_inputs(cfg, training=False)
    preflight.warn_policy_changes(cfg, run_config)
    setup.check_batch_sizes(cfg, mesh)
    if step is not None or kind == "hf":
        output_dir(kind, where, step, output, overwrite=overwrite)  # refuse before loading anything
    tokenizer, graphdef, params, mcfg, cfg, step = load_policy(cfg, kind, where, step, mesh)
    out_dir = output_dir(kind, where, step, output, overwrite=overwrite)
    evaluator = Evaluator(cfg, graphdef, mcfg, tokenizer, mesh)
    with jax.set_mesh(mesh):
        result = evaluator.run(params, out_dir, rules=rules, think=think)
    if jax.process_index() == 0:
        if not result["predictions"]:
            files = list(cfg.eval.samples) + list(cfg.eval.get("extra_samples", ()))
            raise ValueError(f"no samples to evaluate in {files}")
        print(scoring.format_table(result["metrics"], scoring.Rules(**rules)))
        r = result["rewards"]
        print(f"mean reward {r['total']:.4f} (format {r['format']:.4f}, localization {r['localization']:.4f}, "
              f"answer {r['answer']:.4f}) over {len(result['predictions'])} samples ({task_counts(result['samples'])})")
        print(f"wrote {os.path.join(out_dir, 'predictions.jsonl')} and {os.path.join(out_dir, 'metrics.json')}")
    return 0
