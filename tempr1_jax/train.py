"""TempR1's multi-task GRPO: ``python -m tempr1_jax.train --config configs/NAME.py [--config.a.b=v] [--workdir DIR]``.

The stages of a run, in the order ``main`` and ``train`` call them (each a short call into its room):

  1. flags and config     configs/NAME.py + overrides, checked (tempr1_jax.configlib); the workdir
  2. logging              console, then <workdir>/train.log (process i > 0: train.process<i>.log), TensorBoard,
                          <workdir>/metrics.jsonl (train_log)
  3. distributed init     jax.distributed when running as several processes (before any other JAX call)
  4. mesh                 (data, fsdp, tp) from config.mesh (sharding)
  5. data                 the demo's synthetic videos made on first use; the config checked against a resumed
                          run's, every input checked (preflight); this host's shard of the stream, its task
                          mixture logged
  6. tokenizer + model    an HF directory (config.model.path) or a preset with random init, born sharded by
                          its partition specs (setup); the optional supervised warm-up, exported once (warmup)
  7. optimizer + state    AdamW + schedule; the TrainState born sharded (reference params only if beta > 0)
  8. restore              the workdir's latest checkpoint: params, optimizer state, step, RNG, data position;
                          the steps and schedule checked, the config saved (<workdir>/config.py, preflight)
  9. the loop             batch -> rollout (rollout.Sampler) -> rewards (each sample's own task) -> assemble ->
                          train_step (trainer), each step one call of grpo_step.step_once -> logs ->
                          evaluation every N steps (evaluator) -> checkpoint every K steps, on SIGTERM /
                          SIGINT and at the end (checkpoint)

A SIGTERM or SIGINT before the loop ends the run at once with status 128 + signal (nothing to save yet).

Everything that runs on the devices is jitted with static shapes: a run compiles during its first step (and
its first evaluation) and never again. Host work (decoding, reward parsing, logging) stays in numpy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from data_pipeline import stream as data_stream
from tempr1_jax import (
    checkpoint,
    configlib,
    evaluator,
    grpo,
    grpo_step,
    policy,
    preflight,
    rollout,
    setup,
    sharding,
    train_log,
    trainer,
    warmup,
)

log = logging.getLogger("tempr1_jax.train")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    # 1. Flags and config.
    flags = configlib.parse_flags_or_exit(argv)
    cfg: ml_collections.ConfigDict = flags.config
    with checkpoint.PreemptionWatcher(armed=False) as preempt, train_log.CompileCounter() as compiles:
        log_file = None
        try:
            workdir = preflight.check_workdir(flags.workdir or default_workdir(argv))
            # 2. Logging (the console first; the file once this process knows its index).
            train_log.setup_logging(None)
            # 3. Distributed init (first JAX call on multi-host).
            sharding.maybe_initialize_distributed(**cfg.distributed)
            log_file = train_log.setup_logging(workdir, process_index=jax.process_index())
            log.info("workdir %s", workdir)
            return train(cfg, workdir, preempt=preempt, compiles=compiles)
        except checkpoint.Interrupted as e:
            print(f"error: {e} during start-up, before the first step: nothing to save", file=sys.stderr)
            return 128 + e.signum
        except (ValueError, OSError) as e:  # one line (the traceback goes to the log file)
            if log_file is not None:
                with open(log_file, "a", encoding="utf-8") as f:
                    f.write(traceback.format_exc())
            print(f"error: {e}", file=sys.stderr)
            return 3 if isinstance(e, checkpoint.CheckpointWriteError) else 2


def default_workdir(argv: Sequence[str]) -> str:
    """``workdir/<config file stem>`` (relative to the current directory) when ``--workdir`` is not given."""
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None and "--config" in argv:
        path = argv[argv.index("--config") + 1]
    stem = os.path.splitext(os.path.basename((path or "run").split(":", 1)[0]))[0]
    return os.path.join("workdir", stem)


def train(cfg: ml_collections.ConfigDict, workdir: str, *, preempt: checkpoint.PreemptionWatcher,
          compiles: train_log.CompileCounter) -> int:
    """Stages 4-9 (see the module docstring). Returns the exit status (0; 1 after too many skipped steps; 130
    after a SIGINT, saved)."""
    # 4. Mesh.
    mesh = sharding.make_mesh(cfg.mesh.to_dict())
    log.info("mesh %s over %d devices (%s), %d process(es)", dict(mesh.shape), jax.device_count(),
             jax.devices()[0].device_kind, jax.process_count())
    gcfg = grpo.GRPOConfig.from_mapping(cfg.grpo.to_dict())
    setup.check_batch_sizes(cfg, mesh)
    # 5. Data (the demo's synthetic task is generated on first use).
    setup.apply_overrides(cfg, setup.prepare_synthetic(cfg))
    saved = preflight.check_resume(cfg, workdir)
    preflight.check_inputs(cfg, training=True)
    tokenizer = setup.load_tokenizer(cfg)
    stream = data_stream.make_stream(setup.host_stream_config(cfg.data, int(cfg.train.prompts_per_step)),
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     tokenizer=tokenizer, name="config.data")
    setup.check_train_tasks(stream)  # mcq is evaluation-only
    preflight.log_mixture(stream, cfg.train.prompts_per_step)
    # 6. Tokenizer + model, born sharded; the optional supervised warm-up.
    mcfg = setup.model_config(cfg, tokenizer)
    graphdef, params, specs, warmed = setup.initial_params(cfg, mcfg, mesh, workdir)
    if cfg.warmup.steps > 0 and not warmed:
        params = warmup.supervised_warmup(cfg, graphdef, params, specs, mcfg, tokenizer, mesh)
        setup.export_params(graphdef, params, os.path.join(workdir, setup.WARMUP_DIR),
                            tokenizer_dir=cfg.data.tokenizer or cfg.model.path)
    mcfg, graphdef, params, specs = setup.attach_lora(cfg, mcfg, graphdef, params, specs, mesh)  # no-op without
    log.info("model: %.2fM params (%s compute, %s params)", setup.param_count(params) / 1e6, mcfg.dtype,
             mcfg.param_dtype)
    # 7. Optimizer + state.
    total_steps = preflight.total_steps(cfg, stream.num_samples)
    opt = setup.optimization(cfg, params, specs, mesh, total_steps * gcfg.num_iterations)
    rng0 = jax.random.PRNGKey(cfg.seed)
    keep_ref = opt.state_shape.ref_params is not None  # LoRA's reference is the base itself: no copy
    # 8. Restore the latest checkpoint of the workdir, if any.
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), every=cfg.checkpoint.every,
                                   keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save,
                                   save_ref_params=cfg.checkpoint.save_ref_params)
    sizer = policy.stream_sizer(mcfg, stream, cfg.model.vision_multiples)
    restored = ckpt.restore(trainer.abstract_state(opt.state_shape, opt.state_sharding),
                            ref_params=params if keep_ref else None)
    if restored is not None:
        state, position = restored
        stream.restore(position["stream"])
        sizer.restore(position.get("vision_sizes", []))
        log.info("resumed from step %d (data position %s)", int(jax.device_get(state.step)),
                 position["stream"]["position"])
        preflight.check_resumed_step(cfg, saved, int(jax.device_get(state.step)), total_steps, stream.num_samples,
                                     workdir)
    else:
        state, _ = trainer.create_state(params, opt.tx, rng0, beta=gcfg.beta if keep_ref else 0.0, mesh=mesh,
                                        param_specs=specs)
    preflight.save_run_config(cfg, workdir)  # (after the resume checks: a refused config is never saved)
    del params
    # 9. The loop.
    G = gcfg.num_generations
    setup.prime_rewards(stream.samples, stream.config.batch_size * G, setup.reward_kwargs(cfg))
    scfg = rollout.sampling_config(cfg.rollout, G, mcfg.eos_token_id, tokenizer)
    assemble, train_step = setup.step_functions(cfg, graphdef, gcfg, mesh, opt, scfg.pad_id)
    run = grpo_step.Run(
        cfg=cfg, workdir=workdir, mesh=mesh, gcfg=gcfg, tokenizer=tokenizer, stream=stream, sizer=sizer,
        sampler=rollout.Sampler(graphdef, mcfg, mesh, scfg),
        assemble=assemble, train_step=train_step,
        evaluator=(evaluator.Evaluator(cfg, graphdef, mcfg, tokenizer, mesh)
                   if cfg.eval.samples or cfg.eval.extra_samples else None),
        ckpt=ckpt, total_steps=total_steps, flops_per_token=2.0 * setup.param_count(state.params),
        preempt=preempt, compiles=compiles,
    )  # fmt: skip
    return loop(run, state)



@dataclasses.dataclass
class Bookkeeping:
    """The loop's counters across steps."""

    step: int
    start_step: int
    skips_in_a_row: int = 0
    pending_save: bool = False  # a periodic save that a skipped (non-finite) update pushed to the next step
    compiles_before: tuple = (0, 0, frozenset())  # CompileCounter.mark() before this step
    first_step_mark: tuple = (0, 0, frozenset())  # CompileCounter.mark() after this invocation's first step


def log_step(run: grpo_step.Run, step: int, out: grpo_step.StepResult, tb: Any, jsonl: Any, progress: Any) -> None:
    """The console line, metrics.jsonl, TensorBoard / wandb scalars (every ``logging.every`` steps, the last,
    skipped ones) and the sample table (every ``logging.samples_every`` steps)."""
    c, m = run.cfg.logging, out.metrics
    progress.update(step, m)
    if jsonl is not None:
        jsonl.write(step, m)
    if tb is not None and (step % c.every == 0 or step == run.total_steps or m["skipped"] > 0):
        tb.scalars(step, m)
    if tb is not None and c.samples_every and step % c.samples_every == 0:
        tb.samples(step, out.completions, [s["task"] for s in out.samples], out.rewards,
                   [s["id"] for s in out.samples], num=c.num_samples, max_chars=c.sample_chars)


def save_if_due(run: grpo_step.Run, state: trainer.TrainState, book: Bookkeeping, *, skipped: bool, stop: bool,
                last: bool) -> None:
    """Checkpoint every K steps, on a stop request and at the end. A skipped (non-finite) update does not get
    the periodic save: it moves to the next step that applied its update. A stop or the end saves anyway: the
    params are then those of the last finite update (the Checkpointer checks)."""
    due = book.pending_save or book.step % run.cfg.checkpoint.every == 0
    if skipped and not (stop or last):
        book.pending_save, due = book.pending_save or due, False
    if due or stop or last:
        position = {"stream": run.stream.state(), "vision_sizes": run.sizer.state()}
        run.ckpt.save(state, position, force=True)
        book.pending_save = False


def loop(run: grpo_step.Run, state: trainer.TrainState) -> int:
    """Stage 9: steps until ``train.total_steps`` (or ``train.steps_per_run`` more), then close everything."""
    cfg, workdir = run.cfg, run.workdir
    step = int(jax.device_get(state.step))
    book = Bookkeeping(step=step, start_step=step)
    stop_at = min(run.total_steps, step + cfg.train.steps_per_run) if cfg.train.steps_per_run else run.total_steps
    progress = train_log.Progress(run.total_steps, start_step=step, every=cfg.logging.every)
    tb = train_log.open_writers(workdir, cfg)  # TensorBoard and / or wandb
    jsonl = train_log.MetricsFile(os.path.join(workdir, "metrics.jsonl")) if jax.process_index() == 0 else None
    n_prompts, G = int(cfg.train.prompts_per_step), run.gcfg.num_generations
    log.info("training: steps %d -> %d, %d prompts x %d completions per step", step, run.total_steps, n_prompts, G)

    def evaluate_at(step: int, params: Any) -> None:
        evaluator.log_eval(run.evaluator.run(params, evaluator.eval_dir(workdir, step)), step, tb, jsonl)

    status, compiles, preempt = 0, run.compiles, run.preempt
    book.compiles_before = book.first_step_mark = compiles.mark()
    with jax.set_mesh(run.mesh):
        try:  # (also compiles the check every checkpoint save runs)
            run.ckpt.check_state(state)
        except FloatingPointError as e:
            raise ValueError(f"the initial or restored state is not finite: {e}") from None
        if run.evaluator is not None and cfg.eval.every > 0 and cfg.eval.at_start and book.step == 0:
            evaluate_at(0, state.params)
        preempt.arm()  # from here on a signal checkpoints and stops after the step
        while book.step < stop_at:
            t0 = time.perf_counter()
            batch = next(run.stream)
            state, out = grpo_step.step_once(run, state, batch, time.perf_counter() - t0)
            book.step += 1
            out.metrics["compiles"] = float(compiles.count - book.compiles_before[0])
            out.metrics["recompiles"] = float(compiles.recompiles - book.compiles_before[1])
            book.compiles_before = compiles.mark()
            if book.step == book.start_step + 1:
                book.first_step_mark = compiles.mark()
            skipped = out.metrics["skipped"] > 0
            book.skips_in_a_row = book.skips_in_a_row + 1 if skipped else 0
            log_step(run, book.step, out, tb, jsonl, progress)
            if run.evaluator is not None and cfg.eval.every > 0 and (
                    book.step % cfg.eval.every == 0 or book.step == run.total_steps):
                evaluate_at(book.step, state.params)
            stop = preempt.requested()
            save_if_due(run, state, book, skipped=skipped, stop=stop, last=book.step == stop_at)
            if stop:
                log.warning("preemption requested: checkpoint of step %d written, stopping", book.step)
                status = 130 if preempt.signum == signal.SIGINT else 0
                break
            if book.skips_in_a_row >= cfg.train.max_consecutive_skips:
                log.error("%d updates in a row had a non-finite loss or gradient: stopping (the last checkpoint "
                          "holds the last finite params)", book.skips_in_a_row)
                status = 1
                break
    run.ckpt.close()
    run.stream.close()
    if tb is not None:
        tb.close()
    log.info("%s at step %d/%d (%d skipped updates, %s after the first step)",
             "done" if book.step == run.total_steps else "stopped", book.step, run.total_steps,
             int(jax.device_get(state.skipped)), compiles.since(book.first_step_mark))
    return status


if __name__ == "__main__":
    sys.exit(main())
