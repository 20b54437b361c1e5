"""Float32 parity against tiny random HF ``Qwen2_5_VLForConditionalGeneration`` models built in-process.

Our own (3, B, L) position ids (original Qwen/vLLM rule) are passed to HF as ``position_ids`` so both sides
see the same positions (HF 5.x's own rope index differs for text after a video: notes/qwen25vl.md trap 1).
"""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from qwen25vl_helpers import (
    IMAGE_ID,
    PAD_ID,
    VEND_ID,
    VIDEO_ID,
    VSTART_ID,
    flatten_hub_config,
    hf_config,
    hf_model,
    random_patches,
    save_hf,
    video_prompt,
)

from tempr1_jax.models.qwen25vl import config as qconfig
from tempr1_jax.models.qwen25vl import params, rope
from tempr1_jax.models.qwen25vl.model import token_logprobs_and_entropy

torch = pytest.importorskip("torch")
TOL = 1e-4


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    hm = hf_model(hf_config(tie=False), seed=0)
    path = save_hf(hm, tmp_path_factory.mktemp("untied"))
    model = params.load_hf_checkpoint(path, dtype="float32")
    return hm, path, model


def _hf_logits(hm, ids, mask, pos, *, videos=(), images=(), spg=None):
    kw = {}
    if videos:
        kw.update(
            pixel_values_videos=torch.tensor(np.concatenate([p for p, _ in videos])),
            video_grid_thw=torch.tensor([g for _, g in videos]),
            second_per_grid_ts=torch.tensor(spg, dtype=torch.float32),
        )
    if images:
        kw.update(
            pixel_values=torch.tensor(np.concatenate([p for p, _ in images])),
            image_grid_thw=torch.tensor([g for _, g in images]),
        )
    tt = np.where(ids == VIDEO_ID, 2, np.where(ids == IMAGE_ID, 1, 0))
    with torch.no_grad():
        hm.model.rope_deltas = None
        out = hm(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(pos).long(),
            mm_token_type_ids=torch.tensor(tt),
            **kw,
        )
    return out.logits.numpy()


@nnx.jit
def _logits(model, ids, pos, mask, vis):
    return model.logits(ids, pos, mask, vis)


def _ours(model, ids, mask, pos, items=()):
    vis = rope.pack_vision(model.cfg, list(items)) if items else None
    vis = None if vis is None else {k: jnp.asarray(v) for k, v in vis.items()}
    return np.asarray(_logits(model, jnp.asarray(ids), jnp.asarray(pos), jnp.asarray(mask), vis))


def _check(ours, ref, mask):
    diff = np.abs(ours - ref)[np.asarray(mask).astype(bool)]
    assert diff.max() <= TOL, diff.max()


def test_text_only_left_padded(untied):
    hm, _, model = untied
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 140, size=(2, 11))
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    ids[1, :4] = PAD_ID
    pos, _ = rope.get_rope_index(model.cfg, ids, mask)
    _check(_ours(model, ids, mask, pos), _hf_logits(hm, ids, mask, pos), mask)


def test_one_image(untied):
    hm, _, model = untied
    rng = np.random.default_rng(1)
    grid = (1, 4, 6)
    ids = np.array([[5, 6, VSTART_ID] + [IMAGE_ID] * 6 + [VEND_ID, 7, 8, 9]])
    mask = np.ones_like(ids)
    pix = random_patches(grid, rng)
    pos, _ = rope.get_rope_index(model.cfg, ids, mask, image_grid_thw=[grid])
    ref = _hf_logits(hm, ids, mask, pos, images=[(pix, grid)])
    _check(_ours(model, ids, mask, pos, [(pix, grid)]), ref, mask)


def test_video_odd_merged_grid_text_after(untied):
    """3 temporal patches of a 10x14 patch grid: merged 5x7, so edge windows are 1x4, 4x3 and 1x3 units."""
    hm, _, model = untied
    rng = np.random.default_rng(2)
    grid = (3, 10, 14)
    ids = np.array([video_prompt(grid, before=3, after=6, rng=rng)])
    mask = np.ones_like(ids)
    pix = random_patches(grid, rng)
    pos, _ = rope.get_rope_index(model.cfg, ids, mask, video_grid_thw=[grid], second_per_grid_ts=[1.25])
    ref = _hf_logits(hm, ids, mask, pos, videos=[(pix, grid)], spg=[1.25])
    _check(_ours(model, ids, mask, pos, [(pix, grid)]), ref, mask)


def test_vision_tower_alone(untied):
    hm, _, model = untied
    rng = np.random.default_rng(3)
    grids = [(2, 10, 14), (1, 18, 8)]
    pix = [random_patches(g, rng) for g in grids]
    with torch.no_grad():
        ref = hm.model.visual(
            torch.tensor(np.concatenate(pix)), grid_thw=torch.tensor(grids)
        ).pooler_output.numpy()
    sizes = rope.bucket_vision_sizes(rope.required_vision_sizes(model.cfg.vision, grids))
    vis = rope.pack_vision(model.cfg, list(zip(pix, grids, strict=True)), sizes)
    ours = np.asarray(model.vision_features({k: jnp.asarray(v) for k, v in vis.items()}))
    assert np.abs(ours[: ref.shape[0]] - ref).max() <= TOL


def test_batch_two_videos_different_sizes_padded(untied):
    hm, _, model = untied
    rng = np.random.default_rng(4)
    g1, g2 = (2, 6, 10), (4, 4, 4)
    s1 = video_prompt(g1, before=2, after=4, rng=rng)
    s2 = video_prompt(g2, before=5, after=2, rng=rng)
    length = max(len(s1), len(s2)) + 2
    ids = np.full((2, length), PAD_ID)
    mask = np.zeros((2, length), np.int64)
    ids[0, : len(s1)], mask[0, : len(s1)] = s1, 1  # right padding
    ids[1, -len(s2) :], mask[1, -len(s2) :] = s2, 1  # left padding
    p1, p2 = random_patches(g1, rng), random_patches(g2, rng)
    pos, _ = rope.get_rope_index(model.cfg, ids, mask, video_grid_thw=[g1, g2], second_per_grid_ts=[0.5, 2.5])
    ref = _hf_logits(hm, ids, mask, pos, videos=[(p1, g1), (p2, g2)], spg=[0.5, 2.5])
    _check(_ours(model, ids, mask, pos, [(p1, g1), (p2, g2)]), ref, mask)


def _video_case(cfg, seed=5):
    rng = np.random.default_rng(seed)
    grid = (2, 6, 6)
    ids = np.array([video_prompt(grid, before=2, after=3, rng=rng)])
    mask = np.ones_like(ids)
    pix = random_patches(grid, rng)
    pos, _ = rope.get_rope_index(cfg, ids, mask, video_grid_thw=[grid], second_per_grid_ts=[1.0])
    return ids, mask, pos, [(pix, grid)]


def test_flat_hub_config(untied, tmp_path):
    hm, path, model = untied
    flat = tmp_path / "flat"
    shutil.copytree(path, flat)
    flatten_hub_config(flat)
    assert "text_config" not in json.loads((flat / "config.json").read_text())
    cfg = qconfig.from_hf_config(flat)
    assert cfg.text == model.cfg.text and cfg.vision == model.cfg.vision
    m2 = params.load_hf_checkpoint(flat, dtype="float32")
    ids, mask, pos, items = _video_case(cfg)
    ref = _hf_logits(hm, ids, mask, pos, videos=items, spg=[1.0])
    _check(_ours(m2, ids, mask, pos, items), ref, mask)


def test_tied_3b_style_checkpoint(tmp_path):
    hm = hf_model(hf_config(tie=True), seed=7)
    path = save_hf(hm, tmp_path / "tied")
    ckpt = params.Checkpoint(path)
    assert not ckpt.has("lm_head.weight")
    model = params.load_hf_checkpoint(path, dtype="float32")
    assert model.cfg.tie_word_embeddings and not hasattr(model.text, "lm_head")
    ids, mask, pos, items = _video_case(model.cfg)
    ref = _hf_logits(hm, ids, mask, pos, videos=items, spg=[1.0])
    _check(_ours(model, ids, mask, pos, items), ref, mask)
    # Export keeps the tie: no lm_head.weight, and transformers ties it back on load.
    from transformers import Qwen2_5_VLForConditionalGeneration

    out = params.export_hf_checkpoint(model, tmp_path / "export", dtype="float32")
    assert not params.Checkpoint(out).has("lm_head.weight")
    hm2 = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, attn_implementation="eager").eval()
    np.testing.assert_allclose(_hf_logits(hm2, ids, mask, pos, videos=items, spg=[1.0]), ref, atol=1e-5)


def test_new_key_layout_sharded(untied, tmp_path):
    """``model.language_model.*`` / ``model.visual.*`` keys spread over shards with an index json."""
    hm, path, model = untied
    src = params.Checkpoint(path)
    out = tmp_path / "newlayout"
    out.mkdir()
    shutil.copy(path / "config.json", out / "config.json")
    keys = sorted(src.where)
    renamed = {}
    for k in keys:
        new = ("model." + k) if k.startswith("visual.") else k.replace("model.", "model.language_model.", 1)
        renamed[new] = np.array(src.get(k))
    names = sorted(renamed)
    half = len(names) // 2
    weight_map = {}
    for i, chunk in enumerate([names[:half], names[half:]]):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        params.write_safetensors(out / fname, {k: renamed[k] for k in chunk})
        weight_map.update({k: fname for k in chunk})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    m2 = params.load_hf_checkpoint(out, dtype="float32")
    ids, mask, pos, items = _video_case(model.cfg)
    _check(_ours(m2, ids, mask, pos, items), _hf_logits(hm, ids, mask, pos, videos=items, spg=[1.0]), mask)


def test_loader_errors(untied, tmp_path):
    _, path, _ = untied
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    src = params.Checkpoint(bad)
    tensors = {k: np.array(src.get(k)) for k in src.where if k != "model.norm.weight"}
    params.write_safetensors(bad / "model.safetensors", tensors)
    with pytest.raises(KeyError, match="model.norm.weight"):
        params.load_hf_checkpoint(bad, dtype="float32")
    tensors["model.norm.weight"] = np.ones((3,), np.float32)
    params.write_safetensors(bad / "model.safetensors", tensors)
    with pytest.raises(ValueError, match="shape"):
        params.load_hf_checkpoint(bad, dtype="float32")
    tensors["model.norm.weight"] = np.ones((64,), np.float32)
    tensors["value_head.weight"] = np.ones((2,), np.float32)
    params.write_safetensors(bad / "model.safetensors", tensors)
    with pytest.raises(ValueError, match="value_head"):
        params.load_hf_checkpoint(bad, dtype="float32")
    params.load_hf_checkpoint(bad, dtype="float32", strict=False)
    with pytest.raises(FileNotFoundError):
        params.load_hf_checkpoint(tmp_path / "nowhere")


def test_export_roundtrip_hf_loads_same_logits(untied, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    hm, _, model = untied
    out = params.export_hf_checkpoint(model, tmp_path / "export", dtype="float32", max_shard_bytes=200_000)
    assert (out / "model.safetensors.index.json").is_file()  # small shards force the sharded layout
    hm2 = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        out, attn_implementation="eager", dtype=torch.float32
    ).eval()
    ids, mask, pos, items = _video_case(model.cfg)
    ref = _hf_logits(hm, ids, mask, pos, videos=items, spg=[1.0])
    np.testing.assert_allclose(_hf_logits(hm2, ids, mask, pos, videos=items, spg=[1.0]), ref, atol=1e-5)
    m3 = params.load_hf_checkpoint(out, dtype="float32")
    _check(_ours(m3, ids, mask, pos, items), ref, mask)


def test_greedy_decode_matches_hf_generate(untied):
    hm, _, model = untied
    n_new = 16
    rng = np.random.default_rng(8)
    grid = (3, 6, 10)
    ids = np.array([video_prompt(grid, before=4, after=5, rng=rng)])
    mask = np.ones_like(ids)
    pix = random_patches(grid, rng)
    pos, deltas = rope.get_rope_index(model.cfg, ids, mask, video_grid_thw=[grid], second_per_grid_ts=[1.5])
    with torch.no_grad():
        hm.model.rope_deltas = None
        # HF 5.x's own rope index shifts text after a video differently: feed it ours (trap 1).
        hm.model.get_rope_index = lambda *a, **k: (
            torch.tensor(pos).long(),
            torch.tensor(deltas).long()[:, None],
        )
        out = hm.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            pixel_values_videos=torch.tensor(pix),
            video_grid_thw=torch.tensor([grid]),
            second_per_grid_ts=torch.tensor([1.5]),
            mm_token_type_ids=torch.tensor((ids == VIDEO_ID) * 2),
            max_new_tokens=n_new,
            min_new_tokens=n_new,
            do_sample=False,
        )
        del hm.model.get_rope_index
    ref = out[0, ids.shape[1] :].numpy()
    vis = {k: jnp.asarray(v) for k, v in rope.pack_vision(model.cfg, [(pix, grid)]).items()}
    graphdef, state = nnx.split(model)

    @jax.jit
    def generate(state, ids, pos, mask, vis):
        m = nnx.merge(graphdef, state)
        cache = m.init_cache(ids.shape[0], ids.shape[1] + n_new)
        logits, cache = m.prefill(ids, pos, mask, cache, vis)
        tok = jnp.argmax(logits, -1).astype(jnp.int32)
        toks = jnp.zeros((ids.shape[0], n_new), jnp.int32).at[:, 0].set(tok)

        def body(c):
            i, tok, cache, toks = c
            logits, cache = m.decode_step(tok, cache)
            tok = jnp.argmax(logits, -1).astype(jnp.int32)
            return i + 1, tok, cache, toks.at[:, i].set(tok)

        return jax.lax.while_loop(lambda c: c[0] < n_new, body, (1, tok, cache, toks))[3]

    ours = np.asarray(generate(state, jnp.asarray(ids), jnp.asarray(pos), jnp.asarray(mask), vis))[0]
    np.testing.assert_array_equal(ours, ref)


def test_decode_equals_full_forward_left_and_right_padding(untied):
    """Prefill a padded batch, feed the next tokens one by one: logits equal the full forward's."""
    _, _, model = untied
    rng = np.random.default_rng(9)
    grid = (2, 4, 6)
    s1 = video_prompt(grid, before=2, after=3, rng=rng)
    s2 = list(rng.integers(0, 140, size=7))
    cont = rng.integers(0, 140, size=(2, 4))
    lp = len(s1) + 1
    ids = np.full((2, lp), PAD_ID)
    mask = np.zeros((2, lp), np.int64)
    ids[0, : len(s1)], mask[0, : len(s1)] = s1, 1  # right padded
    ids[1, -len(s2) :], mask[1, -len(s2) :] = s2, 1  # left padded
    pix = random_patches(grid, rng)
    pos, deltas = rope.get_rope_index(model.cfg, ids, mask, video_grid_thw=[grid], second_per_grid_ts=[1.0])
    vis = {k: jnp.asarray(v) for k, v in rope.pack_vision(model.cfg, [(pix, grid)]).items()}
    prefill = nnx.jit(lambda m, *a: m.prefill(*a))
    decode = nnx.jit(lambda m, tok, cache: m.decode_step(tok, cache))
    cache = model.init_cache(2, lp + cont.shape[1])
    logits, cache = prefill(model, jnp.asarray(ids), jnp.asarray(pos), jnp.asarray(mask), cache, vis)
    steps = [np.asarray(logits)]
    for j in range(cont.shape[1] - 1):
        lg, cache = decode(model, jnp.asarray(cont[:, j], jnp.int32), cache)
        steps.append(np.asarray(lg))
    # Full forward over the prompts (padding removed) followed by the continuation.
    for b in range(2):
        seq = np.concatenate([ids[b][mask[b].astype(bool)], cont[b]])[None]
        m2 = np.ones_like(seq)
        p2, d2 = rope.get_rope_index(
            model.cfg,
            seq,
            m2,
            video_grid_thw=[grid] if b == 0 else None,
            second_per_grid_ts=[1.0] if b == 0 else None,
        )
        assert d2[0] == deltas[b]
        full = _ours(model, seq, m2, p2, [(pix, grid)] if b == 0 else ())
        n = int(mask[b].sum())
        for j, lg in enumerate(steps):
            np.testing.assert_allclose(lg[b], full[0, n - 1 + j], atol=TOL)


def test_token_logprobs_and_entropy(untied):
    _, _, model = untied
    rng = np.random.default_rng(10)
    ids = jnp.asarray(rng.integers(0, 140, size=(2, 13)))
    mask = jnp.ones_like(ids)
    pos = jnp.asarray(rope.text_positions(np.ones((2, 13))))
    h = model(ids, pos, mask)
    targets = jnp.asarray(rng.integers(0, 160, size=(2, 13)))
    logp, ent = token_logprobs_and_entropy(h, model, targets, chunk_size=5, temperature=0.7)
    full = jax.nn.log_softmax(model.logits(ids, pos, mask) / 0.7, axis=-1)
    np.testing.assert_allclose(logp, jnp.take_along_axis(full, targets[..., None], -1)[..., 0], atol=1e-5)
    np.testing.assert_allclose(ent, -jnp.sum(jnp.exp(full) * full, -1), atol=1e-5)
    w = model.head_weight()

    def loss_chunked(h, w):
        lp, e = token_logprobs_and_entropy(h, w, targets, chunk_size=4)
        return jnp.sum(lp) + 0.1 * jnp.sum(e)

    def loss_full(h, w):
        lg = jax.nn.log_softmax(jnp.einsum("bld,dv->blv", h, w), -1)
        return jnp.sum(jnp.take_along_axis(lg, targets[..., None], -1)) - 0.1 * jnp.sum(jnp.exp(lg) * lg)

    g1 = jax.grad(loss_chunked, argnums=(0, 1))(h, w)
    g2 = jax.grad(loss_full, argnums=(0, 1))(h, w)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_bf16_compute_close_to_fp32(untied):
    _, path, model = untied
    m16 = params.load_hf_checkpoint(path, dtype="bfloat16", param_dtype="float32")
    ids, mask, pos, items = _video_case(model.cfg)
    a = _ours(model, ids, mask, pos, items)
    b = _ours(m16, ids, mask, pos, items)
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()
    assert (np.argmax(a, -1) == np.argmax(b, -1)).mean() > 0.8


def test_bf16_matches_hf_bf16(untied):
    """All-bf16 weights and compute on both sides: the same casting order gives bf16-noise-level agreement."""
    import copy

    hm, path, model = untied
    hb = copy.deepcopy(hm).to(torch.bfloat16)
    mb = params.load_hf_checkpoint(path, dtype="bfloat16", param_dtype="bfloat16")
    ids, mask, pos, items = _video_case(model.cfg)
    ((pix, grid),) = items
    tt = np.where(ids == VIDEO_ID, 2, 0)
    with torch.no_grad():
        hb.model.rope_deltas = None
        ref = (
            hb(
                input_ids=torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(pos).long(),
                mm_token_type_ids=torch.tensor(tt),
                pixel_values_videos=torch.tensor(pix).to(torch.bfloat16),
                video_grid_thw=torch.tensor([grid]),
                second_per_grid_ts=torch.tensor([1.0]),
            )
            .logits.float()
            .numpy()
        )
    ours = _ours(mb, ids, mask, pos, items)
    fp32 = _ours(model, ids, mask, pos, items)
    noise = np.abs(ref - fp32).max()  # HF's own bf16 error
    assert np.abs(ours - ref).max() <= 3 * noise + 1e-2, (np.abs(ours - ref).max(), noise)


def test_tokenizer_chat_template_video_end_to_end(untied, tmp_path):
    """AutoTokenizer + chat template from the checkpoint dir, host preprocessing, rope index, model vs HF."""
    from qwen25vl_helpers import save_tiny_tokenizer
    from transformers import AutoTokenizer

    from data_pipeline.vision import preprocess_video

    hm, path, model = untied
    ckpt = tmp_path / "ckpt"
    shutil.copytree(path, ckpt)
    save_tiny_tokenizer(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "w5 w17 w3"}]}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|video_pad|><|vision_end|>" in text
    rng = np.random.default_rng(11)
    frames = rng.integers(0, 256, size=(4, 60, 90, 3), dtype=np.uint8)
    video = preprocess_video(frames, np.array([0.0, 0.5, 1.0, 1.5]))
    ids = rope.expand_vision_pads(
        model.cfg, tok(text, add_special_tokens=False)["input_ids"], [video.num_tokens]
    )
    assert ids.count(VIDEO_ID) == video.num_tokens
    ids = np.array([ids])
    mask = np.ones_like(ids)
    pos, _ = rope.get_rope_index(
        model.cfg, ids, mask, video_grid_thw=[video.grid_thw], second_per_grid_ts=[video.second_per_grid_ts]
    )
    item = (video.pixel_values, tuple(video.grid_thw))
    ref = _hf_logits(hm, ids, mask, pos, videos=[item], spg=[video.second_per_grid_ts])
    ours = _ours(model, ids, mask, pos, [video])
    _check(ours, ref, mask)
    assert isinstance(tok.decode(np.argmax(ours[0, -3:], -1)), str)
    out = params.export_hf_checkpoint(model, tmp_path / "export", copy_aux_from=ckpt)
    assert (
        AutoTokenizer.from_pretrained(out).apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        == text
    )


def test_readme_example_runs(untied, tmp_path):
    """docs/model.md's 'load a checkpoint and run the model' snippet, on the tiny checkpoint + tokenizer."""
    import re
    from pathlib import Path

    from qwen25vl_helpers import save_tiny_tokenizer

    _, path, _ = untied
    ckpt = tmp_path / "ckpt"
    shutil.copytree(path, ckpt)
    save_tiny_tokenizer(ckpt)
    page = (Path(__file__).resolve().parents[1] / "docs" / "model.md").read_text()
    section = page[page.index("## Load a checkpoint and run the model") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace('"/path/to/Qwen2.5-VL-7B-Instruct"', repr(str(ckpt)))
    code = code.replace("When does the person open the door?", "w1 w2")
    code = code.replace("print(", "result = (")
    rng = np.random.default_rng(12)
    scope = {"frames": rng.integers(0, 256, size=(6, 64, 96, 3), dtype=np.uint8), "times": np.arange(6) / 2.0}
    exec(compile(code, "docs/model.md", "exec"), scope)
    assert isinstance(scope["result"], str) and scope["result"]
