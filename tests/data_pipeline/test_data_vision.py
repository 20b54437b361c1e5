"""Qwen2.5-VL host preprocessing (data_pipeline.vision): resize rules, token budget, patch layout, import isolation."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_pipeline import vision as pp

REPO = Path(__file__).resolve().parents[2]
TEMPR1 = dict(
    min_pixels=pp.TEMPR1_MIN_PIXELS, max_pixels=pp.TEMPR1_MAX_PIXELS, total_pixels=pp.TEMPR1_TOTAL_PIXELS
)


def test_preprocess_imports_with_numpy_only():
    code = (
        "import sys; import data_pipeline.vision, tempr1_jax.models.qwen25vl.rope; "
        "heavy = ('jax', 'flax', 'tensorflow', 'torch', 'PIL', 'transformers'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_smart_resize_examples():
    # Notes section 3: 1280x720 at max 128*28*28 -> 420x224 (w x h).
    assert pp.smart_resize(720, 1280, min_pixels=4 * 784, max_pixels=128 * 28 * 28) == (224, 420)
    # Already valid sizes are kept.
    assert pp.smart_resize(224, 392, min_pixels=16 * 784, max_pixels=768 * 784) == (224, 392)
    # Up-scaling below min_pixels uses ceil.
    h, w = pp.smart_resize(30, 40, min_pixels=16 * 784, max_pixels=768 * 784)
    assert h % 28 == 0 and w % 28 == 0 and h * w >= 16 * 784
    with pytest.raises(ValueError, match="aspect ratio"):
        pp.smart_resize(10, 2500)
    with pytest.raises(ValueError, match="positive"):
        pp.smart_resize(0, 10)


def test_tempr1_budget_examples():
    kw = TEMPR1
    # 30 s of 640x360 at 2 fps -> 60 frames at 392x224 -> 30 * 8 * 14 = 3360 tokens.
    assert pp.video_resize_target(60, 360, 640, **kw) == (224, 392)
    # 448 frames -> 140x84, 15 tokens per frame pair -> 3360 tokens.
    assert pp.video_resize_target(448, 360, 640, **kw) == (84, 140)
    assert pp.video_max_pixels_per_frame(448, **kw) == int(16 * 784 * 1.05)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, pp.TEMPR1_MAX_FRAMES),
    short=st.integers(112, 1080),
    ratio=st.sampled_from([1.0, 4 / 3, 16 / 9, 2.0, 2.35]),
    portrait=st.booleans(),
)
def test_tempr1_token_budget_holds(n, short, ratio, portrait):
    """Frames at least min_pixels in area (every real dataset) stay within 3584 tokens."""
    long = int(round(short * ratio))
    h, w = (long, short) if portrait else (short, long)
    kw = TEMPR1
    th, tw = pp.video_resize_target(n, h, w, **kw)
    assert th % 28 == 0 and tw % 28 == 0
    tokens = pp.num_video_tokens(((n + 1) // 2, th // 14, tw // 14))
    assert tokens <= 3584
    assert th * tw >= 28 * 28


def test_tiny_sources_upscaled_like_upstream():
    """Below min_pixels qwen-vl-utils scales up with ceil, which can overshoot the budget slightly."""
    th, tw = pp.video_resize_target(359, 64, 85, **TEMPR1)
    assert (th, tw) == (112, 140)
    assert pp.num_video_tokens((180, th // 14, tw // 14)) == 3600


def _closed_form_patches(frames_norm):
    """Notes section 3: (t, 2, C, h/28, 2, 14, w/28, 2, 14) -> (t, h/28, w/28, 2, 2, C, 2, 14, 14)."""
    t2, h, w, c = frames_norm.shape
    rows = []
    for t in range(t2 // 2):
        for bh in range(h // 28):
            for bw in range(w // 28):
                for ih in range(2):
                    for iw in range(2):
                        r0, c0 = (2 * bh + ih) * 14, (2 * bw + iw) * 14
                        blk = frames_norm[2 * t : 2 * t + 2, r0 : r0 + 14, c0 : c0 + 14, :]  # (T, 14, 14, C)
                        rows.append(blk.transpose(3, 0, 1, 2).reshape(-1))
    return np.stack(rows)


def test_patch_layout_closed_form_and_odd_padding():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 56, 84, 3), dtype=np.uint8)
    times = np.arange(5) * 0.5
    out = pp.patchify_video(frames, times)
    assert out.grid_thw.tolist() == [3, 4, 6]
    assert out.pixel_values.shape == (3 * 4 * 6, 1176) and out.pixel_values.dtype == np.float32
    assert out.num_tokens == 3 * 2 * 3
    assert out.second_per_grid_ts == pytest.approx(1.0)
    padded = np.concatenate([frames, frames[-1:]], 0)
    np.testing.assert_array_equal(out.pixel_values, _closed_form_patches(pp.normalize(padded)))
    # The last temporal patch holds the last frame twice.
    last = out.pixel_values[-24:].reshape(24, 3, 2, 14, 14)
    np.testing.assert_array_equal(last[:, :, 0], last[:, :, 1])


def test_second_per_grid_ts_from_times_and_fps():
    frames = np.zeros((4, 28, 28, 3), np.uint8)
    assert pp.patchify_video(frames, [0.0, 0.75, 1.5, 2.25]).second_per_grid_ts == pytest.approx(1.5)
    assert pp.patchify_video(frames, [0, 1, 2, 3], fps=0.75).second_per_grid_ts == pytest.approx(2 / 0.75)
    with pytest.raises(ValueError, match="non-decreasing"):
        pp.patchify_video(frames, [0, 2, 1, 3])
    with pytest.raises(ValueError, match="frame_times"):
        pp.patchify_video(frames, [0, 1, 2])
    with pytest.raises(ValueError, match="multiples of 28"):
        pp.patchify_video(np.zeros((2, 30, 28, 3), np.uint8), [0, 1])
    with pytest.raises(ValueError, match="fps"):
        pp.patchify_video(frames[:1], [0.0])


def test_resize_matches_torch_antialiased_bicubic():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(3, 97, 131, 3), dtype=np.uint8)
    for th, tw in [(56, 84), (112, 168), (28, 56)]:
        ours = pp.resize_frames(frames, th, tw).astype(np.int32)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
        ref = torch.nn.functional.interpolate(x, size=(th, tw), mode="bicubic", antialias=True)
        ref = ref.permute(0, 2, 3, 1).numpy().astype(np.int32)
        diff = np.abs(ours - ref)
        assert diff.max() <= 1, (th, tw, diff.max())
        assert (diff > 0).mean() < 0.05


def test_resize_matches_pil_bicubic():
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(90, 150, 3), dtype=np.uint8)
    ours = pp.resize_frames(img[None], 56, 112)[0].astype(np.int32)
    ref = np.asarray(Image.fromarray(img).resize((112, 56), Image.Resampling.BICUBIC)).astype(np.int32)
    assert np.abs(ours - ref).max() <= 1


def test_image_matches_hf_pil_processor():
    pytest.importorskip("PIL")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(84, 140, 3), dtype=np.uint8)  # valid size: the resize is the identity
    proc = Qwen2VLImageProcessorPil(min_pixels=4 * 784, max_pixels=1280 * 784)
    ref = proc(images=[img], return_tensors="np")
    ours = pp.preprocess_image(img, min_pixels=4 * 784, max_pixels=1280 * 784)
    assert ours.grid_thw.tolist() == ref["image_grid_thw"][0].tolist()
    np.testing.assert_allclose(ours.pixel_values, ref["pixel_values"], atol=2e-6)


def test_preprocess_video_end_to_end():
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, size=(6, 90, 160, 3), dtype=np.uint8)
    out = pp.preprocess_video(frames, np.arange(6) / 2.0)
    th, tw = pp.video_resize_target(
        6,
        90,
        160,
        min_pixels=pp.TEMPR1_MIN_PIXELS,
        max_pixels=pp.TEMPR1_MAX_PIXELS,
        total_pixels=pp.TEMPR1_TOTAL_PIXELS,
    )
    assert out.grid_thw.tolist() == [3, th // 14, tw // 14]
    assert out.pixel_values.shape == (3 * (th // 14) * (tw // 14), 1176)
    assert out.second_per_grid_ts == pytest.approx(1.0)
    with pytest.raises(ValueError, match="uint8"):
        pp.preprocess_video(frames.astype(np.float32), np.arange(6) / 2.0)
