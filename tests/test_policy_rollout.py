"""The rollout sampler and the policy seam on a tiny random Qwen2.5-VL: sampling rules, EOS handling, the
sampler's log-probs equal the policy's (on-policy ratio 1), compile-once, and a GRPO step on the result."""

import dataclasses

import batches
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from tempr1_jax import grpo, policy, rollout, trainer
from tempr1_jax.models.qwen25vl import config as qcfg
from tempr1_jax.models.qwen25vl.model import Qwen25VL, token_logprobs_and_entropy

CFG = qcfg.preset("tiny", dtype="float32")  # fp32 compute: the log-prob comparisons are exact to ~1e-6
EOS = CFG.eos_token_id[0]
PAD = CFG.pad_token_id


@pytest.fixture(scope="module")
def model():
    return nnx.split(Qwen25VL(CFG, rngs=nnx.Rngs(0)))


def stream_batch(seed: int = 0, grids=((2, 4, 4), (4, 4, 4))):
    """A batch shaped like data_pipeline.stream's: left-padded prompts with one video each."""
    rng = np.random.default_rng(seed)
    rows, n_max = [], max(int(np.prod(g)) for g in grids)
    for k, g in enumerate(grids):
        n_tok = int(np.prod(g)) // 4
        head = rng.integers(0, 200, 3 + 2 * k).tolist()
        tail = rng.integers(0, 200, 4).tolist()
        video = [CFG.vision_start_token_id] + [CFG.video_token_id] * n_tok + [CFG.vision_end_token_id]
        rows.append(head + video + tail)
    length = max(map(len, rows)) + 2
    ids = np.full((len(rows), length), PAD, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for b, r in enumerate(rows):
        ids[b, length - len(r):] = r
        mask[b, length - len(r):] = 1
    pixels = np.zeros((len(grids), n_max, 1176), np.float32)
    for b, g in enumerate(grids):
        pixels[b, : int(np.prod(g))] = rng.normal(size=(int(np.prod(g)), 1176))
    return batches.stream_batch(input_ids=ids, attention_mask=mask, grid_thw=np.array(grids, np.int32),
                                second_per_grid_ts=np.array([1.0, 0.5], np.float32), pixel_values=pixels)


def prompts_of(seed=0, **kw):
    return policy.prompt_inputs(CFG, stream_batch(seed, **kw), policy.VisionSizer(CFG))


def sampling(**kw):
    base = dict(group_size=1, max_new_tokens=6, temperature=0.0, eos_ids=(EOS,), pad_id=PAD)
    return rollout.SamplingConfig(**{**base, **kw})


def concatenated(m, prompts, out):
    """The rows [prompt, completion] of a rollout as one plain forward takes them (the reference the grouped
    training forward must equal): ids, positions [3, B, L + T], mask, vision features per row."""
    x = policy.assemble(prompts, out, jnp.zeros(out["tokens"].shape[0]), pad_id=PAD).inputs
    rows = policy.full_rows(x)
    g = x["completion_ids"].shape[0] // x["prompt_ids"].shape[0]
    feats = jnp.repeat(policy.vision_features_per_prompt(m, x["vision"]), g, axis=0)
    return rows["input_ids"], rows["position_ids"].swapaxes(0, 1), rows["attention_mask"], feats


def test_greedy_tokens_are_the_argmax_of_the_full_forward(model):
    graphdef, params = model
    prompts = prompts_of()
    out = rollout.make_generate(graphdef, sampling())(params, prompts, jax.random.PRNGKey(0))
    m = nnx.merge(graphdef, params)
    ids, pos, mask, feats = concatenated(m, prompts, out)
    hidden = m(ids, pos, mask, vision_features=feats)
    logits = jnp.einsum("bld,dv->blv", hidden, m.head_weight())
    t = out["tokens"].shape[1]
    start = ids.shape[1] - t - 1
    greedy = np.asarray(jnp.argmax(logits[:, start: start + t], axis=-1))
    mask = np.asarray(out["completion_mask"])
    np.testing.assert_array_equal(np.asarray(out["tokens"])[mask], greedy[mask])
    assert mask.all()  # a random tiny model rarely says EOS within 6 tokens (checked: it does not here)


def test_sampler_logp_equals_policy_logp(model):
    """The rollout's old log-probs and the update's log-probs agree: on-policy ratios are 1."""
    graphdef, params = model
    prompts = prompts_of(1)
    sc = sampling(group_size=3, temperature=0.7, max_new_tokens=8)
    out = rollout.make_generate(graphdef, sc)(params, prompts, jax.random.PRNGKey(3))
    batch = policy.assemble(prompts, out, jnp.zeros(6), pad_id=PAD)
    logp, ent = policy.make_policy_fn(graphdef, temperature=0.7, chunk_size=4)(params, batch.inputs)
    mask = np.asarray(out["completion_mask"])
    np.testing.assert_allclose(np.asarray(logp)[mask], np.asarray(out["logp"])[mask], atol=2e-5)
    assert np.all(np.asarray(ent)[mask] > 0)
    tokens = np.asarray(out["tokens"])
    assert len({tuple(r) for r in tokens}) > 1  # sampling draws different completions within a group


def test_a_completion_that_samples_a_vision_pad_id_keeps_its_log_probs(model):
    """A sampled <|video_pad|> / <|image_pad|> is text to the sampler (decode embeds it as a token): the update
    must not give it vision features, or its log-probs (and every later token's) no longer match the rollout."""
    graphdef, params = model
    prompts = prompts_of(2)
    sc = sampling(group_size=16, temperature=4.0, max_new_tokens=8)  # flat draws: pad ids come up
    out = rollout.make_generate(graphdef, sc)(params, prompts, jax.random.PRNGKey(0))
    tokens, mask = np.asarray(out["tokens"]), np.asarray(out["completion_mask"])
    pads = np.isin(tokens, [CFG.video_token_id, CFG.image_token_id]) & mask
    assert pads.any()  # the case under test occurs (fixed key)
    batch = policy.assemble(prompts, out, jnp.zeros(tokens.shape[0]), pad_id=PAD)
    logp, _ = policy.make_policy_fn(graphdef, temperature=4.0, chunk_size=4)(params, batch.inputs)
    np.testing.assert_allclose(np.asarray(logp)[mask], np.asarray(out["logp"])[mask], atol=2e-5)


@pytest.mark.parametrize("chunk", [0, pytest.param(4, marks=pytest.mark.slow)])
def test_each_prompt_computed_once_equals_the_concatenated_rows(model, chunk):
    """policy_fn runs a prompt once for its G completions (Qwen25VL.grouped); its log-probs, entropies and
    gradients equal those of the plain forward over the G concatenated rows [prompt, completion] (with
    attention in query blocks too: model.attention_chunk)."""
    graphdef, params = model
    if chunk:
        graphdef, params = nnx.split(Qwen25VL(dataclasses.replace(CFG, attention_chunk=chunk), rngs=nnx.Rngs(0)))
    prompts = prompts_of(3)
    out = rollout.make_generate(graphdef, sampling(group_size=3, temperature=1.0, max_new_tokens=7))(
        params, prompts, jax.random.PRNGKey(2))
    batch = policy.assemble(prompts, out, jnp.zeros(6), pad_id=PAD)
    fn = policy.make_policy_fn(graphdef, temperature=1.0, chunk_size=4)
    t = out["tokens"].shape[1]

    def plain(p):
        m = nnx.merge(graphdef, p)
        ids, pos, mask, feats = concatenated(m, prompts, out)
        in_prompt = jnp.broadcast_to(jnp.arange(ids.shape[1]) < ids.shape[1] - t, ids.shape)
        h = m(ids, pos, mask, vision_features=feats, vision_mask=in_prompt)[:, ids.shape[1] - t - 1 : -1]
        return token_logprobs_and_entropy(h, m, out["tokens"], chunk_size=4)

    cmask = np.asarray(out["completion_mask"])
    (lp, ent), (lp0, ent0) = fn(params, batch.inputs), plain(params)
    np.testing.assert_allclose(np.asarray(lp)[cmask], np.asarray(lp0)[cmask], atol=2e-5)
    np.testing.assert_allclose(np.asarray(ent)[cmask], np.asarray(ent0)[cmask], atol=2e-5)
    loss = lambda f: lambda p: jnp.sum(jnp.where(cmask, f(p)[0], 0.0))  # noqa: E731
    g1 = jax.grad(loss(lambda p: fn(p, batch.inputs)))(params)
    g0 = jax.grad(loss(plain))(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    graphdef, params = model
    prompts = prompts_of(2)
    key = jax.random.PRNGKey(5)
    greedy = rollout.make_generate(graphdef, sampling(group_size=2))(params, prompts, key)["tokens"]
    for kw in ({"top_k": 1}, {"top_p": 1e-6}):
        out = rollout.make_generate(graphdef, sampling(group_size=2, temperature=1.0, **kw))(params, prompts, key)
        np.testing.assert_array_equal(out["tokens"], greedy)


def test_top_k_restricts_the_draws():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]] * 2000))
    sc = sampling(temperature=1.0, top_k=2)
    token, lp = rollout.sample_token(logits, jax.random.PRNGKey(0), sc)
    assert set(np.asarray(token).tolist()) == {0, 1}
    np.testing.assert_allclose(np.exp(lp), np.where(token == 0, 0.5, 0.3), rtol=1e-5)  # full-distribution probs
    token, _ = rollout.sample_token(logits, jax.random.PRNGKey(1), sampling(temperature=1.0, top_p=0.7))
    assert set(np.asarray(token).tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7 first
    token, _ = rollout.sample_token(logits, jax.random.PRNGKey(2), sampling(temperature=1.0))
    frac = np.bincount(np.asarray(token), minlength=4) / 2000
    np.testing.assert_allclose(frac, [0.5, 0.3, 0.15, 0.05], atol=0.04)


def test_eos_masks_the_rest_and_stops_early(model):
    graphdef, params = model
    prompts = prompts_of()
    greedy = np.asarray(rollout.make_generate(graphdef, sampling())(params, prompts, jax.random.PRNGKey(0))["tokens"])
    # make row 0's third greedy token an end-of-sequence id: it stops there, row 1 goes on
    stop = int(greedy[0, 2])
    assume_distinct = stop not in greedy[1]
    out = rollout.make_generate(graphdef, sampling(eos_ids=(stop,)))(params, prompts, jax.random.PRNGKey(0))
    mask, tokens = np.asarray(out["completion_mask"]), np.asarray(out["tokens"])
    assert mask[0].tolist() == [True, True, True, False, False, False]
    assert (tokens[0, 3:] == PAD).all() and np.all(np.asarray(out["logp"])[0, 3:] == 0)
    if assume_distinct:
        assert mask[1].all()
    # every token ends a sequence: one step, then the loop exits
    out = rollout.make_generate(graphdef, sampling(eos_ids=tuple(range(CFG.text.vocab_size))))(
        params, prompts, jax.random.PRNGKey(0))
    assert int(out["steps"]) == 1 and np.asarray(out["completion_mask"]).sum(1).tolist() == [1, 1]


def test_generate_compiles_once_per_bucket(model):
    graphdef, params = model
    gen = rollout.make_generate(graphdef, sampling(group_size=2, temperature=1.0))
    sizer = policy.VisionSizer(CFG)
    for seed in range(3):
        prompts = policy.prompt_inputs(CFG, stream_batch(seed), sizer)
        gen(params, prompts, jax.random.PRNGKey(seed))
    assert gen._cache_size() == 1


def test_vision_sizer_grows_and_never_shrinks():
    sizer = policy.VisionSizer(CFG)
    small = sizer("b", np.array([[2, 4, 4]]))
    big = sizer("b", np.array([[8, 16, 16]]))
    again = sizer("b", np.array([[2, 4, 4]]))
    assert big.fits(small) and again == big and big != small
    assert sizer("other", np.array([[2, 4, 4]])) == small


@pytest.mark.slow
def test_grpo_step_on_a_rollout_with_micro_batches(model):
    """Per-prompt video leaves split with their groups: 2 micro-batches give the 1-micro-batch update."""
    graphdef, params = model
    prompts = prompts_of(4)
    sc = sampling(group_size=2, temperature=1.0, max_new_tokens=5)
    out = rollout.make_generate(graphdef, sc)(params, prompts, jax.random.PRNGKey(1))
    batch = policy.assemble(prompts, out, jnp.array([0.0, 1.0, 2.0, 0.5]), pad_id=PAD)
    opt = ml_collections.ConfigDict(dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                                         max_grad_norm=1.0, warmup_steps=0, decay="constant"))
    cfg = grpo.GRPOConfig(num_generations=2, beta=0.0)
    fn = policy.make_policy_fn(graphdef, temperature=1.0, chunk_size=4)
    results = []
    for micro in (1, 2):
        tx, schedule = trainer.make_optimizer(opt, 10)
        state, _ = trainer.create_state(jax.tree.map(jnp.copy, params), tx, jax.random.PRNGKey(0), beta=0.0)
        step = jax.jit(trainer.make_train_step(fn, tx, cfg, micro_batches=micro, schedule=schedule))
        state, metrics = step(state, batch)
        results.append((state.params, metrics))
    (p1, m1), (p2, m2) = results
    assert float(m1["skipped"]) == 0
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):  # Adam steps of lr 1e-3
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)
    changed = any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(params), strict=True))
    assert changed
