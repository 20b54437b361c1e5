"""LoRA (``model.lora``): zero-initialized adapters leave the base model's outputs exactly, ``without_adapters``
is the base (the KL reference, no weight copy), only the adapters train and hold optimizer state, rewards rise
on a small synthetic task with adapters alone, an exported model is merged and transformers loads it with our
logits, the planner's split, bad values; and a run through ``python -m tempr1_jax.train``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from test_policy_rollout import CFG, PAD, prompts_of

from tempr1_jax import configlib, grpo, policy, rollout, trainer
from tempr1_jax.models.qwen25vl import config as qcfg
from tempr1_jax.models.qwen25vl import lora
from tempr1_jax.models.qwen25vl.model import Qwen25VL

ALL = r"text/layers/.*_kernel|visual/.*_kernel"


def with_adapters(targets: str = ALL, rank: int = 4, b_std: float = 0.0, seed: int = 0, head: float = 1.0):
    """(base (graphdef, params), LoRA (graphdef, params), LoRA model config); B ~ N(0, b_std) when b_std > 0; the
    base's output head (and embedding) scaled by ``head``."""
    graphdef, params = nnx.split(Qwen25VL(CFG, rngs=nnx.Rngs(seed)))
    is_head = lambda p: any(n in jax.tree_util.keystr(p) for n in ("lm_head", "embed"))  # noqa: E731
    base = graphdef, jax.tree_util.tree_map_with_path(lambda p, x: head * x if is_head(p) else x, params)
    cfg = CFG.replace(lora=qcfg.LoraConfig(rank=rank, alpha=2.0 * rank, targets=targets))
    graphdef, params = lora.attach(base[1], cfg)
    if b_std:
        keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), 64))
        params = jax.tree_util.tree_map_with_path(
            lambda p, x: b_std * jax.random.normal(next(keys), x.shape) if "lora_b" in jax.tree_util.keystr(p) else x,
            params,
        )
    return base, (graphdef, params), cfg


def text_logits(graphdef, params, seed: int = 0) -> np.ndarray:
    ids = jnp.asarray(np.random.default_rng(seed).integers(0, 200, (2, 9)), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(9)[None, None], (3, 2, 9))
    fn = jax.jit(lambda p: nnx.merge(graphdef, p).logits(ids, pos, jnp.ones((2, 9), jnp.int32)))
    return np.asarray(fn(params))


def test_zero_initialized_adapters_give_exactly_the_base_model():
    (gb, pb), (gl, pl), cfg = with_adapters()
    assert len([k for k in lora.flat(pl) if lora.is_adapter(k)]) == 2 * len(lora.targeted(cfg.lora)) == 28
    np.testing.assert_array_equal(text_logits(gl, pl), text_logits(gb, pb))
    # ... and in the GRPO path, with video: the policy's log-probs of a rollout are the base's
    prompts = prompts_of(2)
    sc = rollout.SamplingConfig(group_size=2, max_new_tokens=5, temperature=1.0, eos_ids=CFG.eos_token_id, pad_id=PAD)
    out = rollout.make_generate(gl, sc)(pl, prompts, jax.random.PRNGKey(0))
    batch = policy.assemble(prompts, out, jnp.zeros(4), pad_id=PAD)
    logp_l = policy.make_policy_fn(gl, chunk_size=4)(pl, batch.inputs)[0]
    logp_b = policy.make_policy_fn(gb, chunk_size=4)(pb, batch.inputs)[0]
    np.testing.assert_array_equal(np.asarray(logp_l), np.asarray(logp_b))


def test_the_adapters_change_the_model_and_without_adapters_is_the_base():
    (gb, pb), (gl, pl), _ = with_adapters(b_std=0.05)
    assert np.abs(text_logits(gl, pl) - text_logits(gb, pb)).max() > 1e-2
    np.testing.assert_array_equal(text_logits(gl, lora.without_adapters(pl)), text_logits(gb, pb))


def test_a_bfloat16_base_gets_float32_adapters():
    cfg = CFG.replace(param_dtype="bfloat16")
    _, params = nnx.split(Qwen25VL(cfg, rngs=nnx.Rngs(0)))
    _, p = lora.attach(params, cfg.replace(lora=qcfg.LoraConfig(rank=2)))
    dtypes = {k: x.dtype for k, x in lora.flat(p).items()}
    assert {d for k, d in dtypes.items() if lora.is_adapter(k)} == {jnp.dtype("float32")}
    assert {d for k, d in dtypes.items() if not lora.is_adapter(k)} == {jnp.dtype("bfloat16")}


def test_targets_select_kernels_and_the_split_counts_them():
    assert lora.targeted(qcfg.LoraConfig(rank=8)) == [
        f"text/layers/{n}_kernel" for n in ("q", "k", "v", "o", "gate", "up", "down")
    ]
    assert lora.targeted(qcfg.LoraConfig(rank=8, targets=r"visual/merger/.*")) == [
        "visual/merger/fc1_kernel",
        "visual/merger/fc2_kernel",
    ]
    cfg = CFG.replace(lora=qcfg.LoraConfig(rank=4, targets=r"text/layers/(q|down)_kernel|visual/blocks/qkv_kernel"))
    t, v = cfg.text, cfg.vision
    shapes = lora.adapter_shapes(cfg)
    assert shapes == {
        "text/layers/q_kernel": (
            (t.num_hidden_layers, t.hidden_size, 4),
            (t.num_hidden_layers, 4, t.num_attention_heads * t.head_dim),
        ),
        "text/layers/down_kernel": (
            (t.num_hidden_layers, t.intermediate_size, 4),
            (t.num_hidden_layers, 4, t.hidden_size),
        ),
        "visual/blocks/qkv_kernel": ((v.depth, v.hidden_size, 4), (v.depth, 4, 3, v.hidden_size)),
    }
    split = lora.param_split(cfg)
    base_total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.split(Qwen25VL(CFG, rngs=nnx.Rngs(0)))[1]))
    assert split["frozen"] == base_total and split["adapters"] == shapes
    assert split["trainable"] == sum(int(np.prod(a)) + int(np.prod(b)) for a, b in shapes.values())
    assert lora.param_split(CFG) == {"trainable": base_total, "frozen": 0, "adapters": {}}


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.model.lora.rank=-1", "config.model.lora.rank=-1: must be an integer >= 0"),
        ("--config.model.lora.alpha=0", "config.model.lora.alpha=0.0: must be > 0"),
        ("--config.model.lora.dropout=0.1", "config.model.lora.dropout=0.1: only 0 is supported"),
        ("--config.model.lora.targets=(", "config.model.lora.targets='(': not a valid regex"),
    ],
)
def test_bad_lora_values_are_errors_naming_the_key(override, message):
    from test_train import DEMO

    with pytest.raises(configlib.ConfigError) as e:
        configlib.parse_flags(["train", "--config", DEMO, override])
    assert message in str(e.value)
    with pytest.raises(configlib.ConfigError, match=r"config\.model\.lora\.targets='text/nothing': matches no"):
        configlib.parse_flags(
            ["train", "--config", DEMO, "--config.model.lora.rank=4", "--config.model.lora.targets=text/nothing"]
        )


def test_only_the_adapters_train_and_the_rewards_rise_on_a_synthetic_task():
    """Reward: the share of a completion's tokens below id 128 (about 0.6 under the base). 24 GRPO steps of
    LoRA rank 4 on the language model (base frozen, k3 KL to the base, beta 0.04) raise it. The base's head is
    scaled up 25x, so that its logits are as peaked as a trained model's: with the random init's (std 0.02,
    nearly uniform softmax) a frozen head lets no adapter move the distribution much (measured: no rise)."""
    _, (graphdef, params0), cfg = with_adapters(targets=r"text/layers/.*_kernel", seed=3, head=25.0)
    trainable = trainer.trainable_mask(params0, lora.FREEZE_BASE)
    paths = jax.tree.leaves(trainer.param_paths(params0))
    assert [p for p, t in zip(paths, jax.tree.leaves(trainable), strict=True) if t] == [
        p for p in paths if lora.is_adapter(p)
    ]
    opt = ml_collections.ConfigDict(
        dict(
            learning_rate=5e-3,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            max_grad_norm=1.0,
            warmup_steps=0,
            decay="constant",
        )
    )
    gcfg = grpo.GRPOConfig(num_generations=8, beta=0.04)
    tx, schedule = trainer.make_optimizer(opt, 100, trainable)
    state, _ = trainer.create_state(jax.tree.map(jnp.copy, params0), tx, jax.random.PRNGKey(0), beta=0.0)  # no ref
    assert state.ref_params is None
    moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim > 0)
    adapters = sum(x.size for p, x in lora.flat(params0).items() if lora.is_adapter(p))
    assert moments == 2 * adapters  # Adam's mu and nu for the adapters only
    step = jax.jit(
        trainer.make_train_step(
            policy.make_policy_fn(graphdef, chunk_size=4),
            tx,
            gcfg,
            trainable=trainable,
            schedule=schedule,
            reference=lora.without_adapters,
        )
    )
    sc = rollout.SamplingConfig(group_size=8, max_new_tokens=6, temperature=1.0, eos_ids=(10_000,), pad_id=PAD)
    generate = rollout.make_generate(graphdef, sc)
    prompts = prompts_of(1)
    rng, means, kls = jax.random.PRNGKey(1), [], []
    for _ in range(24):
        rng, key = jax.random.split(rng)
        out = generate(state.params, prompts, key)
        reward = jnp.mean((out["tokens"] < 128).astype(jnp.float32), axis=1)
        state, m = step(state, policy.assemble(prompts, out, reward, pad_id=PAD, with_old_logp=False))
        means.append(float(reward.mean()))
        kls.append(float(m["kl"]))
    assert kls[0] == 0.0  # zero-initialized adapters: the policy is its reference at the first step
    assert np.mean(means[-6:]) > np.mean(means[:6]) + 0.1, means
    base_now = {p: x for p, x in lora.flat(state.params).items() if not lora.is_adapter(p)}
    for p, x in lora.flat(params0).items():
        if not lora.is_adapter(p):
            np.testing.assert_array_equal(np.asarray(base_now[p]), np.asarray(x), err_msg=p)


def test_export_merges_the_adapters_and_transformers_gives_our_logits(tmp_path):
    """A tiny HF model -> ours + random adapters (vision and text) -> export_hf_checkpoint (merged W + s A B) ->
    transformers: the same logits as our model with its adapters, on a prompt with a video."""
    torch = pytest.importorskip("torch")
    from qwen25vl_helpers import hf_config, hf_model, save_hf
    from test_qwen25vl_parity import TOL, _hf_logits, _ours, _video_case
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tempr1_jax.models.qwen25vl import params as qparams

    base = qparams.load_hf_checkpoint(save_hf(hf_model(hf_config(tie=False), seed=0), tmp_path / "hf"), dtype="float32")
    cfg = base.cfg.replace(lora=qcfg.LoraConfig(rank=4, alpha=8.0, targets=ALL))
    graphdef, p = lora.attach(nnx.split(base)[1], cfg)
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 64))
    p = jax.tree_util.tree_map_with_path(
        lambda k, x: 0.05 * jax.random.normal(next(keys), x.shape) if "lora_b" in jax.tree_util.keystr(k) else x, p
    )
    ours_model = nnx.merge(graphdef, p)
    out = qparams.export_hf_checkpoint(ours_model, tmp_path / "merged", dtype="float32")
    assert not any("lora" in k for k in qparams.Checkpoint(out).where)  # a plain Qwen2.5-VL
    hm = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        out, attn_implementation="eager", dtype=torch.float32
    ).eval()
    ids, mask, pos, items = _video_case(base.cfg)
    ours = _ours(ours_model, ids, mask, pos, items)
    assert np.abs(ours - _ours(base, ids, mask, pos, items)).max() > 1e-2  # the adapters matter
    assert np.abs(ours - _hf_logits(hm, ids, mask, pos, videos=items, spg=[1.0])).max() <= TOL


# ----------------------------------------------------------------------------------------------------------
# Through the entry point (fixtures env / data_dir from tests/test_train.py)
# ----------------------------------------------------------------------------------------------------------

from test_train import DEMO, data_dir, env, flat, read_state, run, small, train_rows  # noqa: E402, F401


def lora_args(data_dir, **extra):  # noqa: F811
    return small(
        data_dir, **{"model.lora.rank": 4, "warmup.steps": 0, "eval.every": 0, "logging.tensorboard": False, **extra}
    )


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, env, data_dir):  # noqa: F811
    wd = tmp_path_factory.mktemp("lora_run")
    r = run(["--config", DEMO, "--workdir", str(wd), *lora_args(data_dir)], env)
    assert r.returncode == 0, r.stderr[-6000:]
    assert "LoRA rank 4 (alpha 16) on 7 kernels" in r.stderr
    return wd


def test_a_lora_run_trains_only_its_adapters_from_the_base(lora_run, env, data_dir):  # noqa: F811
    rows = train_rows(lora_run)
    assert rows[1]["kl"] == 0.0  # zero-initialized adapters: the first step's policy is the base itself
    assert rows[4]["kl"] > 0 and [rows[s]["compiles"] for s in (2, 3, 4)] == [0, 0, 0]
    state = flat(read_state(lora_run, 4))
    assert not any(k.startswith("ref_params") for k in state)  # no second copy of the weights
    moments = [k for k in state if k.startswith("opt_state") and state[k].ndim > 0]
    assert moments and all(lora.is_adapter(k) for k in moments)
    assert {k.split("/")[-2] for k in state if k.startswith("params") and "lora" in k} == {
        f"{n}_kernel_lora_{ab}" for n in ("q", "k", "v", "o", "gate", "up", "down") for ab in "ab"
    }
    # the checkpoint is read back with its adapters by evaluate (a LoRA config)
    r = run(
        ["--config", DEMO, "--checkpoint", str(lora_run), "--output", str(lora_run / "ev"), *lora_args(data_dir)],
        env,
        module="tempr1_jax.evaluate",
    )
    assert r.returncode == 0, r.stderr[-6000:]


@pytest.mark.slow
def test_a_lora_run_resumes_exactly_in_a_new_process(tmp_path, env, data_dir, lora_run):  # noqa: F811
    wd = tmp_path / "resumed"
    args = ["--config", DEMO, "--workdir", str(wd), *lora_args(data_dir, **{"train.steps_per_run": 2})]
    for _ in range(2):
        r = run(args, env)
        assert r.returncode == 0, r.stderr[-6000:]
    assert "resumed from step 2" in r.stderr
    a, b = flat(read_state(lora_run, 4)), flat(read_state(wd, 4))
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
