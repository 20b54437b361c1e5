"""The tempr1_temporal TFDS builder: tfds.load works; the stream reads TFDS exactly like the raw shards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipeline import schema, stream, synthetic


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from data_pipeline import tfds_builder

    root = tmp_path_factory.mktemp("tfds")
    d = synthetic.make_dataset(str(root / "raw"), num_videos=2, tokenizer=False)
    samples = schema.read_samples(d["samples"])
    val = root / "val.jsonl"
    schema.write_jsonl(str(val), samples[:3])
    rc = tfds_builder.main(
        [
            "--samples",
            d["samples"],
            f"val={val}",
            "--frames",
            d["frames"],
            "--data-dir",
            str(root / "tfds"),
        ]
    )
    assert rc == 0
    return d, str(root / "tfds"), samples


def test_tfds_load(built):
    import tensorflow_datasets as tfds

    d, data_dir, samples = built
    ds = tfds.load("tempr1_temporal", split="samples", data_dir=data_dir)
    got = list(ds.as_numpy_iterator())
    assert [g["id"].decode() for g in got] == [s["id"] for s in samples]  # file order kept
    for g, s in zip(got, samples, strict=True):
        assert json.loads(g["sample"]) == s and g["task"].decode() == s["task"]
        np.testing.assert_allclose(g["segments"], np.asarray(s["segments"], np.float32).reshape(-1, 2))
        assert g["frames"].dtype == np.uint8 and g["frames"].shape[1:] == (48, 64, 3)
        assert len(g["frames"]) == len(g["frame_times"]) and g["fps"] == 2.0
        assert synthetic.frame_index(g["frames"][1]) == 5  # 10 fps source, 2 fps sampling
    val = tfds.load("tempr1_temporal", split="val", data_dir=data_dir)
    assert len(list(val)) == 3


def test_stream_from_tfds_equals_stream_from_shards(built, tiny_tokenizer_dir):
    d, data_dir, samples = built
    cfgs = []
    for use_tfds in (False, True):
        c = stream.default_config()
        c.tokenizer = tiny_tokenizer_dir
        c.batch_size = 2
        c.vision_buckets = (1024, 4096)
        c.prompt_buckets = (1024, 2048)
        c.max_segments = 4
        if use_tfds:
            c.tfds_name, c.tfds_data_dir, c.tfds_split = "tempr1_temporal", data_dir, "samples"
        else:
            c.samples, c.frames = [d["samples"]], d["frames"]
        cfgs.append(c)
    a, b = stream.make_stream(cfgs[0]), stream.make_stream(cfgs[1])
    assert a.fingerprint == b.fingerprint
    for _ in range(3):
        x, y = next(a), next(b)
        assert x.id.tolist() == y.id.tolist()
        for k in ("pixel_values", "input_ids", "grid_thw", "segments", "second_per_grid_ts"):
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k))
    cfgs[1].tfds_split = "nope"
    with pytest.raises(ValueError, match="no split 'nope'"):
        stream.make_stream(cfgs[1])
