"""From a config to the things a run is made of: the demo's data, tokenizer, model config, initial params.

    overrides = prepare_synthetic(cfg)          # the demo: its generated data, and the config fields it sets
    tokenizer = load_tokenizer(cfg)
    mcfg = model_config(cfg, tokenizer)
    graphdef, params, specs = initial_params(cfg, mcfg, mesh, workdir)

Everything is born sharded on the mesh by the model's partition specs (nothing sits on one device first).
Errors in the config are ``ValueError``s whose message names the key (``config.model.path=...: ...``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.experimental import multihost_utils

from data_pipeline import prompts as data_prompts
from data_pipeline import schema as data_schema
from data_pipeline import synthetic
from tempr1_jax import grpo, policy, rewards, sharding, trainer
from tempr1_jax.models.qwen25vl import config as qconfig
from tempr1_jax.models.qwen25vl import lora as qlora
from tempr1_jax.models.qwen25vl import params as qparams
from tempr1_jax.models.qwen25vl import sharding as qsharding
from tempr1_jax.models.qwen25vl.model import Qwen25VL

log = logging.getLogger(__name__)

WARMUP_DIR = "warmup_model"  # <workdir>/warmup_model: the policy after the supervised warm-up (HF layout)


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


def cache_dir() -> str:
    """Where generated demo data is cached: ``$XDG_CACHE_HOME/tempr1_jax`` (default ``~/.cache/tempr1_jax``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tempr1_jax")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


WORLDS = ("square", "multitask")  # config.synthetic.world: data_pipeline.synthetic's generators


def _world(s: ml_collections.ConfigDict) -> tuple[str, dict[str, Any], Any, int]:
    """(name, settings, generator, version) of ``config.synthetic``'s world."""
    world = s.get("world", "square")
    keys = ("num_train", "num_val", "min_seconds", "max_seconds", "size", "seed")
    if world == "square":
        return world, {k: s[k] for k in keys}, synthetic.make_square_dataset, synthetic.SQUARE_VERSION
    if world == "multitask":
        settings = {k: s[k] for k in keys} | {"tasks": tuple(s.tasks), "distractors": float(s.distractors),
                                              "margin": int(s.get("margin", 0))}
        return world, settings, synthetic.make_multitask_dataset, synthetic.MULTITASK_VERSION
    raise ValueError(f"config.synthetic.world={world!r}: must be one of {WORLDS}")


def prepare_synthetic(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The demo (``config.synthetic.enabled``): generate its world (``synthetic.world``: the one-task square
    world, or the five-task world) once into the cache, and return the config fields that point at it
    (``{"data.samples": ..., ...}``; empty when the config has no demo data).

    Every process calls it; process 0 generates, atomically (a killed generation leaves no finished directory).
    """
    if "synthetic" not in cfg or not cfg.synthetic.enabled:
        return {}
    s = cfg.synthetic
    world, settings, make, version = _world(s)
    root = s.dir or os.path.join(cache_dir(), f"{world}-{_digest(settings | {'v': version})}")
    if jax.process_index() == 0 and not os.path.isfile(os.path.join(root, "DONE")):
        log.info("generating the synthetic %s world in %s", world, root)
        tmp = f"{root}.tmp{os.getpid()}"
        make(tmp, **settings)
        with open(os.path.join(tmp, "DONE"), "w") as f:
            json.dump(settings, f)
        if os.path.isdir(root):  # an incomplete earlier attempt
            shutil.rmtree(root)
        os.replace(tmp, root)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("synthetic data")
    return {
        "data.samples": (os.path.join(root, "train.jsonl"),),
        "data.frames": os.path.join(root, "frames"),
        "data.tokenizer": os.path.join(root, "tokenizer"),
        "eval.samples": (os.path.join(root, "val.jsonl"),) if s.num_val else (),
    }


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Sets dotted config fields (``{"data.frames": "/x"}``) and logs each one."""
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        with node.unlocked():
            node[last] = value
        log.info("config.%s = %s (set by the demo's data)", key, value)


def host_stream_config(data: ml_collections.ConfigDict, global_batch: int) -> ml_collections.ConfigDict:
    """The data config with this host's batch size (``global_batch`` prompts split over the processes)."""
    c = ml_collections.ConfigDict(data.to_dict())
    c.batch_size = global_batch // jax.process_count()
    return c


def check_train_tasks(stream: Any) -> None:
    """Refuse a training stream holding evaluation-only samples (``mcq``: the general benchmarks' test questions;
    TempR1 trains on the five temporal tasks only, and training on them would contaminate the evaluation that
    shows RL keeps general ability). One line naming the count and where such files belong."""
    extra = {t: n for t, n in stream.samples_per_task.items() if n and t not in data_schema.TRAIN_TASKS}
    if extra:
        raise ValueError(
            f"config.data.samples holds evaluation-only samples ({', '.join(f'{n} {t}' for t, n in extra.items())}): "
            f"training takes the tasks {', '.join(data_schema.TRAIN_TASKS)}; list multiple-choice benchmarks in "
            "config.eval.extra_samples"
        )


def check_batch_sizes(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
    """Prompt counts must split evenly over processes and the mesh's batch shards (one clear message)."""
    shards, procs = sharding.batch_shards(mesh), jax.process_count()
    for key in ("train.prompts_per_step", "eval.batch_size", "warmup.batch_size"):
        block, name = key.split(".")
        n = int(cfg[block][name])
        evaluates = cfg.eval.samples or cfg.eval.get("extra_samples", ())
        if key != "train.prompts_per_step" and not (evaluates if block == "eval" else cfg.warmup.steps):
            continue
        if n < 1 or n % shards or n % procs:
            raise ValueError(
                f"config.{key}={n}: must be a positive multiple of the {shards} batch shards (mesh data x fsdp) "
                f"and of the {procs} process(es)"
            )


def reward_kwargs(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """``config.reward`` as the keyword arguments of ``tempr1_jax.rewards.compute_rewards``."""
    return {"think": cfg.reward.think, "weights": cfg.reward.weights.to_dict(), "sigma": cfg.reward.sigma}


def prime_rewards(samples: Sequence[Mapping[str, Any]], rows: int, reward_kw: Mapping[str, Any]) -> None:
    """Compile the reward kernels of every task in ``samples`` for batches of ``rows`` completions up front (on
    their ground truths written as completions), so that the first parsable completion of a run does not
    trigger a compilation in the middle of training. (Multi-interval tasks still compile once per power-of-two
    bucket of predicted intervals the policy reaches: at most 5 per task, see tempr1_jax.rewards.)"""
    first: dict[str, Mapping[str, Any]] = {}
    for sample in samples:
        first.setdefault(sample["task"], sample)
    picked = list(first.values())
    if not picked or rows < 1:
        return
    batch = [picked[i % len(picked)] for i in range(rows)]
    rewards.compute_rewards([data_prompts.target_completion(x) for x in batch], batch, **reward_kw)


# ----------------------------------------------------------------------------------------------------------
# Tokenizer and model
# ----------------------------------------------------------------------------------------------------------


def load_tokenizer(cfg: ml_collections.ConfigDict) -> Any:
    """The tokenizer of ``config.data.tokenizer``, else of the model directory ``config.model.path``."""
    from transformers import AutoTokenizer  # heavy: only the entry points that load a tokenizer pay for it

    path = cfg.data.tokenizer or cfg.model.path
    if not path:
        raise ValueError("config.data.tokenizer and config.model.path are both empty: no tokenizer")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory {path} not found (config.data.tokenizer / config.model.path)")
    return AutoTokenizer.from_pretrained(path)


def special_ids(tokenizer: Any) -> dict[str, Any]:
    """The model config's token ids from a Qwen2.5-VL-style tokenizer (for a randomly initialized preset)."""
    ids = {}
    for field, tok in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")):
        i = tokenizer.convert_tokens_to_ids(tok)
        if i is None or i == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {tok} token: not a Qwen2.5-VL-style tokenizer")
        ids[field] = int(i)
    ids["eos_token_id"] = (int(tokenizer.eos_token_id),)
    ids["pad_token_id"] = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    return ids


def check_tokenizer(mcfg: qconfig.Qwen25VLConfig, tokenizer: Any) -> None:
    """The tokenizer and the model must belong together (vocabulary size, the video placeholder id)."""
    if len(tokenizer) > mcfg.text.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
                         f"{mcfg.text.vocab_size}: they do not belong together")
    vid = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    if vid != mcfg.video_token_id:
        raise ValueError(f"the tokenizer's <|video_pad|> is id {vid}, the model's video_token_id is "
                         f"{mcfg.video_token_id}: they do not belong together")


def _preset_config(m: ml_collections.ConfigDict, tokenizer: Any, knobs: Mapping[str, Any]) -> qconfig.Qwen25VLConfig:
    """A preset with ``model.text`` / ``model.vision`` overrides, its vocabulary and special ids from the tokenizer
    (the preset's own without one)."""
    base = qconfig.preset(m.preset)
    try:
        text = dataclasses.replace(base.text, **m.text.to_dict())
        vision = dataclasses.replace(base.vision, **m.vision.to_dict())
    except TypeError as e:
        raise ValueError(f"config.model.text / config.model.vision: {e}") from None
    if tokenizer is not None:
        text = dataclasses.replace(text, vocab_size=max(text.vocab_size, len(tokenizer)))
    if "mrope_section" not in m.text:  # Qwen's split of the rotary pairs (1/4 time, 3/8 height, 3/8 width)
        half = text.hidden_size // text.num_attention_heads // 2
        text = dataclasses.replace(text, mrope_section=(half // 4, (half - half // 4) // 2,
                                                        half - half // 4 - (half - half // 4) // 2))
    if "out_hidden_size" not in m.vision:  # the vision merger feeds the text model
        vision = dataclasses.replace(vision, out_hidden_size=text.hidden_size)
    ids = special_ids(tokenizer) if tokenizer is not None else {}
    return dataclasses.replace(base, text=text, vision=vision, bos_token_id=None, **ids, **knobs).validate()


def model_config(cfg: ml_collections.ConfigDict, tokenizer: Any) -> qconfig.Qwen25VLConfig:
    """The Qwen2.5-VL config: the HF directory's, or a preset with overrides, sized to the tokenizer.

    ``tokenizer`` None (the planner: shapes only) keeps a preset's own vocabulary and special ids."""
    m = cfg.model
    if m.attention_impl == "cudnn":
        raise ValueError(
            "config.model.attention_impl='cudnn': the model's cuDNN path takes right-padded rows, GRPO batches are "
            "left-padded prompts followed by completions; use None or 'xla'"
        )
    knobs = dict(dtype=m.dtype, param_dtype=m.param_dtype, attention_impl=m.attention_impl,
                 attention_chunk=m.attention_chunk, remat=m.remat, scan_layers=m.scan_layers)
    if m.path and m.preset:
        raise ValueError(f"config.model.path={m.path!r} and config.model.preset={m.preset!r}: give one of them")
    if m.path:
        mcfg = qconfig.from_hf_config(m.path, **knobs)
    elif m.preset:
        mcfg = _preset_config(m, tokenizer, knobs)
    else:
        raise ValueError("config.model: give model.path (a Hugging Face directory) or model.preset")
    if tokenizer is not None:
        check_tokenizer(mcfg, tokenizer)
    return mcfg


def freeze_pattern(cfg: ml_collections.ConfigDict) -> str:
    """The optimizer's freeze regex, plus the vision tower with ``model.freeze_vision``, plus every base param
    (all but the adapters) with LoRA (``model.lora.rank`` > 0)."""
    parts = [p for p in (cfg.optimizer.freeze, "visual/.*" if cfg.model.freeze_vision else "",
                         qlora.FREEZE_BASE if lora_config(cfg).rank else "") if p]
    return "|".join(f"(?:{p})" for p in parts)


def lora_config(cfg: ml_collections.ConfigDict) -> qconfig.LoraConfig:
    """``config.model.lora`` as the model's LoraConfig (rank 0: no adapters); bad values name the key."""
    m = cfg.model
    if "lora" not in m:
        return qconfig.LoraConfig()
    try:
        return qconfig.LoraConfig(**m.lora.to_dict()).validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.model.{e}") from None


def with_lora(cfg: ml_collections.ConfigDict, mcfg: qconfig.Qwen25VLConfig) -> qconfig.Qwen25VLConfig:
    """The model config with the run's adapters (unchanged without LoRA): what a train checkpoint holds."""
    return mcfg.replace(lora=lora_config(cfg))


def attach_lora(cfg: ml_collections.ConfigDict, mcfg: qconfig.Qwen25VLConfig, graphdef: Any, params: Any,
                specs: Any, mesh: jax.sharding.Mesh) -> tuple[qconfig.Qwen25VLConfig, Any, Any, Any]:
    """With ``model.lora.rank`` > 0: (model config, graphdef, params, specs) of the base ``params`` (as they are,
    e.g. an HF checkpoint or the warm-up's result) plus fresh adapters (B = 0), born sharded. A no-op without."""
    lcfg = with_lora(cfg, mcfg)
    if not lcfg.lora.rank:
        return mcfg, graphdef, params, specs
    graphdef, params = qlora.attach(params, lcfg, mesh, seed=cfg.seed)
    split = qlora.param_split(lcfg)
    log.info("LoRA rank %d (alpha %g) on %d kernels: %.3fM trainable adapter params, %.2fM frozen base params",
             lcfg.lora.rank, lcfg.lora.alpha, len(split["adapters"]), split["trainable"] / 1e6, split["frozen"] / 1e6)
    return lcfg, graphdef, params, qsharding.param_partition_specs(params, mesh)


def param_count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def random_params(mcfg: qconfig.Qwen25VLConfig, mesh: jax.sharding.Mesh, seed: int) -> tuple[Any, Any, Any]:
    """(graphdef, params, specs) of a randomly initialized model, born sharded (nothing on one device first)."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Qwen25VL(mcfg, rngs=nnx.Rngs(seed))))
    specs = qsharding.param_partition_specs(abstract, mesh)
    make = lambda: nnx.split(Qwen25VL(mcfg, rngs=nnx.Rngs(seed)))[1]  # noqa: E731
    params = jax.jit(make, out_shardings=sharding.named(mesh, specs))()
    return graphdef, params, specs


def abstract_params(mcfg: qconfig.Qwen25VLConfig, mesh: jax.sharding.Mesh) -> tuple[Any, Any]:
    """(graphdef, params as ShapeDtypeStructs with their shardings): a restore target, nothing allocated."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Qwen25VL(mcfg, rngs=nnx.Rngs(0))))
    specs = qsharding.param_partition_specs(abstract, mesh)
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                          sharding.named(mesh, specs))
    return graphdef, target


def hf_params(path: str, mcfg: qconfig.Qwen25VLConfig, mesh: jax.sharding.Mesh) -> tuple[Any, Any, Any]:
    """(graphdef, params, specs) read from an HF directory, each device reading its own shard."""
    model = qparams.load_hf_checkpoint(path, config=mcfg, mesh=mesh)
    graphdef, params = nnx.split(model)
    return graphdef, params, qsharding.param_partition_specs(params, mesh)


def initial_params(cfg: ml_collections.ConfigDict, mcfg: qconfig.Qwen25VLConfig, mesh: jax.sharding.Mesh,
                   workdir: str) -> tuple[Any, Any, Any, bool]:
    """(graphdef, params, specs, warmed): the initial policy (also the reference). The warm-up's export
    (``<workdir>/warmup_model``) when there is one (warmed True), else the model path or a random preset."""
    warm_dir = os.path.join(workdir, WARMUP_DIR)
    if cfg.warmup.steps > 0 and os.path.isfile(os.path.join(warm_dir, "config.json")):
        log.info("initial policy: the supervised warm-up's result %s", warm_dir)
        return (*hf_params(warm_dir, mcfg, mesh), True)
    if cfg.model.path:
        return (*hf_params(cfg.model.path, mcfg, mesh), False)
    return (*random_params(mcfg, mesh, cfg.seed), False)


def export_params(graphdef: Any, params: Any, out_dir: str, *, tokenizer_dir: str | None,
                  dtype: str = "float32") -> None:
    """Write params as an HF directory (``dtype`` weights; tokenizer and processor files copied from
    ``tokenizer_dir``), atomically: a killed export leaves no directory (an older one is replaced at the end)."""
    if jax.process_count() > 1:
        params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() == 0:
        tmp = f"{out_dir}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        qparams.export_hf_checkpoint(nnx.merge(graphdef, params), tmp, dtype=dtype, copy_aux_from=tokenizer_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
        log.info("exported the policy to %s (%s)", out_dir, dtype)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("export")


# ----------------------------------------------------------------------------------------------------------
# Optimizer, train state and the step's jitted functions (shared by train.py and the planner, plan.py)
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Optimization:
    """The optimizer of a config and the TrainState it makes (``optimization``).

    tx, schedule: ``trainer.make_optimizer``'s; trainable: bool tree (``trainer.trainable_mask``); state_shape:
    the TrainState as ShapeDtypeStructs (nothing allocated); state_sharding: its NamedShardings on the mesh.
    """

    tx: Any
    schedule: Any
    trainable: Any
    state_shape: trainer.TrainState
    state_sharding: trainer.TrainState


def optimization(cfg: ml_collections.ConfigDict, params: Any, specs: Any, mesh: jax.sharding.Mesh,
                 total_updates: int) -> Optimization:
    """AdamW + schedule over ``total_updates`` optimizer updates, the freeze mask (``optimizer.freeze``,
    ``model.freeze_vision``, the base with LoRA) and the sharded state shape (reference params only if
    ``grpo.beta > 0`` without LoRA).
    ``params`` may be arrays or ShapeDtypeStructs."""
    trainable = trainer.trainable_mask(params, freeze_pattern(cfg))
    opt_cfg = {k: v for k, v in cfg.optimizer.to_dict().items() if k != "freeze"}
    tx, schedule = trainer.make_optimizer(opt_cfg, total_updates, trainable)
    beta = 0.0 if lora_config(cfg).rank else float(cfg.grpo.beta)  # LoRA's reference is the base: no copy
    shape = jax.eval_shape(lambda p, r: trainer.init_state(p, tx, r, beta=beta), params,
                           jax.ShapeDtypeStruct((2,), jnp.uint32))
    return Optimization(tx, schedule, trainable, shape, trainer.state_shardings(mesh, shape, specs, tx))


def step_functions(cfg: ml_collections.ConfigDict, graphdef: Any, gcfg: grpo.GRPOConfig, mesh: jax.sharding.Mesh,
                   opt: Optimization, pad_id: int) -> tuple[Callable, Callable]:
    """(assemble, train_step) of a run, jitted with the mesh's shardings: ``assemble(prompts, rollout, rewards,
    sample_mask) -> TrainBatch`` (policy.assemble) and ``train_step(state, batch) -> (state, metrics)``
    (trainer.make_train_step with the config's micro-batches, freeze mask and schedule; state donated)."""
    policy_fn = policy.make_policy_fn(graphdef, temperature=cfg.rollout.temperature,
                                      chunk_size=cfg.model.logprob_chunk)
    batch_sh = sharding.batch_sharding(mesh)
    assemble = jax.jit(lambda p, r, rew, m: policy.assemble(p, r, rew, m, pad_id=pad_id,
                                                            with_old_logp=gcfg.num_iterations > 1),
                       out_shardings=batch_sh)
    train_step = trainer.make_train_step(policy_fn, opt.tx, gcfg, micro_batches=cfg.train.micro_batches,
                                         trainable=opt.trainable, schedule=opt.schedule,
                                         state_sharding=opt.state_sharding, batch_sharding=batch_sh,
                                         reference=qlora.without_adapters if lora_config(cfg).rank else None)
    return assemble, train_step
