"""Command-line configs: ``--config configs/NAME.py [--config.a.b=v ...] [--workdir DIR]`` and checks.

Configs are ``ml_collections`` Python files (a ``get_config()`` function), loaded by
``ml_collections.config_flags``; overrides are typed by the config's own values. Errors come out as one
``ConfigError`` line that names the file, key or value: an unknown override key, a value of the wrong type,
a missing config file, or a value ``check_config`` rejects.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import NoReturn

import ml_collections
from absl import flags
from ml_collections import config_flags

from data_pipeline.schema import THINK_MODES
from data_pipeline.stream import SHORT_VIDEO_CHOICES
from tempr1_jax import grpo, rewards, sharding, trainer, warmup
from tempr1_jax.metrics import RULE_CHOICES
from tempr1_jax.models.qwen25vl import config as qconfig


class ConfigError(ValueError):
    """A bad command line or config value (the message is one line and names the culprit)."""


def _config_arg(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def _override_keys(argv: Sequence[str]) -> list[tuple[str, str]]:
    """(dotted key, the argument) of each ``--config.KEY[=V]`` argument."""
    out = []
    for a in argv:
        if a.startswith("--config."):
            out.append((a[len("--config.") :].split("=", 1)[0], a))
    return out


def _check_key(cfg: ml_collections.ConfigDict, key: str, arg: str) -> None:
    node = cfg
    parts = key.split(".")
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, ml_collections.ConfigDict):
            if p in node:
                node = node[p]
                continue
            # absl boolean form: --config.a.noflag
            if last and p.startswith("no") and p[2:] in node and isinstance(node[p[2:]], bool):
                return
            where = ".".join(parts[:i]) or "the config"
            raise ConfigError(
                f"unknown config key {key!r} in {arg!r}: {where} has no {p!r} "
                f"(it has: {', '.join(sorted(node.keys()))})"
            )
        parent = ".".join(parts[:i])
        raise ConfigError(f"unknown config key {key!r} in {arg!r}: {parent} is not a config block")


def sibling_config(config_file: str, name: str = "base.py") -> ModuleType:
    """The config module ``name`` beside ``config_file`` (configs are files loaded by path, not a package):
    ``configlib.sibling_config(__file__).get_config()`` builds on configs/base.py."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
    spec = importlib.util.spec_from_file_location(f"tempr1_config_{os.path.splitext(name)[0]}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"config module {path} cannot be loaded")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def last_override_wins(argv: Sequence[str]) -> list[str]:
    """``argv`` with only the last of repeated ``--config.KEY=VALUE`` arguments of one key (a note on stderr for
    each key given more than once). ml_collections concatenates repeated tuple overrides (``--config.a=(1,)
    --config.a=(2,)`` gives ``(1, 2)``); here the last value wins for every type, as it does for scalars."""
    last: dict[str, int] = {}
    for i, a in enumerate(argv):
        if a.startswith("--config.") and "=" in a:
            last[a.split("=", 1)[0]] = i
    out = []
    for i, a in enumerate(argv):
        flag = a.split("=", 1)[0]
        if a.startswith("--config.") and "=" in a and last[flag] != i:
            continue
        out.append(a)
    for flag, i in last.items():
        n = sum(1 for a in argv if a.startswith(flag + "="))
        if n > 1:
            print(f"note: {flag} given {n} times: the last one wins ({argv[i]})", file=sys.stderr)
    return out


def _load_error(path: str, e: BaseException) -> ConfigError:
    """One line for a config file that fails to load: the exception's own last line (ml_collections wraps
    a TypeError / ValueError of ``get_config`` in "Error whilst parsing config file:" + its traceback)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if lines and "Error whilst parsing config file" in lines[0]:
        cause = lines[-1] if len(lines) > 1 else f"{type(e).__name__}"
    else:
        cause = f"{type(e).__name__}: {lines[0] if lines else e!r}"
    cause = cause.removeprefix("flag --config=" + path + ": ")
    hint = ""
    if "get_config()" in cause and "positional argument" in cause:
        hint = " (the text after ':' is passed to get_config(); this config takes " + (
            "no ':ARG')" if "takes 0" in cause else "another number of arguments)")
    return ConfigError(f"--config {path}: cannot load: {cause}{hint}")


def parse_flags(
    argv: Sequence[str], *, define_extra: Callable[[flags.FlagValues], None] | None = None
) -> flags.FlagValues:
    """Parses ``argv`` (``argv[0]`` is the program) into flags ``config`` (a locked ConfigDict, checked by
    ``check_config``) and ``workdir`` (str or None), plus whatever ``define_extra(flag_values)`` defines.
    Of repeated ``--config.KEY=VALUE`` arguments the last one wins (``last_override_wins``).

    Raises ConfigError with a one-line reason.
    """
    argv = last_override_wins(list(argv))
    path = _config_arg(argv[1:])
    if path is None:
        raise ConfigError("--config is required: a configs/NAME.py file")
    file = path.split(":", 1)[0]
    if not os.path.isfile(file):
        raise ConfigError(f"--config {path}: no such file")

    def new_flags(args: list[str]) -> flags.FlagValues:
        fv = flags.FlagValues()
        # sys_argv: config_flags finds the override flags in it (by default it reads sys.argv).
        config_flags.DEFINE_config_file(
            "config", None, "ml_collections config file", flag_values=fv, lock_config=True, sys_argv=args
        )
        flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.", flag_values=fv)
        if define_extra is not None:
            define_extra(fv)
        return fv

    overrides = _override_keys(argv[1:])
    if overrides:
        base_argv = [argv[0], f"--config={path}"]
        base = new_flags(base_argv)
        try:
            base(base_argv)
            base_cfg = base.config
        except Exception as e:  # the config file itself is broken
            raise _load_error(path, e) from None
        for key, arg in overrides:
            _check_key(base_cfg, key, arg)
    fv = new_flags(argv)
    try:
        fv(argv)
        cfg = fv.config
    except flags.Error as e:
        if "Error whilst parsing config file" in str(e):
            raise _load_error(path, e) from None
        raise ConfigError(str(e).splitlines()[0]) from None
    except Exception as e:
        raise _load_error(path, e) from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"--config {path}: get_config() must return an ml_collections.ConfigDict")
    check_config(cfg)
    return fv


USAGE = """usage: python -m {prog} --config configs/NAME.py[:ARG] [--config.KEY=VALUE ...] [--workdir DIR]

  --config FILE[:ARG]   an ml_collections config file (get_config(ARG)): configs/demo.py, configs/tempr1_7b.py...
  --config.KEY=VALUE    override any key of the config, typed by its value there (e.g. --config.grpo.beta=0);
                        the keys and their sources are in configs/base.py
  --workdir DIR         checkpoints, logs, metrics.jsonl, TensorBoard (default: workdir/<config file stem>)
"""


def parse_flags_or_exit(
    argv: Sequence[str] | None = None, *, prog: str = "tempr1_jax.train", **kw: object
) -> flags.FlagValues:
    """``parse_flags`` for a ``main``: on a bad command line prints ``error: <reason>`` and exits 2; with
    ``-h`` / ``--help`` prints the usage of ``python -m PROG`` and exits 0."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(USAGE.format(prog=prog), end="")
        raise SystemExit(0)
    try:
        return parse_flags(argv, **kw)  # type: ignore[arg-type]
    except ConfigError as e:
        _die(str(e))


def _die(msg: str) -> NoReturn:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _needs(cfg: ml_collections.ConfigDict) -> Callable[[bool, str, str], None]:
    """``need(cond, key, why)``: raise ConfigError("config.KEY=VALUE: WHY") unless cond."""

    def need(cond: bool, key: str, why: str) -> None:
        if not cond:
            value = cfg
            for p in key.split("."):
                value = value[p]
            raise ConfigError(f"config.{key}={value!r}: {why}")

    return need


def check_config(cfg: ml_collections.ConfigDict) -> None:
    """Checks the blocks of configs/base.py that are present; raises ConfigError naming the key. The choices
    come from the modules that implement them (one list each)."""
    _check_run_blocks(cfg)
    _check_model_blocks(cfg)


def _check_run_blocks(cfg: ml_collections.ConfigDict) -> None:
    """grpo, mesh, distributed, train, optimizer, checkpoint, logging."""
    need = _needs(cfg)
    if "grpo" in cfg:
        try:
            grpo.GRPOConfig.from_mapping(cfg.grpo.to_dict())
        except ValueError as e:
            raise ConfigError(f"config.{e}") from None
    if "mesh" in cfg:
        try:
            sharding.mesh_shape(cfg.mesh.to_dict(), num_devices=_mesh_devices(cfg.mesh.to_dict()))
        except ValueError as e:
            raise ConfigError(f"config.{e}") from None
    if "distributed" in cfg:
        need(cfg.distributed.mode in sharding.DISTRIBUTED_MODES, "distributed.mode",
             f"must be one of {sharding.DISTRIBUTED_MODES}")
    if "train" in cfg:
        need(cfg.train.prompts_per_step >= 1, "train.prompts_per_step", "must be >= 1")
        need(cfg.train.micro_batches >= 1, "train.micro_batches", "must be >= 1")
        need(cfg.train.num_epochs > 0, "train.num_epochs", "must be > 0")
        ts = cfg.train.total_steps
        need(ts is None or ts >= 1, "train.total_steps", "must be None or >= 1")
    if "optimizer" in cfg:
        o = cfg.optimizer
        need(o.learning_rate >= 0, "optimizer.learning_rate", "must be >= 0")
        need(0 <= o.b1 < 1, "optimizer.b1", "must be in [0, 1)")
        need(0 <= o.b2 < 1, "optimizer.b2", "must be in [0, 1)")
        need(o.eps >= 0, "optimizer.eps", "must be >= 0")
        need(o.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
        need(o.max_grad_norm >= 0, "optimizer.max_grad_norm", "must be >= 0 (0 disables clipping)")
        need(o.warmup_steps >= 0, "optimizer.warmup_steps", "must be >= 0")
        need(o.decay in trainer.DECAYS, "optimizer.decay", f"must be one of {trainer.DECAYS}")
        need(0 <= o.end_factor <= 1, "optimizer.end_factor", "must be in [0, 1]")
    if "checkpoint" in cfg:
        need(cfg.checkpoint.every >= 1, "checkpoint.every", "must be >= 1")
        need(cfg.checkpoint.keep >= 1, "checkpoint.keep", "must be >= 1")
    if "logging" in cfg:
        need(cfg.logging.every >= 1, "logging.every", "must be >= 1")
        need(cfg.logging.samples_every >= 0, "logging.samples_every", "must be >= 0 (0: never)")
        need(cfg.logging.num_samples >= 0, "logging.num_samples", "must be >= 0")
        if "wandb" in cfg.logging:
            _check_wandb(cfg)
    if "train" in cfg and "max_consecutive_skips" in cfg.train:
        need(cfg.train.max_consecutive_skips >= 1, "train.max_consecutive_skips", "must be >= 1")
        need(cfg.train.steps_per_run >= 0, "train.steps_per_run", "must be >= 0 (0: run to the end)")


def _check_wandb(cfg: ml_collections.ConfigDict) -> None:
    """logging.wandb: strings, tags a tuple of strings, nothing set without a project."""
    need, w = _needs(cfg), cfg.logging.wandb
    for k in ("project", "entity", "name"):
        need(isinstance(w[k], str), f"logging.wandb.{k}", "must be a string")
    need(isinstance(w.tags, tuple | list) and all(isinstance(t, str) and t for t in w.tags), "logging.wandb.tags",
         "must be a tuple of non-empty strings")
    for k in ("entity", "name", "tags"):
        need(bool(w.project) or not w[k], f"logging.wandb.{k}", "is set but logging.wandb.project is empty "
             "(the project turns wandb on)")


def _check_model_blocks(cfg: ml_collections.ConfigDict) -> None:
    """model, rollout, eval, warmup, reward."""
    need = _needs(cfg)
    if "model" in cfg:
        m = cfg.model
        need(m.preset in ("", *qconfig.PRESETS), "model.preset", f"must be '' or one of {qconfig.PRESETS}")
        if "plan_preset" in m:
            need(m.plan_preset in ("", *qconfig.PRESETS), "model.plan_preset",
                 f"must be '' or one of {qconfig.PRESETS}")
        for k in ("dtype", "param_dtype"):
            need(m[k] in qconfig.DTYPES, f"model.{k}", f"must be one of {qconfig.DTYPES}")
        need(m.remat in qconfig.REMAT_POLICIES, "model.remat", f"must be one of {qconfig.REMAT_POLICIES}")
        need(m.attention_impl in qconfig.ATTENTION_IMPLS, "model.attention_impl",
             f"must be one of {qconfig.ATTENTION_IMPLS}")
        need(m.attention_chunk >= 0, "model.attention_chunk", "must be >= 0 (0: off)")
        need(m.logprob_chunk >= 1, "model.logprob_chunk", "must be >= 1")
        if "lora" in m:
            try:
                qconfig.LoraConfig(**m.lora.to_dict()).validate()
            except (TypeError, ValueError) as e:
                raise ConfigError(f"config.model.{e}") from None
    if "rollout" in cfg:
        r = cfg.rollout
        need(r.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1")
        need(r.temperature >= 0, "rollout.temperature", "must be >= 0 (0: greedy)")
        need(0 < r.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
        need(r.top_k >= 0, "rollout.top_k", "must be >= 0 (0: off)")
    if "eval" in cfg:
        e = cfg.eval
        need(e.every >= 0, "eval.every", "must be >= 0 (0: never during training)")
        need(e.batch_size >= 1, "eval.batch_size", "must be >= 1")
        need(e.max_samples >= 0, "eval.max_samples", "must be >= 0 (0: all)")
        need(e.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1")
        need(e.temperature >= 0, "eval.temperature", "must be >= 0 (0: greedy)")
        need(e.missing in RULE_CHOICES["missing"], "eval.missing", f"must be one of {RULE_CHOICES['missing']}")
    if "data" in cfg and "short_videos" in cfg.data:
        need(cfg.data.short_videos in SHORT_VIDEO_CHOICES, "data.short_videos", f"must be one of {SHORT_VIDEO_CHOICES}")
        need(cfg.data.max_samples >= 0, "data.max_samples", "must be >= 0 (0: all)")
    if "warmup" in cfg:
        w = cfg.warmup
        need(w.steps >= 0, "warmup.steps", "must be >= 0 (0: no warm-up)")
        need(w.batch_size >= 1, "warmup.batch_size", "must be >= 1")
        need(w.learning_rate > 0, "warmup.learning_rate", "must be > 0")
        if "targets" in w:
            need(w.targets in warmup.TARGETS, "warmup.targets", f"must be one of {warmup.TARGETS}")
        if "decay" in w:
            need(w.decay in trainer.DECAYS, "warmup.decay", f"must be one of {trainer.DECAYS}")
        for k in ("widen_prob", "drop_prob"):
            if k in w:
                need(0 <= w[k] <= 1, f"warmup.{k}", "must be a probability in [0, 1]")
    if "reward" in cfg:
        r = cfg.reward
        need(r.think in THINK_MODES, "reward.think", f"must be one of {THINK_MODES}")
        need(r.sigma > 0, "reward.sigma", "must be > 0")
        unknown = sorted(set(r.weights.keys()) - set(rewards.REWARD_KEYS))
        if unknown:
            raise ConfigError(
                f"config.reward.weights: unknown key(s) {unknown}; known: {', '.join(sorted(rewards.REWARD_KEYS))}"
            )


def _mesh_devices(mesh: dict) -> int:
    """A device count that the mesh sizes can fill (for a shape check before any device exists)."""
    fixed = 1
    for v in mesh.values():
        if isinstance(v, int) and v > 0:
            fixed *= v
    return fixed


# ----------------------------------------------------------------------------------------------------------
# The run's saved config: <workdir>/config.py (a config file: --config WORKDIR/config.py) and config.json
# ----------------------------------------------------------------------------------------------------------

RUN_CONFIG = "config.py"  # loadable like any config file; what evaluate / export / resume read
RUN_CONFIG_JSON = "config.json"  # the same values as JSON (tuples as lists), for people and tools


def _literal(value: object, ref_type: type | None) -> str:
    """Python source of one config value (``placeholder(T)`` for an unset typed field)."""
    if value is None:
        return f"config_dict.placeholder({ref_type.__name__})" if ref_type not in (None, type(None)) else "None"
    if isinstance(value, bool | int | str):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else f"float({str(value)!r})"
    if isinstance(value, tuple | list):
        items = [_literal(v, None) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, ml_collections.ConfigDict | dict):
        return _dict_source(value, "    ")
    raise ConfigError(f"config value {value!r} of type {type(value).__name__} cannot be saved")


def _dict_source(cfg: ml_collections.ConfigDict | dict, indent: str) -> str:
    if not cfg:
        return "{}"
    rows = []
    for key in cfg.keys():
        value = cfg[key]
        ref_type = cfg.get_type(key) if isinstance(cfg, ml_collections.ConfigDict) and value is None else None
        text = _literal(value, ref_type)
        rows.append(f"{indent}    {key!r}: {text.replace(chr(10), chr(10) + indent) if '{' in text else text},")
    return "{\n" + "\n".join(rows) + f"\n{indent}}}"


def run_config_source(cfg: ml_collections.ConfigDict) -> str:
    """``cfg`` as a config file whose ``get_config()`` returns the same values and override types."""
    return (
        '"""The resolved config of the run in this directory (written by python -m tempr1_jax.train at start).\n\n'
        "Resuming checks the new config against it; tempr1_jax.evaluate and export read it (docs/training.md).\n"
        '"""\n\nimport ml_collections\nfrom ml_collections import config_dict\n\n\n'
        "def get_config() -> ml_collections.ConfigDict:\n"
        f"    return ml_collections.ConfigDict({_dict_source(cfg, '    ')})\n"
    )


def write_run_config(cfg: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes ``<workdir>/config.py`` and ``config.json`` (atomically); returns the config.py path."""
    import json

    out = {}
    for name, text in ((RUN_CONFIG, run_config_source(cfg)), (RUN_CONFIG_JSON, json.dumps(
            json.loads(cfg.to_json()), indent=1) + "\n")):
        path = os.path.join(workdir, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        out[name] = path
    return out[RUN_CONFIG]


def read_run_config(workdir: str) -> dict | None:
    """The saved config of the run in ``workdir`` as a plain dict (``config.json``), or None when absent."""
    import json

    path = os.path.join(workdir, RUN_CONFIG_JSON)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the run's saved config: {e}") from None
