"""TempR1's multi-task GRPO: ``python -m tempr1_jax.train --config configs/NAME.py [--config.a.b=v] [--workdir DIR]``.

The stages run in this order (``main`` reads top to bottom; each stage is a short function below it):

  1. flags and config     configs/NAME.py + overrides, checked (tempr1_jax.configlib); the workdir
  2. logging              console + <workdir>/train.log, TensorBoard, <workdir>/metrics.jsonl
  3. distributed init     jax.distributed when running as several processes (before any other JAX call)
  4. mesh                 (data, fsdp, tp) from config.mesh
  5. data                 the demo's synthetic videos made on first use; this host's shard of the stream
  6. tokenizer + model    an HF directory (config.model.path) or a preset with random init, born sharded by
                          its partition specs; the optional supervised warm-up (demo), exported once
  7. optimizer + state    AdamW + schedule; the TrainState born sharded (reference params only if beta > 0)
  8. restore              the workdir's latest checkpoint: params, optimizer state, step, RNG, data position
  9. the loop             batch -> prompts on the mesh -> rollout -> decode -> rewards (each sample's own
                          task) -> assemble -> train_step -> logs -> evaluation every N steps -> checkpoint
                          every K steps, on SIGTERM and at the end

Everything that runs on the devices is jitted with static shapes: a run compiles during its first step (and
its first evaluation) and never again. Host work (decoding, reward parsing, logging) stays in numpy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from tempr1_jax import checkpoint, configlib, evaluate, grpo, policy, rewards, rollout, sharding, train_log, trainer
from tempr1_jax.models.qwen25vl import config as qconfig
from tempr1_jax.models.qwen25vl import params as qparams
from tempr1_jax.models.qwen25vl import rope
from tempr1_jax.models.qwen25vl import sharding as qsharding
from tempr1_jax.models.qwen25vl.model import Qwen25VL

log = logging.getLogger("tempr1_jax.train")

WARMUP_DIR = "warmup_model"  # <workdir>/warmup_model: the policy after the supervised warm-up (HF layout)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    # 1. Flags and config.
    flags = configlib.parse_flags_or_exit(argv)
    cfg: ml_collections.ConfigDict = flags.config
    workdir = os.path.abspath(flags.workdir or default_workdir(argv))
    # 2. Logging.
    setup_logging(workdir)
    log.info("workdir %s", workdir)
    # 3. Distributed init (first JAX call on multi-host).
    sharding.maybe_initialize_distributed(**cfg.distributed)
    try:
        return train(cfg, workdir)
    except (ValueError, FileNotFoundError) as e:  # bad input: one line (the traceback goes to train.log)
        import traceback

        with open(os.path.join(workdir, "train.log"), "a", encoding="utf-8") as f:
            f.write(traceback.format_exc())
        print(f"error: {e}", file=sys.stderr)
        return 2


def default_workdir(argv: Sequence[str]) -> str:
    """``workdir/<config file stem>`` (relative to the current directory) when ``--workdir`` is not given."""
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None and "--config" in argv:
        path = argv[argv.index("--config") + 1]
    stem = os.path.splitext(os.path.basename((path or "run").split(":", 1)[0]))[0]
    return os.path.join("workdir", stem)


def setup_logging(workdir: str | None) -> None:
    """INFO logs of this package to stderr and ``<workdir>/train.log``; TensorFlow's start-up chatter kept out."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(workdir, "train.log")))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    pkg = logging.getLogger("tempr1_jax")
    pkg.setLevel(logging.INFO)
    pkg.propagate = False
    for h in list(pkg.handlers):
        pkg.removeHandler(h)
        h.close()
    for h in handlers:
        h.setFormatter(fmt)
        pkg.addHandler(h)


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------


def train(cfg: ml_collections.ConfigDict, workdir: str) -> int:
    """Stages 4-9 (see the module docstring). Returns the exit status (0, or 1 after too many skipped steps)."""
    is_main = jax.process_index() == 0
    # 4. Mesh.
    mesh = sharding.make_mesh(cfg.mesh.to_dict())
    batch_sh = sharding.batch_sharding(mesh)
    log.info("mesh %s over %d devices (%s), %d process(es)", dict(mesh.shape), jax.device_count(),
             jax.devices()[0].device_kind, jax.process_count())
    gcfg = grpo.GRPOConfig.from_mapping(cfg.grpo.to_dict())
    G = gcfg.num_generations
    n_prompts = int(cfg.train.prompts_per_step)
    check_batch_sizes(cfg, mesh)

    # 5. Data (the demo's synthetic task is generated on first use).
    prepare_synthetic(cfg)
    tokenizer = load_tokenizer(cfg)
    stream_cfg = host_stream_config(cfg.data, n_prompts)

    # 6. Tokenizer + model, born sharded; the optional supervised warm-up.
    mcfg = model_config(cfg, tokenizer)
    graphdef, params, param_specs = initial_params(cfg, mcfg, mesh, tokenizer, workdir)
    log.info("model: %.2fM params (%s compute, %s params)", param_count(params) / 1e6, mcfg.dtype, mcfg.param_dtype)

    # 7. Optimizer + state.
    from data_pipeline import stream as data_stream

    probe = data_stream.make_stream(stream_cfg, process_index=jax.process_index(),
                                    process_count=jax.process_count(), tokenizer=tokenizer)
    total_steps = cfg.train.total_steps or max(1, math.ceil(cfg.train.num_epochs * probe.num_samples / n_prompts))
    probe.close()
    trainable = trainer.trainable_mask(params, freeze_pattern(cfg))
    opt_cfg = {k: v for k, v in cfg.optimizer.to_dict().items() if k != "freeze"}
    tx, schedule = trainer.make_optimizer(opt_cfg, total_steps * gcfg.num_iterations, trainable)
    rng0 = jax.random.PRNGKey(cfg.seed)
    shape = jax.eval_shape(lambda p, r: trainer.init_state(p, tx, r, beta=gcfg.beta), params, rng0)
    state_sh = trainer.state_shardings(mesh, shape, param_specs, tx)

    # 8. Restore the latest checkpoint of the workdir, if any.
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), every=cfg.checkpoint.every,
                                   keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save,
                                   save_ref_params=cfg.checkpoint.save_ref_params)
    position = None
    restored = ckpt.restore(trainer.abstract_state(shape, state_sh), ref_params=params if gcfg.beta > 0 else None)
    if restored is not None:
        state, position = restored
        log.info("resumed from step %d (data position %s)", int(jax.device_get(state.step)),
                 position["stream"]["position"])
    else:
        state, _ = trainer.create_state(params, tx, rng0, beta=gcfg.beta, mesh=mesh, param_specs=param_specs)
    del params
    stream = data_stream.make_stream(stream_cfg, process_index=jax.process_index(),
                                     process_count=jax.process_count(),
                                     state=None if position is None else position["stream"], tokenizer=tokenizer)
    sizer = make_sizer(cfg, mcfg, stream)
    if position is not None:
        restore_sizer(sizer, position.get("vision_sizes", []))
    prime_rewards(stream.samples, stream_cfg.batch_size * G, reward_kwargs(cfg))

    policy_fn = policy.make_policy_fn(graphdef, temperature=cfg.rollout.temperature,
                                      chunk_size=cfg.model.logprob_chunk)
    train_step = trainer.make_train_step(policy_fn, tx, gcfg, micro_batches=cfg.train.micro_batches,
                                         trainable=trainable, schedule=schedule, state_sharding=state_sh,
                                         batch_sharding=batch_sh)
    sampler = Sampler(graphdef, mcfg, tokenizer, mesh, sampling_config(cfg.rollout, G, mcfg, tokenizer))
    assemble = jax.jit(lambda p, r, rew, m: policy.assemble(p, r, rew, m, pad_id=sampler.pad_id),
                       out_shardings=batch_sh)
    reward_kw = reward_kwargs(cfg)
    evaluator = Evaluator(cfg, graphdef, mcfg, tokenizer, mesh) if cfg.eval.samples else None
    flops_per_token = 2.0 * param_count(state.params)

    # 9. The loop.
    step = int(jax.device_get(state.step))
    progress = train_log.Progress(total_steps, start_step=step, every=cfg.logging.every)
    tb = train_log.TensorBoard(os.path.join(workdir, "tensorboard")) if cfg.logging.tensorboard else None
    jsonl = MetricsFile(os.path.join(workdir, "metrics.jsonl")) if is_main else None
    log.info("training: steps %d -> %d, %d prompts x %d completions per step", step, total_steps, n_prompts, G)
    status, skips_in_a_row, pending_save, start_step, first_compiles = 0, 0, False, step, 0
    stop_at = min(total_steps, step + cfg.train.steps_per_run) if cfg.train.steps_per_run else total_steps
    compiles = train_log.CompileCounter()
    with jax.set_mesh(mesh), checkpoint.PreemptionWatcher() as preempt, compiles:
        if not trainer.params_finite(state.params):  # (also compiles the check every checkpoint save runs)
            raise ValueError("the initial or restored params are not finite")
        if evaluator is not None and cfg.eval.every > 0 and cfg.eval.at_start and step == 0:
            log_eval(evaluator.run(state.params, eval_dir(workdir, step)), step, tb, jsonl)
        c0 = 0  # compilations since the previous step's metrics (its evaluation and checkpoint included)
        while step < stop_at:
            t0 = time.perf_counter()
            batch = next(stream)
            # Rollout: G completions per prompt from the current policy, with the state's RNG.
            t1 = time.perf_counter()
            rng, sample_rng = jax.random.split(state.rng)
            state = state.replace(rng=rng)
            roll = sampler(state.params, batch, sizer, sample_rng)
            # Rewards on the host, each sample scored by its own task's rules.
            t2 = time.perf_counter()
            samples = [s for s in data_stream.batch_samples(batch, valid_only=False) for _ in range(G)]
            completions = policy.decode_completions(tokenizer, roll.tokens, roll.completion_mask)
            rew = rewards.compute_rewards(completions, samples, **reward_kw)
            valid = np.repeat(np.asarray(batch["sample_mask"], bool), G)
            # The update.
            t3 = time.perf_counter()
            total = to_mesh(rew["total"], batch_sh)  # the only host -> device copies of the update
            sample_mask = to_mesh(batch["sample_mask"], batch_sh)
            with jax.transfer_guard("disallow"):
                rollout_out = {k: roll.device[k] for k in ("tokens", "completion_mask", "logp")}
                train_batch = assemble(roll.prompts, rollout_out, total, sample_mask)
                if gcfg.num_iterations == 1:
                    train_batch.pop("old_logp")  # on-policy: ratio exactly 1, as TRL computes it for mu = 1
                state, metrics = train_step(state, train_batch)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            t4 = time.perf_counter()
            step += 1

            metrics |= train_log.reward_scalars(rew, [s["task"] for s in samples], valid)
            new_tokens = float(np.sum(roll.completion_mask))
            seen = float(np.sum(batch["attention_mask"])) * G + new_tokens
            metrics |= train_log.throughput(seen, t4 - t0, flops=flops_per_token * seen * (4 + (gcfg.beta > 0)))
            metrics |= {"time/data": t1 - t0, "time/rollout": t2 - t1, "time/reward": t3 - t2,
                        "time/update": t4 - t3, "compiles": float(compiles.count - c0)}
            c0 = compiles.count
            skipped = metrics["skipped"] > 0
            if step == start_step + 1:
                first_compiles = compiles.count
            skips_in_a_row = skips_in_a_row + 1 if skipped else 0
            progress.update(step, metrics)
            if jsonl is not None:
                jsonl.write(step, metrics)
            if tb is not None and (step % cfg.logging.every == 0 or step == total_steps or skipped):
                tb.scalars(step, metrics)
            if tb is not None and cfg.logging.samples_every and step % cfg.logging.samples_every == 0:
                tb.text(step, "samples", train_log.samples_markdown(
                    completions, [s["task"] for s in samples], rew, [s["id"] for s in samples],
                    num=cfg.logging.num_samples, max_chars=cfg.logging.sample_chars))
            if evaluator is not None and cfg.eval.every > 0 and (step % cfg.eval.every == 0 or step == total_steps):
                log_eval(evaluator.run(state.params, eval_dir(workdir, step)), step, tb, jsonl)

            # Checkpoint every K steps, on SIGTERM and at the end. A skipped (non-finite) update does not get
            # the periodic save: it moves to the next step that applied its update. A stop or the end saves
            # anyway: the params are then those of the last finite update (the Checkpointer checks).
            stop = preempt.requested()
            last = step == stop_at
            due = pending_save or step % cfg.checkpoint.every == 0
            if skipped and not (stop or last):
                pending_save, due = pending_save or due, False
            if due or stop or last:
                position = {"stream": stream.state(), "vision_sizes": sizer_state(sizer)}
                ckpt.save(state, position, force=True)
                pending_save = False
            if stop:
                log.warning("preemption requested: checkpoint of step %d written, stopping", step)
                break
            if skips_in_a_row >= cfg.train.max_consecutive_skips:
                log.error("%d updates in a row had a non-finite loss or gradient: stopping (the last checkpoint "
                          "holds the last finite params)", skips_in_a_row)
                status = 1
                break
    ckpt.close()
    stream.close()
    if tb is not None:
        tb.close()
    log.info("%s at step %d/%d (%d skipped updates, %d compilations after the first step)",
             "done" if step == total_steps else "stopped", step, total_steps, int(jax.device_get(state.skipped)),
             compiles.count - first_compiles)
    return status


# ----------------------------------------------------------------------------------------------------------
# Stage helpers: config, data, model
# ----------------------------------------------------------------------------------------------------------


def check_batch_sizes(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
    """Prompt counts must split evenly over processes and the mesh's batch shards (one clear message)."""
    shards, procs = sharding.batch_shards(mesh), jax.process_count()
    for key in ("train.prompts_per_step", "eval.batch_size", "warmup.batch_size"):
        block, name = key.split(".")
        n = int(cfg[block][name])
        if key != "train.prompts_per_step" and not (cfg.eval.samples if block == "eval" else cfg.warmup.steps):
            continue
        if n < 1 or n % shards or n % procs:
            raise configlib.ConfigError(
                f"config.{key}={n}: must be a positive multiple of the {shards} batch shards (mesh data x fsdp) "
                f"and of the {procs} process(es)"
            )


def prepare_synthetic(cfg: ml_collections.ConfigDict) -> None:
    """The demo: generate the synthetic square task once (``config.synthetic``) and point the data at it."""
    if "synthetic" not in cfg or not cfg.synthetic.enabled:
        return
    from data_pipeline import synthetic

    s = cfg.synthetic
    settings = {k: s[k] for k in ("num_train", "num_val", "min_seconds", "max_seconds", "size", "seed")}
    root = s.dir or os.path.join(cache_dir(), "square-" + _digest(settings | {"v": synthetic.SQUARE_VERSION}))
    if jax.process_index() == 0 and not os.path.isfile(os.path.join(root, "DONE")):
        log.info("generating the synthetic square task in %s", root)
        tmp = f"{root}.tmp{os.getpid()}"
        synthetic.make_square_dataset(tmp, **settings)
        with open(os.path.join(tmp, "DONE"), "w") as f:
            json.dump(settings, f)
        if os.path.isdir(root):  # an incomplete earlier attempt
            import shutil

            shutil.rmtree(root)
        os.replace(tmp, root)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("synthetic data")
    cfg.data.samples = (os.path.join(root, "train.jsonl"),)
    cfg.data.frames = os.path.join(root, "frames")
    cfg.data.tokenizer = os.path.join(root, "tokenizer")
    cfg.eval.samples = (os.path.join(root, "val.jsonl"),) if s.num_val else ()


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tempr1_jax")


def _digest(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def load_tokenizer(cfg: ml_collections.ConfigDict) -> Any:
    """The tokenizer of ``config.data.tokenizer``, else of the model directory ``config.model.path``."""
    from transformers import AutoTokenizer

    path = cfg.data.tokenizer or cfg.model.path
    if not path:
        raise configlib.ConfigError("config.data.tokenizer and config.model.path are both empty: no tokenizer")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory {path} not found (config.data.tokenizer / config.model.path)")
    return AutoTokenizer.from_pretrained(path)


def host_stream_config(data: ml_collections.ConfigDict, global_batch: int) -> ml_collections.ConfigDict:
    """The data config with this host's batch size (``global_batch`` prompts split over the processes)."""
    c = ml_collections.ConfigDict(data.to_dict())
    c.batch_size = global_batch // jax.process_count()
    return c


def model_config(cfg: ml_collections.ConfigDict, tokenizer: Any) -> qconfig.Qwen25VLConfig:
    """The Qwen2.5-VL config: the HF directory's, or a preset with overrides, sized to the tokenizer."""
    m = cfg.model
    if m.attention_impl == "cudnn":
        raise configlib.ConfigError(
            "config.model.attention_impl='cudnn': the model's cuDNN path takes right-padded rows, GRPO batches are "
            "left-padded prompts followed by completions; use None or 'xla'"
        )
    knobs = dict(dtype=m.dtype, param_dtype=m.param_dtype, attention_impl=m.attention_impl,
                 attention_chunk=m.attention_chunk, remat=m.remat, scan_layers=m.scan_layers)
    if m.path:
        if m.preset:
            raise configlib.ConfigError(f"config.model.path={m.path!r} and config.model.preset={m.preset!r}: "
                                        "give one of them")
        mcfg = qconfig.from_hf_config(m.path, **knobs)
    elif m.preset:
        base = qconfig.preset(m.preset)
        try:
            text = dataclasses.replace(base.text, **m.text.to_dict())
            vision = dataclasses.replace(base.vision, **m.vision.to_dict())
        except TypeError as e:
            raise configlib.ConfigError(f"config.model.text / config.model.vision: {e}") from None
        ids = special_ids(tokenizer)
        text = dataclasses.replace(text, vocab_size=max(text.vocab_size, len(tokenizer)))
        if "mrope_section" not in m.text:  # Qwen's split of the rotary pairs (1/4 time, 3/8 height, 3/8 width)
            half = text.hidden_size // text.num_attention_heads // 2
            text = dataclasses.replace(text, mrope_section=(half // 4, (half - half // 4) // 2,
                                                            half - half // 4 - (half - half // 4) // 2))
        if "out_hidden_size" not in m.vision:  # the vision merger feeds the text model
            vision = dataclasses.replace(vision, out_hidden_size=text.hidden_size)
        mcfg = dataclasses.replace(base, text=text, vision=vision, bos_token_id=None, **ids, **knobs).validate()
    else:
        raise configlib.ConfigError("config.model: give model.path (a Hugging Face directory) or model.preset")
    check_tokenizer(mcfg, tokenizer)
    return mcfg


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
    if len(tokenizer) > mcfg.text.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
                         f"{mcfg.text.vocab_size}: they do not belong together")
    vid = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    if vid != mcfg.video_token_id:
        raise ValueError(f"the tokenizer's <|video_pad|> is id {vid}, the model's video_token_id is "
                         f"{mcfg.video_token_id}: they do not belong together")


def freeze_pattern(cfg: ml_collections.ConfigDict) -> str:
    """The optimizer's freeze regex, plus the vision tower with ``model.freeze_vision``."""
    parts = [p for p in (cfg.optimizer.freeze, "visual/.*" if cfg.model.freeze_vision else "") if p]
    return "|".join(f"(?:{p})" for p in parts)


def param_count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def random_params(mcfg: qconfig.Qwen25VLConfig, mesh: jax.sharding.Mesh, seed: int) -> tuple[Any, Any, Any]:
    """(graphdef, params, specs) of a randomly initialized model, born sharded (nothing on one device first)."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Qwen25VL(mcfg, rngs=nnx.Rngs(seed))))
    specs = qsharding.param_partition_specs(abstract, mesh)
    make = lambda: nnx.split(Qwen25VL(mcfg, rngs=nnx.Rngs(seed)))[1]  # noqa: E731
    params = jax.jit(make, out_shardings=sharding.named(mesh, specs))()
    return graphdef, params, specs


def hf_params(path: str, mcfg: qconfig.Qwen25VLConfig, mesh: jax.sharding.Mesh) -> tuple[Any, Any, Any]:
    """(graphdef, params, specs) read from an HF directory, each device reading its own shard."""
    model = qparams.load_hf_checkpoint(path, config=mcfg, mesh=mesh)
    graphdef, params = nnx.split(model)
    return graphdef, params, qsharding.param_partition_specs(params, mesh)


def initial_params(cfg: ml_collections.ConfigDict, mcfg: qconfig.Qwen25VLConfig, mesh: jax.sharding.Mesh,
                   tokenizer: Any, workdir: str) -> tuple[Any, Any, Any]:
    """The initial policy (also the reference): the warm-up's export when there is one, else the model path or
    a random preset; with ``warmup.steps > 0`` and no export yet, runs the warm-up and exports its result."""
    warm_dir = os.path.join(workdir, WARMUP_DIR)
    if cfg.warmup.steps > 0 and os.path.isfile(os.path.join(warm_dir, "config.json")):
        log.info("initial policy: the supervised warm-up's result %s", warm_dir)
        return hf_params(warm_dir, mcfg, mesh)
    if cfg.model.path:
        graphdef, params, specs = hf_params(cfg.model.path, mcfg, mesh)
    else:
        graphdef, params, specs = random_params(mcfg, mesh, cfg.seed)
    if cfg.warmup.steps > 0:
        params = supervised_warmup(cfg, graphdef, params, specs, mcfg, tokenizer, mesh)
        export_params(graphdef, params, warm_dir, tokenizer_dir=cfg.data.tokenizer or cfg.model.path)
    return graphdef, params, specs


def export_params(graphdef: Any, params: Any, out_dir: str, *, tokenizer_dir: str | None) -> None:
    """Write params as an HF directory (float32), atomically: a killed export leaves no directory."""
    if jax.process_count() > 1:
        params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() == 0:
        import shutil

        tmp = f"{out_dir}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        qparams.export_hf_checkpoint(nnx.merge(graphdef, params), tmp, dtype="float32", copy_aux_from=tokenizer_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
        log.info("exported the warmed-up policy to %s", out_dir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("export")


# ----------------------------------------------------------------------------------------------------------
# Host <-> mesh
# ----------------------------------------------------------------------------------------------------------


def _device_dtype(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.int64:
        return x.astype(np.int32)
    if x.dtype == np.float64:
        return x.astype(np.float32)
    return x


def to_mesh(tree: Any, batch_sh: jax.sharding.NamedSharding) -> Any:
    """This host's rows (numpy, leading dim = rows) -> global arrays split over the mesh's batch axes."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(batch_sh, _device_dtype(x)), tree)


def host_rows(x: jax.Array, batch_sh: jax.sharding.NamedSharding) -> np.ndarray:
    """A global [B, ...] array -> this host's rows (numpy), the rows it fed in with ``to_mesh``."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    full = np.asarray(multihost_utils.process_allgather(x, tiled=True))
    i, n = sharding.host_data_shard(batch_sh, x.shape[0])
    rows = x.shape[0] // n
    return full[i * rows : (i + 1) * rows]


def agree_across_hosts(batch: dict[str, np.ndarray], sizer: policy.VisionSizer, pad_id: int) -> dict:
    """On several processes, pad this host's batch to the largest prompt / vision bucket of all hosts and grow
    the vision sizer with every host's videos, so that all hosts build arrays of one global shape."""
    if jax.process_count() == 1:
        return batch
    ids, pix = batch["input_ids"], batch["pixel_values"]
    dims = np.asarray(multihost_utils.process_allgather(np.array([ids.shape[1], pix.shape[1]], np.int32)))
    L, N = (int(v) for v in dims.reshape(-1, 2).max(0))
    if L > ids.shape[1]:
        extra = L - ids.shape[1]
        batch = dict(batch)
        batch["input_ids"] = np.pad(ids, ((0, 0), (extra, 0)), constant_values=pad_id)
        batch["attention_mask"] = np.pad(batch["attention_mask"], ((0, 0), (extra, 0)))
    if N > pix.shape[1]:
        batch = dict(batch)
        batch["pixel_values"] = np.pad(pix, ((0, 0), (0, N - pix.shape[1]), (0, 0)))
    grids = np.asarray(multihost_utils.process_allgather(np.asarray(batch["grid_thw"], np.int32)))
    grids = grids.reshape(-1, 3)
    sizer((batch["input_ids"].shape, batch["pixel_values"].shape), grids[grids.prod(1) > 0])
    return batch


def make_sizer(cfg: ml_collections.ConfigDict, mcfg: qconfig.Qwen25VLConfig, stream: Any) -> policy.VisionSizer:
    """The vision sizer of a stream, grown up front: for every batch shape the stream can produce, to the largest
    video that can be in such a batch (from the stream's index, nothing decoded), so that no batch ever makes
    the packed vision shapes grow, hence no recompilation after the first step."""
    patches, blocks, frames = (int(v) for v in cfg.model.vision_multiples)
    sizer = policy.VisionSizer(mcfg, patch_multiple=patches, block_multiple=blocks, frame_multiple=frames)
    v = mcfg.vision
    grids = np.stack([-(-stream.n_frames // v.temporal_patch_size), stream.target_hw[:, 0] // v.patch_size,
                      stream.target_hw[:, 1] // v.patch_size], axis=1).astype(np.int64)
    for shape in stream.bucket_shapes():
        (b, L), (_, N, d) = shape["input_ids"], shape["pixel_values"]
        fits = (stream.n_patches <= N) & (stream.prompt_len <= L)
        if fits.any():
            sizer(((int(b), int(L)), (int(b), int(N), int(d))), np.unique(grids[fits], axis=0))
    return sizer


def prime_rewards(samples: Sequence[Mapping[str, Any]], rows: int, reward_kw: Mapping[str, Any]) -> None:
    """Compile the reward kernels of every task in ``samples`` for batches of ``rows`` completions up front (on
    their ground truths written as completions), so that the first parsable completion of a run does not
    trigger a compilation in the middle of training. (Multi-interval tasks still compile once per power-of-two
    bucket of predicted intervals the policy reaches: at most 5 per task, see tempr1_jax.rewards.)"""
    from data_pipeline import prompts as data_prompts

    first: dict[str, Mapping[str, Any]] = {}
    for sample in samples:
        first.setdefault(sample["task"], sample)
    picked = list(first.values())
    if not picked or rows < 1:
        return
    batch = [picked[i % len(picked)] for i in range(rows)]
    rewards.compute_rewards([data_prompts.target_completion(x) for x in batch], batch, **reward_kw)


def sizer_state(sizer: policy.VisionSizer) -> list:
    """The vision sizer's high-water marks as JSON (saved with the data position: a resumed run keeps the
    shapes, hence the compiled programs and the numerics, of the run it continues)."""
    return [[[list(s) for s in key], dataclasses.asdict(v)] for key, v in sizer.sizes.items()]


def restore_sizer(sizer: policy.VisionSizer, saved: list) -> None:
    for key, v in saved:
        sizer.sizes[tuple(tuple(s) for s in key)] = rope.VisionSizes(**v)


# ----------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------


def sampling_config(r: ml_collections.ConfigDict, group_size: int, mcfg: qconfig.Qwen25VLConfig,
                    tokenizer: Any, *, temperature: float | None = None,
                    max_new_tokens: int | None = None) -> rollout.SamplingConfig:
    eos = {int(i) for i in mcfg.eos_token_id} | {int(tokenizer.eos_token_id)}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return rollout.SamplingConfig(
        group_size=group_size,
        max_new_tokens=int(max_new_tokens or r.max_new_tokens),
        temperature=float(r.temperature if temperature is None else temperature),
        top_p=float(r.top_p),
        top_k=int(r.top_k),
        eos_ids=tuple(sorted(eos)),
        pad_id=int(pad),
    )


@dataclasses.dataclass
class Rollout:
    prompts: dict  # the prompt inputs on the mesh (per-prompt rows)
    device: dict  # generate's output on the mesh: tokens, completion_mask, logp [Bp * G, T]
    tokens: np.ndarray  # this host's completion rows [b * G, T]
    completion_mask: np.ndarray


class Sampler:
    """Stream batch (this host's prompts) -> G completions per prompt from ``params`` (jitted, on the mesh)."""

    def __init__(self, graphdef: Any, mcfg: qconfig.Qwen25VLConfig, tokenizer: Any, mesh: jax.sharding.Mesh,
                 scfg: rollout.SamplingConfig) -> None:
        self.mcfg, self.scfg, self.pad_id = mcfg, scfg, scfg.pad_id
        self.batch_sh = sharding.batch_sharding(mesh)
        self.generate = rollout.make_generate(graphdef, scfg)

    def __call__(self, params: Any, batch: Mapping[str, np.ndarray], sizer: policy.VisionSizer,
                 rng: jax.Array) -> Rollout:
        batch = agree_across_hosts(dict(batch), sizer, self.pad_id)
        prompts = to_mesh(policy.prompt_inputs(self.mcfg, batch, sizer), self.batch_sh)
        with jax.transfer_guard("disallow"):
            out = self.generate(params, prompts, rng)
        tokens = host_rows(out["tokens"], self.batch_sh)
        mask = host_rows(out["completion_mask"], self.batch_sh)
        return Rollout(prompts, out, tokens, mask)


def reward_kwargs(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    return {"think": cfg.reward.think, "weights": cfg.reward.weights.to_dict(), "sigma": cfg.reward.sigma}


# ----------------------------------------------------------------------------------------------------------
# Supervised warm-up (demo)
# ----------------------------------------------------------------------------------------------------------


def supervised_warmup(cfg: ml_collections.ConfigDict, graphdef: Any, params: Any, specs: Any,
                      mcfg: qconfig.Qwen25VLConfig, tokenizer: Any, mesh: jax.sharding.Mesh) -> Any:
    """``warmup.steps`` AdamW steps of next-token cross-entropy on targets written in each task's completion
    format (``data_pipeline.prompts.target_completion``), on the training stream (another seed): the ground
    truth with ``warmup.targets="truth"``, random intervals with ``"random"`` (``warmup_target``)."""
    from data_pipeline import stream as data_stream

    w = cfg.warmup
    rng = np.random.default_rng(int(cfg.seed) + 3)
    batch_sh = sharding.batch_sharding(mesh)
    scfg = ml_collections.ConfigDict(cfg.data.to_dict())
    scfg.seed = int(cfg.data.seed) + 1
    stream = data_stream.make_stream(host_stream_config(scfg, int(w.batch_size)),
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     tokenizer=tokenizer)
    T = int(cfg.rollout.max_new_tokens)
    eos = int(tokenizer.eos_token_id)
    pad = sampling_config(cfg.rollout, 1, mcfg, tokenizer).pad_id
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(float(w.learning_rate)))
    param_sh = sharding.named(mesh, specs)
    opt_sh = sharding.named(mesh, sharding.optimizer_state_specs(tx, jax.eval_shape(tx.init, params), specs))
    opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
    policy_fn = policy.make_policy_fn(graphdef, temperature=1.0, chunk_size=cfg.model.logprob_chunk)

    def loss_fn(p: Any, batch: dict) -> jax.Array:
        logp, _ = policy_fn(p, batch)
        mask = batch["completion_mask"]
        return -jnp.sum(jnp.where(mask, logp, 0.0)) / jnp.maximum(mask.sum(), 1)

    def step(p: Any, o: Any, batch: dict) -> tuple[Any, Any, jax.Array]:
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        updates, o = tx.update(g, o, p)
        return optax.apply_updates(p, updates), o, loss

    step = jax.jit(step, donate_argnums=(0, 1), out_shardings=(param_sh, opt_sh, sharding.replicated(mesh)))
    sizer = make_sizer(cfg, mcfg, stream)
    assemble = jax.jit(lambda pr, r, m: policy.assemble(pr, r, jnp.zeros(m.shape[0]), m, pad_id=pad),
                       out_shardings=batch_sh)
    log.info("supervised warm-up: %d steps of %d prompts", w.steps, w.batch_size)
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        for i in range(int(w.steps)):
            batch = agree_across_hosts(next(stream), sizer, pad)
            targets = np.full((len(batch["sample_json"]), T), pad, np.int32)
            tmask = np.zeros_like(targets, bool)
            for b, sample in enumerate(data_stream.batch_samples(batch, valid_only=False)):
                ids = tokenizer(warmup_target(sample, w.targets, rng), add_special_tokens=False)["input_ids"]
                ids = [*ids, eos]
                if len(ids) > T:
                    raise ValueError(f"warm-up target of sample {sample['id']!r} has {len(ids)} tokens > "
                                     f"rollout.max_new_tokens={T}")
                targets[b, : len(ids)] = ids
                tmask[b, : len(ids)] = True
            tmask &= np.asarray(batch["sample_mask"], bool)[:, None]
            prompts = to_mesh(policy.prompt_inputs(mcfg, batch, sizer), batch_sh)
            fake = to_mesh({"tokens": targets, "completion_mask": tmask, "logp": np.zeros(targets.shape, np.float32)},
                           batch_sh)
            params, opt_state, loss = step(params, opt_state, assemble(prompts, fake, to_mesh(batch["sample_mask"],
                                                                                              batch_sh)))
            if (i + 1) % max(1, int(w.steps) // 10) == 0 or i + 1 == w.steps:
                log.info("warm-up step %d/%d: loss %.4f (%.1f s)", i + 1, w.steps, float(jax.device_get(loss)),
                         time.perf_counter() - t0)
    stream.close()
    return params


WARMUP_TARGETS = ("truth", "random")


def warmup_target(sample: Mapping[str, Any], mode: str, rng: np.random.Generator) -> str:
    """The warm-up's target completion of ``sample`` (``warmup.targets``).

    "truth": the ground truth (``data_pipeline.prompts.target_completion``). "random": the same format with
    each segment replaced by a random interval [a, b], a < b, drawn uniformly from the pairs of whole seconds in
    [0, duration] (tenths of the duration for videos shorter than 1 s), and a random gvqa option letter: the
    warm-up then teaches the answer format only, and any localization above chance must come from GRPO.
    """
    from data_pipeline import prompts as data_prompts
    from data_pipeline.schema import OPTION_LETTERS

    if mode == "truth":
        return data_prompts.target_completion(sample)
    if mode != "random":
        raise configlib.ConfigError(f"config.warmup.targets={mode!r}: must be one of {WARMUP_TARGETS}")
    d = float(sample["duration"])
    if d >= 1:
        grid = np.arange(0, math.floor(d) + 1, dtype=np.float64)
    else:
        grid = np.unique(np.round(np.linspace(0, d, 11), 2))
    if len(grid) < 2:
        grid = np.array([0.0, d])
    segments = []
    for _ in sample["segments"]:
        a, b = np.sort(rng.choice(grid, size=2, replace=False))
        segments.append([float(a), float(b)])
    fake = dict(sample, segments=segments)
    if sample["task"] == "gvqa":
        fake["answer"] = OPTION_LETTERS[int(rng.integers(len(sample["options"])))]
    return data_prompts.target_completion(fake)


# ----------------------------------------------------------------------------------------------------------
# Evaluation (the code of `python -m tempr1_jax.evaluate --config ... --checkpoint ...`)
# ----------------------------------------------------------------------------------------------------------


class Evaluator:
    """Greedy (``eval.temperature``) decoding over ``eval.samples``, scored by ``tempr1_jax.evaluate``."""

    def __init__(self, cfg: ml_collections.ConfigDict, graphdef: Any, mcfg: qconfig.Qwen25VLConfig,
                 tokenizer: Any, mesh: jax.sharding.Mesh) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        e = cfg.eval
        self.scfg = sampling_config(cfg.rollout, 1, mcfg, tokenizer, temperature=e.temperature,
                                    max_new_tokens=e.max_new_tokens)
        self.sampler = Sampler(graphdef, mcfg, tokenizer, mesh, self.scfg)
        self.mcfg = mcfg
        self.sizer: policy.VisionSizer | None = None
        self.stream_cfg = ml_collections.ConfigDict(cfg.data.to_dict())
        self.stream_cfg.samples = list(e.samples)
        self.stream_cfg.repeat = False
        self.stream_cfg.shuffle = False
        self.stream_cfg.task_weights = ml_collections.ConfigDict()
        self.stream_cfg = host_stream_config(self.stream_cfg, int(e.batch_size))
        self.rng = jax.random.PRNGKey(cfg.seed + 7)  # only used when eval.temperature > 0

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        from data_pipeline import stream as data_stream

        s = data_stream.make_stream(self.stream_cfg, process_index=jax.process_index(),
                                    process_count=jax.process_count(), tokenizer=self.tokenizer)
        n = s.batches_per_pass()
        if self.cfg.eval.max_samples:
            per_batch = self.stream_cfg.batch_size * jax.process_count()
            n = min(n, -(-int(self.cfg.eval.max_samples) // per_batch))
        if self.sizer is None:
            self.sizer = make_sizer(self.cfg, self.mcfg, s)
            rows = min(s.num_samples, n * self.stream_cfg.batch_size * jax.process_count())
            prime_rewards(s.samples, rows, reward_kwargs(self.cfg))
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
        records, samples = evaluate.generate_predictions(
            self.batches(), lambda batch: self._generate(params, batch), self.tokenizer, think=think)
        records, samples = gather_records(records), gather_records(samples)
        out: dict[str, Any] = {"predictions": records, "samples": samples, "metrics": {}, "rewards": {}}
        if jax.process_index() == 0 and records:
            rules = dict(rules) if rules is not None else {"missing": self.cfg.eval.missing}
            out["metrics"] = evaluate.evaluate_predictions(records, samples, think=think, **rules)
            r = rewards.compute_rewards([p["completion"] for p in records], samples,
                                        **(reward_kwargs(self.cfg) | {"think": think}))
            out["rewards"] = {k: float(np.mean(v)) for k, v in r.items()}
            if out_dir is not None:
                evaluate.write_predictions(records, os.path.join(out_dir, "predictions.jsonl"))
                evaluate.write_metrics(out["metrics"], out_dir)
        out["seconds"] = time.perf_counter() - t0
        return out

    def _generate(self, params: Any, batch: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.rng, key = jax.random.split(self.rng)
        roll = self.sampler(params, batch, self.sizer, key)
        return roll.tokens, roll.completion_mask


def eval_dir(workdir: str, step: int) -> str:
    return os.path.join(workdir, "eval", f"step_{step}")


def evaluate_checkpoint(cfg: ml_collections.ConfigDict, kind: str, where: str, step: int | None, *,
                        output: str | None, rules: Mapping[str, Any], think: str | None = None) -> int:
    """``python -m tempr1_jax.evaluate --config ... --checkpoint ...`` (see ``evaluate.run_generation``).

    kind "hf": the policy of the Hugging Face directory ``where`` (its own config.json; the tokenizer of
    ``data.tokenizer`` or of ``where``); kind "train": the params of a train.py checkpoint (``where`` = its
    checkpoints directory, ``step`` or the latest) for the model of ``cfg``; no optimizer state is read.
    """
    sharding.maybe_initialize_distributed(**cfg.distributed)
    mesh = sharding.make_mesh(cfg.mesh.to_dict())
    prepare_synthetic(cfg)
    if not cfg.eval.samples:
        raise configlib.ConfigError("config.eval.samples is empty: give the held-out samples JSONL to decode")
    check_batch_sizes(cfg, mesh)
    if kind == "hf":
        if not cfg.data.tokenizer:
            cfg.data.tokenizer = where
        tokenizer = load_tokenizer(cfg)
        with cfg.unlocked():
            cfg.model.path, cfg.model.preset = where, ""
        mcfg = model_config(cfg, tokenizer)
        graphdef, params, _ = hf_params(where, mcfg, mesh)
        out_dir = output or os.path.join("eval", os.path.basename(where.rstrip(os.sep)))
    else:
        tokenizer = load_tokenizer(cfg)
        mcfg = model_config(cfg, tokenizer)
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Qwen25VL(mcfg, rngs=nnx.Rngs(0))))
        specs = qsharding.param_partition_specs(abstract, mesh)
        target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                              sharding.named(mesh, specs))
        ckpt = checkpoint.Checkpointer(where, every=1, keep=1 << 30, async_save=False)
        params, step = ckpt.restore_params(target, step=step)
        ckpt.close()
        out_dir = output or eval_dir(os.path.dirname(where.rstrip(os.sep)), step)
    evaluator = Evaluator(cfg, graphdef, mcfg, tokenizer, mesh)
    with jax.set_mesh(mesh):
        result = evaluator.run(params, out_dir, rules=rules, think=think)
    if jax.process_index() == 0:
        if not result["predictions"]:
            raise ValueError(f"no samples to evaluate in {list(cfg.eval.samples)}")
        print(evaluate.format_table(result["metrics"], evaluate.Rules(**rules)))
        r = result["rewards"]
        print(f"mean reward {r['total']:.4f} (format {r['format']:.4f}, localization {r['localization']:.4f}, "
              f"answer {r['answer']:.4f}) over {len(result['predictions'])} samples")
        print(f"wrote {os.path.join(out_dir, 'predictions.jsonl')} and {os.path.join(out_dir, 'metrics.json')}")
    return 0


def gather_records(records: list[dict]) -> list[dict]:
    """Every process's JSON records, concatenated in process order (identity on one process)."""
    if jax.process_count() == 1:
        return records
    raw = json.dumps(records).encode()
    lengths = np.asarray(multihost_utils.process_allgather(np.array([len(raw)], np.int32))).reshape(-1)
    buf = np.zeros(int(lengths.max()), np.uint8)
    buf[: len(raw)] = np.frombuffer(raw, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(lengths), -1)
    return [r for i in range(len(lengths)) for r in json.loads(bytes(rows[i, : lengths[i]]).decode())]


def log_eval(result: Mapping[str, Any], step: int, tb: train_log.TensorBoard | None,
             jsonl: MetricsFile | None) -> None:
    if jax.process_index() != 0 or not result["predictions"]:
        return
    scalars = evaluate.flat_metrics(result["metrics"]) | {f"eval/reward/{k}": v for k, v in result["rewards"].items()}
    scalars["eval/seconds"] = result["seconds"]
    r = result["rewards"]
    log.info("eval at step %d (%d samples, %.1f s): reward %.3f, format %.3f, localization %.3f", step,
             len(result["predictions"]), result["seconds"], r["total"], r["format"], r["localization"])
    print(evaluate.format_table(result["metrics"]), file=sys.stderr, flush=True)
    if tb is not None:
        tb.scalars(step, scalars)
    if jsonl is not None:
        jsonl.write(step, scalars)


class MetricsFile:
    """``metrics.jsonl``: one JSON object of scalars per logged step (``{"step": n, ...}``), appended."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, step: int, values: Mapping[str, float]) -> None:
        row = {"step": int(step), "time": time.time()} | {k: float(v) for k, v in values.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
