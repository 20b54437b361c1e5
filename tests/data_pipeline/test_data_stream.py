"""The tf.data stream: end to end on tiny generated videos, buckets and masks, determinism, resume, host
shards, task mixing, missing / corrupt videos."""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import pytest

from data_pipeline import extract_frames, schema, stream, synthetic
from data_pipeline import vision as qpre

VIDEO_PAD = 781  # the tiny tokenizer's <|video_pad|>


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_data")
    return synthetic.make_dataset(str(root), num_videos=5, min_seconds=3.0, max_seconds=12.0, tokenizer=False)


@pytest.fixture
def config(data, tiny_tokenizer_dir):
    c = stream.default_config()
    c.samples = [data["samples"]]
    c.frames = data["frames"]
    c.tokenizer = tiny_tokenizer_dir
    c.batch_size = 2
    c.vision_buckets = (512, 1024, 2048, 4096)
    c.prompt_buckets = (512, 1024, 2048)
    c.max_segments = 8
    return c


def _take(s, n):
    out = []
    for _ in range(n):
        out.append(next(s))
    return out


def _reference(s: stream.Stream, index: int, *, dct: bool):
    """Pixel values of one sample computed outside tf.data: read record, decode, model preprocessing."""
    import tensorflow as tf

    sample = s.samples[index]
    v = s.source.videos[sample["video"]]
    jpegs, times = s.source.load(v)
    sel = np.arange(len(times))
    ratio = int(s.ratio[index]) if dct else 1
    imgs = np.stack([tf.io.decode_jpeg(jpegs[i], channels=3, ratio=ratio).numpy() for i in sel])
    h, w = s.target_hw[index]
    return qpre.patchify_video(qpre.resize_frames(imgs, int(h), int(w)), np.asarray(times, np.float64)[sel])


def test_end_to_end_batch(config, data):
    config.resize = "numpy"  # the model room's resize: exact reference below
    config.jpeg_dct_scaling = False
    config.repeat = False
    config.shuffle = False
    with stream.make_stream(config) as s:
        assert s.num_samples == 25
        assert s.samples_per_task == {t: 5 if t in schema.TRAIN_TASKS else 0 for t in schema.TASKS}
        batches = list(s)
        assert len(batches) == math.ceil(25 / 2) == s.batches_per_pass()
        ids = [i.decode() for b in batches for i, m in zip(b.id, b.sample_mask, strict=True) if m]
        assert ids == [x["id"] for x in schema.read_samples(data["samples"])]
        assert not batches[-1].sample_mask[1]  # the 25th sample's batch is padded with a masked copy
        for b in batches:
            B, L = b.input_ids.shape
            N = b.pixel_values.shape[1]
            assert B == 2 and L in config.prompt_buckets and N in config.vision_buckets
            assert b.pixel_values.shape == (2, N, 1176) and b.pixel_values.dtype == np.float32
            for j in range(B):
                k = int(b.index[j])
                sample = s.samples[k]
                grid = b.grid_thw[j]
                n_patch = int(np.prod(grid))
                assert b.pixel_mask[j].sum() == n_patch and b.pixel_mask[j][:n_patch].all()
                assert not b.pixel_values[j, n_patch:].any()
                n_tok = qpre.num_video_tokens(grid)
                assert b.num_video_tokens[j] == n_tok == n_patch // 4
                assert np.count_nonzero(b.input_ids[j] == VIDEO_PAD) == n_tok
                # Left padding: the mask is a suffix of ones; the pad id fills the rest.
                n_valid = int(b.attention_mask[j].sum())
                assert (
                    b.attention_mask[j][L - n_valid :].all()
                    and (b.input_ids[j][: L - n_valid] == 768).all()
                )
                assert n_valid == s.prompt_len[k] and L == min(
                    x for x in config.prompt_buckets if x >= max(s.prompt_len[int(i)] for i in b.index)
                )
                assert s.tokenizer.decode(b.input_ids[j][L - n_valid :]).endswith(
                    "<|im_end|>\n<|im_start|>assistant\n"
                )
                if int(b.position[j]) < 4:  # exact against the reference (costly, so a few samples)
                    ref = _reference(s, k, dct=False)
                    np.testing.assert_array_equal(b.pixel_values[j, :n_patch], ref.pixel_values)
                    assert b.second_per_grid_ts[j] == pytest.approx(ref.second_per_grid_ts, rel=1e-6)
                # Ground truth travels with the batch.
                assert json.loads(b.sample_json[j]) == sample
                assert b.task[j].decode() == sample["task"] and b.video[j].decode() == sample["video"]
                assert b.task_id[j] == schema.TASKS.index(sample["task"])
                assert b.duration[j] == pytest.approx(sample["duration"])
                nseg = len(sample["segments"])
                assert b.segments_mask[j].sum() == nseg
                np.testing.assert_allclose(
                    b.segments[j, :nseg], np.asarray(sample["segments"]).reshape(-1, 2)
                )
                assert b.answer[j] == ("ABC".index(sample["answer"]) if sample["task"] == "gvqa" else -1)
        assert [x["id"] for x in stream.batch_samples(batches[-1])] == [ids[-1]]


def test_frames_and_tokens_follow_the_budget(config):
    config.fps = 1.0
    config.max_frames = 6
    s = stream.make_stream(config)
    for k, sample in enumerate(s.samples):
        v = s.source.videos[sample["video"]]
        assert s.n_frames[k] == min(math.ceil(v.duration * 1.0 - 1e-6), 6)
        h, w = s.target_hw[k]
        assert h % 28 == 0 and w % 28 == 0
        assert s.n_tokens[k] == math.ceil(s.n_frames[k] / 2) * (h // 28) * (w // 28)
        assert s.n_tokens[k] <= config.total_pixels // (28 * 28)
    b = next(s)
    assert (b.grid_thw[:, 0] <= 3).all()
    for j in range(2):  # 2 frames per temporal patch, 1 s apart, or duration / 6 apart past the cap
        d = float(b.duration[j])
        assert b.second_per_grid_ts[j] == pytest.approx(2 * max(1.0, d / 6), abs=0.25)
    config.total_pixels = (
        2 * 16 * 28 * 28
    )  # tiny budget: the min_pixels floor (16 tokens per frame pair) wins
    s2 = stream.make_stream(config)
    assert (s2.n_tokens == np.ceil(s2.n_frames / 2) * 16).all() or (s2.n_tokens <= 3 * 20).all()
    s.close()
    s2.close()


def test_default_path_matches_reference(config, tmp_path):
    """tf.image bicubic resize + JPEG DCT down-scaling against the model room's numpy resize."""
    big = synthetic.make_dataset(
        str(tmp_path), num_videos=1, width=320, height=240, min_seconds=2.0, max_seconds=3.0, tokenizer=False
    )
    config.samples = [big["samples"]]
    config.frames = big["frames"]
    config.shuffle = False
    config.repeat = False
    config.max_pixels = 28 * 28 * 6  # targets 84 x 56 from 320 x 240 frames: decoded at 1/2 scale
    s = stream.make_stream(config)
    assert (s.ratio == 2).all()
    b = next(s)
    for j in range(2):
        k = int(b.index[j])
        ref = _reference(s, k, dct=False)
        n = ref.pixel_values.shape[0]
        diff = np.abs(b.pixel_values[j, :n] - ref.pixel_values)
        assert diff.mean() < 0.05  # normalized units (1 gray level is about 0.015)
    s.close()


def test_deterministic_and_seeded(config):
    a = [b.id.tolist() for b in _take(stream.make_stream(config), 6)]
    b = [b.id.tolist() for b in _take(stream.make_stream(config), 6)]
    assert a == b
    config.seed = 1
    c = [b.id.tolist() for b in _take(stream.make_stream(config), 6)]
    assert c != a
    flat = [i for x in a for i in x]
    assert len(set(flat[:12])) == 12  # an epoch is a permutation: no repeats within the first 25


def test_resume_continues_exactly(config):
    config.task_weights = {"tg": 2.0, "tal": 1.0, "gvqa": 1.0}
    s = stream.make_stream(config)
    first = _take(s, 2)
    saved = s.state()
    assert saved["position"] == 4
    rest = _take(s, 3)
    s.close()
    r = stream.make_stream(config, state=saved)
    again = _take(r, 3)
    for x, y in zip(rest, again, strict=True):
        assert x.id.tolist() == y.id.tolist() and x.position.tolist() == y.position.tolist()
        np.testing.assert_array_equal(x.pixel_values, y.pixel_values)
        np.testing.assert_array_equal(x.input_ids, y.input_ids)
    assert r.state()["position"] == 10 and first[0].position.tolist() == [0, 1]
    # A state of another mixing is refused.
    config.task_weights = {"tg": 1.0}
    with pytest.raises(ValueError, match="fingerprint"):
        stream.make_stream(config, state=saved)


def test_host_shards_are_disjoint_and_cover_the_data(config):
    config.repeat = False
    config.batch_size = 3
    seen = []
    counts = []
    for h in range(3):
        s = stream.make_stream(config, process_index=h, process_count=3)
        n_batches = 0
        for b in s:
            n_batches += 1
            assert (b.position % 3 == h).all()
            seen += [i for i, m in zip(b.id.tolist(), b.sample_mask, strict=True) if m]
        counts.append(n_batches)
    assert len(set(counts)) == 1 and counts[0] == math.ceil(math.ceil(25 / 3) / 3)
    assert len(seen) == len(set(seen)) == 25
    with pytest.raises(ValueError, match="process_index"):
        stream.make_stream(config, process_index=3, process_count=3)


def test_state_is_valid_across_host_counts(config):
    """8 samples on 1 host, then the rest on 2 hosts: nothing skipped, nothing repeated."""
    one = stream.make_stream(config)
    head = [i for b in _take(one, 4) for i in b.index.tolist()]
    state = one.state()
    full = [one.sample_at(g) for g in range(16)]
    tail = []
    for h in range(2):
        s = stream.make_stream(config, process_index=h, process_count=2, state=state)
        tail += [
            (int(g), int(i)) for b in _take(s, 2) for g, i in zip(b.position, b.index, strict=True)
        ]
    assert head == full[:8]
    assert sorted(tail) == [(g, full[g]) for g in range(8, 16)]


def test_task_mixing_proportions(config):
    config.task_weights = {"tg": 0.5, "dtg": 0.25, "tal": 0.25}
    s = stream.make_stream(config)
    n = 40000
    tasks = collections.Counter(s.samples[s.sample_at(g)]["task"] for g in range(n))
    assert set(tasks) == {"tg", "dtg", "tal"}
    for t, w in (("tg", 0.5), ("dtg", 0.25), ("tal", 0.25)):
        assert abs(tasks[t] / n - w) < 0.01
    # Within a task, each block of 5 draws (one epoch of its 5 samples) is a permutation.
    tg = [s.sample_at(g) for g in range(400) if s.samples[s.sample_at(g)]["task"] == "tg"]
    for e in range(len(tg) // 5):
        assert sorted(tg[5 * e : 5 * e + 5]) == sorted(s.by_task[0].tolist())
    # Far positions (a later RNG chunk) are computed without the earlier ones being cached.
    fresh = stream.make_stream(config)
    assert [fresh.sample_at(g) for g in range(70000, 70010)] == [s.sample_at(g) for g in range(70000, 70010)]


def test_bad_configs(config):
    config.task_weights = {"tg": 1.0, "bogus": 1.0}
    with pytest.raises(ValueError, match="unknown task"):
        stream.make_stream(config)
    config.task_weights = {}
    config.prompt_buckets = (64,)
    with pytest.raises(ValueError, match="exceed the largest prompt bucket 64"):
        stream.make_stream(config)
    config.prompt_buckets = (4096,)
    config.vision_buckets = (8,)
    with pytest.raises(ValueError, match="exceed the largest vision bucket 8"):
        stream.make_stream(config)
    config.vision_buckets = (4096,)
    config.max_segments = 1
    with pytest.raises(ValueError, match="segments > config.max_segments 1"):
        stream.make_stream(config)
    config.max_segments = 8
    config.prompt_buckets = (64,)  # a trainer names the block: its messages say config.data.prompt_buckets
    with pytest.raises(ValueError, match="raise config.data.prompt_buckets or lower"):
        stream.make_stream(config, name="config.data")
    config.prompt_buckets = (4096,)
    config.samples = [config.samples[0], "/other.jsonl", config.samples[0]]
    with pytest.raises(ValueError, match=r"^config.data.samples: .*s.jsonl: listed twice in the samples files "
                                         r"\(positions 0 and 2\)$"):
        stream.make_stream(config, name="config.data")


def _rewrite(samples, tmp_path, name="s.jsonl", **changes):
    """The samples with some fields changed (``changes[id] = {field: value}``), written to a new file."""
    path = tmp_path / name
    schema.write_jsonl(str(path), [dict(x, **changes.get(x["id"], {})) for x in samples])
    return str(path)


def test_mixture_per_task_and_per_source(config, data, tmp_path, tiny_tokenizer_dir):
    """What the trainer logs at start: samples per task and per file, and their expected share of a step."""
    samples = schema.read_samples(data["samples"])
    tg = [x for x in samples if x["task"] == "tg"]
    others = [x for x in samples if x["task"] != "tg"]
    absent = [dict(x, id=x["id"] + "_x", video="nowhere") for x in tg[:2]]
    config.samples = [_rewrite(tg, tmp_path, "tg.jsonl"), _rewrite(others, tmp_path, "o.jsonl"),
                      _rewrite(absent, tmp_path, "absent.jsonl")]
    m = stream.make_stream(config).mixture()
    assert m["tasks"]["tg"] == {"samples": 5, "share": 0.2} and m["tasks"]["tal"]["share"] == 0.2
    assert [(x["read"], x["samples"], x["tasks"]) for x in m["sources"]] == [
        (5, 5, ["tg"]), (20, 20, ["dtg", "gvqa", "tal", "vhd"]), (2, 0, [])]
    assert [x["share"] for x in m["sources"]] == pytest.approx([0.2, 0.8, 0.0])
    config.task_weights = {"tg": 3.0, "tal": 1.0}
    m = stream.make_stream(config).mixture()
    assert m["tasks"]["tg"]["share"] == 0.75 and m["tasks"]["dtg"] == {"samples": 5, "share": 0.0}
    assert [x["share"] for x in m["sources"]] == pytest.approx([0.75, 0.25, 0.0])


def test_samples_annotated_longer_than_their_video_are_reported_kept_or_skipped(config, data, tmp_path, caplog):
    samples = schema.read_samples(data["samples"])
    config.samples = [_rewrite(samples, tmp_path, **{"syn0#0": {"duration": 17.9},
                                                              "syn1": {"duration": 10.3 + 0.9}})]
    with caplog.at_level("WARNING", logger="data_pipeline.stream"):
        s = stream.make_stream(config, name="config.data")
    assert s.num_samples == 25 and s.short_videos == ["syn0"]
    (msg,) = [r.getMessage() for r in caplog.records if "annotated longer" in r.getMessage()]
    assert msg.startswith("1 of 25 samples (1 videos) are annotated longer than their extracted video by more than "
                          "1 s, so part of their ground truth may lie past the last frame (e.g. 'syn0#0': 17.9 s "
                          "annotated, video 'syn0' 8.7 s)")
    assert msg.endswith("kept (config.data.short_videos='skip' drops them)")
    config.short_videos = "skip"
    assert "syn0#0" not in {x["id"] for x in stream.make_stream(config).samples}
    config.short_videos = "error"
    with pytest.raises(ValueError, match="annotated longer.*config.short_videos='error'"):
        stream.make_stream(config)


def test_max_samples_is_a_seeded_slice_with_the_same_number_per_task(config, data):
    config.max_samples = 7
    s = stream.make_stream(config)
    assert s.num_samples == 7 and sorted(s.samples_per_task.values()) == [1, 1, 1, 2, 2]
    assert [x["id"] for x in stream.make_stream(config).samples] == [x["id"] for x in s.samples]
    config.seed = 1
    assert [x["id"] for x in stream.make_stream(config).samples] != [x["id"] for x in s.samples]
    # A task with fewer rows gives all of them; the others share the rest.
    picked = stream.stratified_subset(["tg"] * 10 + ["tal"] * 2 + ["vhd"] * 10, 12, seed=0)
    assert len(picked) == 12 and picked == sorted(picked)
    assert [sum(10 <= i < 12 for i in picked), sum(i < 10 for i in picked)] == [2, 5]
    assert stream.stratified_subset(["tg"] * 3, 5, seed=0) == [0, 1, 2]


def test_missing_and_corrupt_videos(config, data, tmp_path):
    """A truncated video is skipped by extract_frames; its samples are then skipped (reported) or refused."""
    synthetic.truncate_file(f"{data['videos']}/syn0.mp4", str(tmp_path / "broken.mp4"), 0.4)
    frames_dir = tmp_path / "frames"
    summary = extract_frames.run(
        [str(tmp_path / "broken.mp4"), f"{data['videos']}/syn1.mp4"],
        str(frames_dir),
        extract_frames.Settings(),
        progress=False,
    )
    assert summary["failed"] == 1 and summary["failures"][0]["video"] == "broken"
    samples = schema.read_samples(data["samples"])
    keep = [
        dict(x, video="broken") if x["video"] == "syn0" else x
        for x in samples
        if x["video"] in ("syn0", "syn1")
    ]
    path = tmp_path / "s.jsonl"
    schema.write_jsonl(str(path), keep)
    config.samples = [str(path)]
    config.frames = str(frames_dir)
    s = stream.make_stream(config)
    assert s.missing_videos == ["broken"] and s.num_samples == 5
    assert {x["video"] for x in stream.batch_samples(next(s))} == {"syn1"}
    config.missing_videos = "error"
    with pytest.raises(ValueError, match="5 of 10 samples refer to 1 videos missing"):
        stream.make_stream(config)


def test_remote_paths_through_tf_gfile(data, tiny_tokenizer_dir):
    """Frames and samples on a URL filesystem (TF's ram://: the gs:// code path): extract, resume, stream."""
    out = "ram://bucket/frames"
    summary = extract_frames.run(
        extract_frames.list_videos(data["videos"])[:2],
        out,
        extract_frames.Settings(),
        progress=False,
        videos_per_shard=1,
    )
    assert summary["extracted"] == 2 and summary["shards_written"] == 2
    again = extract_frames.run(
        extract_frames.list_videos(data["videos"])[:2], out, extract_frames.Settings(), progress=False
    )
    assert again["already_done"] == 2 and again["extracted"] == 0
    keep = [x for x in schema.read_samples(data["samples"]) if x["video"] in ("syn0", "syn1")]
    schema.write_jsonl("ram://bucket/samples.jsonl", keep)
    c = stream.default_config()
    c.samples, c.frames, c.tokenizer = ["ram://bucket/samples.jsonl"], out, tiny_tokenizer_dir
    c.vision_buckets, c.prompt_buckets, c.max_segments, c.batch_size = (4096,), (2048,), 8, 2
    c.repeat = False
    with stream.make_stream(c) as s:
        got = sorted(x["id"] for b in s for x in stream.batch_samples(b))
    assert got == sorted(x["id"] for x in keep)
