"""M-RoPE index (original Qwen/vLLM rule) and the ViT window / frame layout tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qwen25vl_helpers import IMAGE_ID, PAD_ID, VEND_ID, VIDEO_ID, VSTART_ID, video_prompt

from tempr1_jax.models.qwen25vl import config as qconfig
from tempr1_jax.models.qwen25vl import rope

CFG = qconfig.preset("tiny").replace(
    image_token_id=IMAGE_ID,
    video_token_id=VIDEO_ID,
    vision_start_token_id=VSTART_ID,
    vision_end_token_id=VEND_ID,
)


def test_notes_example_text_after_video_restarts_at_max_plus_one():
    """16 frames at 2 fps (8 temporal patches, spg 1.0), 4x6 patch grid: trailing text at 18, 19, 20."""
    grid = (8, 4, 6)
    ids = np.array([[1, 2, VSTART_ID] + [VIDEO_ID] * 48 + [VEND_ID, 3, 4]])
    pos, deltas = rope.get_rope_index(CFG, ids, video_grid_thw=[grid], second_per_grid_ts=[1.0])
    assert pos[:, 0, :3].tolist() == [[0, 1, 2]] * 3
    vid = pos[:, 0, 3:51].reshape(3, 8, 2, 3)
    assert vid[0, :, 0, 0].tolist() == [3 + 2 * k for k in range(8)]  # 0.5 s per temporal id
    assert vid[1, 0, :, 0].tolist() == [3, 4] and vid[2, 0, 0, :].tolist() == [3, 4, 5]
    assert pos[:, 0, 51:].tolist() == [[18, 19, 20]] * 3
    assert deltas.tolist() == [21 - ids.shape[1]]


def _reference_4x_rule(input_ids, attention_mask, image_grids, video_grids, spg, tps=2, merge=2):
    """An independent re-statement of the HF 4.x / vLLM algorithm (vision_start scanning, max + 1), with the
    temporal index computed from a float second_per_grid_ts and floored after multiplying."""
    images, videos, spgs = list(image_grids), list(video_grids), list(spg)
    out = np.zeros((3, *input_ids.shape), np.int64)
    deltas = []
    for b in range(input_ids.shape[0]):
        toks = list(input_ids[b][attention_mask[b] == 1])
        chunks, st = [], 0
        starts = [i for i, t in enumerate(toks) if t == VSTART_ID and i + 1 < len(toks)]
        for s_idx in starts:
            kind = toks[s_idx + 1]
            if kind not in (IMAGE_ID, VIDEO_ID):
                continue
            if kind == IMAGE_ID:
                (t, h, w), sec = images.pop(0), 0.0
            else:
                (t, h, w), sec = videos.pop(0), spgs.pop(0)
            ed = s_idx + 1
            text_len = ed - st
            base = chunks[-1].max() + 1 if chunks else 0
            chunks.append(np.tile(np.arange(text_len), (3, 1)) + base)
            lh, lw = h // merge, w // merge
            tt = [math.floor(k * sec * tps) for k in range(t)]
            grid = np.array([[a, i, j] for a in tt for i in range(lh) for j in range(lw)]).T
            chunks.append(grid + text_len + base)
            st = ed + t * lh * lw
        if st < len(toks):
            base = chunks[-1].max() + 1 if chunks else 0
            chunks.append(np.tile(np.arange(len(toks) - st), (3, 1)) + base)
        allpos = np.concatenate(chunks, axis=1)
        out[:, b, attention_mask[b] == 1] = allpos
        deltas.append(allpos.max() + 1 - len(toks))
    return out, np.array(deltas)


def test_matches_4x_rule_with_fractional_spg_and_padding():
    rng = np.random.default_rng(0)
    g1, g2, g3 = (5, 4, 6), (3, 6, 4), (1, 4, 4)
    s1 = video_prompt(g1, before=3, after=4, rng=rng) + video_prompt(g2, before=1, after=2, rng=rng)
    s2 = [7, VSTART_ID] + [IMAGE_ID] * 4 + [VEND_ID, 8, 9]
    length = len(s1) + 3
    ids = np.full((2, length), PAD_ID)
    mask = np.zeros_like(ids)
    ids[0, -len(s1) :], mask[0, -len(s1) :] = s1, 1
    ids[1, : len(s2)], mask[1, : len(s2)] = s2, 1
    spg = [2 / 0.75, 0.5]  # qwen-vl-utils' effective fps 0.75 (448-frame cap) and fps 4
    pos, deltas = rope.get_rope_index(
        CFG, ids, mask, image_grid_thw=[g3], video_grid_thw=[g1, g2], second_per_grid_ts=spg
    )
    ref, ref_d = _reference_4x_rule(ids, mask, [g3], [g1, g2], spg)
    np.testing.assert_array_equal(pos, ref)
    np.testing.assert_array_equal(deltas, ref_d)
    assert np.all(pos[:, mask == 0] == 0)


def test_matches_hf_524_where_the_rules_agree():
    """HF 5.24 agrees with the original rule for images and for videos not followed by longer time spans."""
    torch = pytest.importorskip("torch")
    from qwen25vl_helpers import hf_config
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    rng = np.random.default_rng(1)
    gv, gi = (3, 8, 12), (1, 6, 4)
    seq = [5, VSTART_ID] + [IMAGE_ID] * 6 + [VEND_ID, 6, 7] + video_prompt(gv, before=2, after=0, rng=rng)
    ids = np.array([seq])
    mask = np.ones_like(ids)
    spg = [1.3]  # fractional: floor(k * 2.6) = 0, 2, 5
    pos, deltas = rope.get_rope_index(
        CFG, ids, mask, image_grid_thw=[gi], video_grid_thw=[gv], second_per_grid_ts=spg
    )
    hcfg = hf_config()
    fake = type(
        "M", (), {"config": hcfg, "get_vision_position_ids": Qwen2_5_VLModel.get_vision_position_ids}
    )()
    tt = torch.tensor(np.where(ids == VIDEO_ID, 2, np.where(ids == IMAGE_ID, 1, 0)))
    ref, ref_d = Qwen2_5_VLModel.get_rope_index(
        fake,
        torch.tensor(ids),
        tt,
        image_grid_thw=torch.tensor([gi]),
        video_grid_thw=torch.tensor([gv]),
        second_per_grid_ts=torch.tensor(spg),
        attention_mask=torch.tensor(mask),
    )
    np.testing.assert_array_equal(pos, ref.numpy())
    np.testing.assert_array_equal(deltas, ref_d.numpy()[:, 0])
    t_ids = pos[0, 0, -73:-1]  # the 72 video tokens before <|vision_end|>
    assert sorted(set(t_ids.tolist())) == [int(t_ids[0]) + k for k in (0, 2, 5)]


def test_text_positions_and_errors():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    p = rope.text_positions(mask)
    assert p.shape == (3, 2, 5)
    assert p[0].tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 0]]
    ids = np.array([[1, VSTART_ID] + [VIDEO_ID] * 5 + [VEND_ID]])
    with pytest.raises(ValueError, match="expected 6 consecutive video pad"):
        rope.get_rope_index(CFG, ids, video_grid_thw=[(1, 4, 6)], second_per_grid_ts=[1.0])
    with pytest.raises(ValueError, match="more video blocks"):
        rope.get_rope_index(CFG, ids)
    with pytest.raises(ValueError, match="not used"):
        rope.get_rope_index(CFG, np.array([[1, 2]]), video_grid_thw=[(1, 2, 2)], second_per_grid_ts=[1.0])
    with pytest.raises(ValueError, match="second_per_grid_ts"):
        rope.get_rope_index(CFG, ids, video_grid_thw=[(1, 4, 6)])
    with pytest.raises(ValueError, match="features"):
        rope.check_vision_tokens(CFG, ids, [(1, 4, 6)])


def _groups_from_tables(index, lengths):
    return {frozenset(index[b, : lengths[b]].tolist()) for b in range(index.shape[0]) if lengths[b] > 0}


@pytest.mark.parametrize("grids", [[(4, 8, 12)], [(2, 10, 14), (1, 18, 8), (3, 4, 4)], [(1, 16, 16)]])
def test_layout_matches_hf_windows_frames_and_positions(grids):
    torch = pytest.importorskip("torch")
    from transformers.vision_utils import (
        get_vision_cu_seqlens,
        get_vision_position_ids,
        get_vision_window_index,
    )

    g = torch.tensor(grids)
    win_idx, cu_win = get_vision_window_index(g, spatial_merge_size=2, window_size=112, patch_size=14)
    win_idx, cu_win = win_idx.numpy(), cu_win.numpy()
    hf_windows = set()
    for a, b in zip(cu_win[:-1], cu_win[1:], strict=True):
        units = win_idx[a // 4 : b // 4]
        hf_windows.add(frozenset(int(4 * u + j) for u in units for j in range(4)))
    cu = get_vision_cu_seqlens(g).numpy()
    hf_frames = {frozenset(range(int(a), int(b))) for a, b in zip(cu[:-1], cu[1:], strict=True)}
    hf_pos = get_vision_position_ids(g, 2).numpy()

    req = rope.required_vision_sizes(CFG.vision, grids)
    sizes = rope.bucket_vision_sizes(req)
    lay = rope.vision_layout(CFG.vision, grids, sizes)
    n = sum(t * h * w for t, h, w in grids)
    assert _groups_from_tables(lay["win_index"], lay["win_len"]) - {frozenset([0])} == hf_windows
    assert _groups_from_tables(lay["frame_index"], lay["frame_len"]) - {frozenset([0])} == hf_frames
    np.testing.assert_array_equal(lay["pos"][:n], hf_pos)
    # The inverse tables point every patch back at its own slot.
    for idx, inv in (("win_index", "win_inverse"), ("frame_index", "frame_inverse")):
        flat = lay[idx].reshape(-1)
        np.testing.assert_array_equal(flat[lay[inv][:n]], np.arange(n))
    assert req.num_windows == len(hf_windows) and req.num_frames == len(hf_frames)


def test_layout_rejects_too_small_bucket():
    with pytest.raises(ValueError, match="larger than the bucket"):
        rope.vision_layout(CFG.vision, [(2, 8, 8)], rope.VisionSizes(64, 2, 2, 64))
    with pytest.raises(ValueError, match="multiples of the merge size"):
        rope.required_vision_sizes(CFG.vision, [(1, 4, 5)])
    empty = rope.pack_vision(CFG, [], rope.VisionSizes(64, 2, 2, 64))  # text-only batch, same bucket
    assert empty["pixel_values"].shape == (64, 1176) and not empty["pixel_values"].any()
    with pytest.raises(ValueError, match="patch rows"):
        rope.pack_vision(CFG, [(np.zeros((10, 1176), np.float32), (1, 4, 4))])


def test_pack_padded_vision_matches_pack_vision():
    rng = np.random.default_rng(5)
    grids = np.array([[2, 4, 6], [0, 0, 0], [1, 6, 4]])
    pv = rng.standard_normal((3, 64, 1176)).astype(np.float32)
    sizes = rope.VisionSizes(128, 8, 8, 64)
    out = rope.pack_padded_vision(CFG, pv, grids, sizes)
    ref = rope.pack_vision(CFG, [(pv[0, :48], (2, 4, 6)), (pv[2, :24], (1, 6, 4))], sizes)
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])
    ids = np.zeros((3, 20), np.int64)
    ids[0, :12] = VIDEO_ID
    ids[2, :5] = VIDEO_ID
    with pytest.raises(ValueError, match="row 2 has 5 visual pad tokens"):
        rope.pack_padded_vision(CFG, pv, grids, sizes, input_ids=ids)
