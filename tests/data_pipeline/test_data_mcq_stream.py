"""mcq samples through the stream: no duration in the sample (the frames index gives it), no segments, the answer
letter's index; and adding mcq after the five training tasks leaves every seeded task draw as it was."""

from __future__ import annotations

import json

import numpy as np

from data_pipeline import schema, stream, synthetic


def test_choice_with_a_trailing_zero_weight_task_draws_the_same():
    """The stream draws tasks with ``rng.choice(len(TASKS), p=weights)``: a sixth task of weight 0 (mcq) appended
    to the five must not move any draw of a seeded training run."""
    w = np.array([0.4, 0.1, 0.2, 0.2, 0.1])
    five = np.random.default_rng([3, 7]).choice(5, size=20000, p=w)
    six = np.random.default_rng([3, 7]).choice(6, size=20000, p=np.append(w, 0.0))
    assert np.array_equal(five, six) and schema.TASKS[:5] == schema.TRAIN_TASKS


def test_mcq_sample_takes_its_videos_duration(tmp_path, tiny_tokenizer_dir):
    data = synthetic.make_dataset(str(tmp_path / "d"), num_videos=2, min_seconds=3.0, max_seconds=5.0, tokenizer=False)
    videos = sorted({json.loads(x)["video"] for x in open(data["samples"]) if x.strip()})
    mcq = [
        {
            "id": f"{v}#q",
            "task": "mcq",
            "video": v,
            "segments": [],
            "question": "What moves?",
            "options": ["a bar", "nothing", "a dot"],
            "answer": "C",
            "category": "motion",
            "source": "test",
        }
        for v in videos
    ]
    path = tmp_path / "mcq.jsonl"
    schema.write_jsonl(str(path), mcq)
    c = stream.default_config()
    c.samples, c.frames, c.tokenizer = [str(path)], data["frames"], tiny_tokenizer_dir
    c.batch_size, c.repeat, c.shuffle = 2, False, False
    c.vision_buckets, c.prompt_buckets, c.max_segments = (512, 1024, 2048, 4096), (512, 1024, 2048), 8
    s = stream.make_stream(c)
    try:
        assert s.samples_per_task["mcq"] == 2
        batch = next(s)
    finally:
        s.close()
    want = [s.source.videos[v].duration for v in videos]
    np.testing.assert_allclose(batch.duration, want, rtol=1e-6)
    assert (batch.task_id == schema.TASKS.index("mcq")).all() and (batch.answer == 2).all()
    assert not batch.segments_mask.any()
    rows = stream.batch_samples(batch)
    assert [r["duration"] for r in rows] == want and "seconds long" not in s.encoder.render(rows[0])
