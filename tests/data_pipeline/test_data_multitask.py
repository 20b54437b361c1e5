"""The demo's five-task world (data_pipeline.synthetic): frames, samples, ground truth readable from the pixels."""

from __future__ import annotations

import collections
import io
import json
import re

import numpy as np
import pytest

from data_pipeline import prompts, records, schema, synthetic

TASKS = ("tg", "dtg", "vhd", "gvqa", "tal")


def runs(timeline, colour):
    """[[start, end], ...] seconds of the runs of one colour (written here again, not taken from the generator)."""
    out = []
    for s, c in enumerate(timeline):
        if c == colour:
            if out and out[-1][1] == s:
                out[-1][1] = s + 1
            else:
                out.append([s, s + 1])
    return [[float(a), float(b)] for a, b in out]


def truth(sample, timeline):
    """The answer fields of a sample recomputed from its timeline by the rule its prompt states."""
    task = sample["task"]
    if task in ("tg", "vhd"):
        assert sample["query"] == "the red square is on screen"
        return {"segments": runs(timeline, "red")}
    if task == "dtg":
        colours = [re.fullmatch(r"the (\w+) square is on screen", q).group(1) for q in sample["queries"]]
        assert len(set(colours)) == len(colours)
        segs = []
        for c in colours:
            (run,) = runs(timeline, c)  # each queried colour is on screen during exactly one interval
            segs.append(run)
        return {"segments": segs}
    if task == "gvqa":
        assert sample["question"] == "which colour comes right after the red square?"
        (red,) = runs(timeline, "red")
        after = timeline[int(red[1])]
        (run,) = [r for r in runs(timeline, after) if r[0] == red[1]]
        return {"segments": [[red[0], run[1]]], "answer": "ABCDEFGH"[sample["options"].index(after)]}
    assert task == "tal" and sample["action"] == "yellow flash"
    return {"segments": runs(timeline, "yellow")}


def check_world(sample, timeline):
    schema.validate_sample(sample)
    assert len(timeline) == sample["duration"] and all(c is None or c in synthetic.COLOURS for c in timeline)
    assert {k: sample[k] for k in truth(sample, timeline)} == truth(sample, timeline)
    n = len(sample["segments"])
    task = sample["task"]
    assert {"tg": n == 1, "dtg": 2 <= n <= 3, "vhd": 1 <= n <= 3, "gvqa": n == 1, "tal": 1 <= n <= 4}[task]
    segs = sample["segments"]
    assert segs == sorted(segs)  # dtg: the query order is the temporal order the prompt announces
    if task == "gvqa":
        opts = sample["options"]
        assert len(opts) in (3, 4) and len(set(opts)) == len(opts) and "red" not in opts
    if task == "tal":
        assert all(1 <= e - s <= 2 for s, e in segs)


def test_marker_frames_and_read_marker():
    cell = 56 // 4
    for second in (0, 6, 15):
        for colour in (None, *synthetic.COLOURS):
            img = synthetic.marker_frame(second, colour)
            r, c = (second // 4) * cell, (second % 4) * cell
            want = (255, 255, 255) if colour is None else synthetic.COLOURS[colour]
            assert (img[r : r + cell, c : c + cell].reshape(-1, 3) == want).all()
            assert (img.reshape(-1, 3) != synthetic._BACKGROUND).any(axis=1).sum() == cell * cell
            assert synthetic.read_marker(img) == (second, colour)
            small = img.reshape(28, 2, 28, 2, 3).mean(axis=(1, 3))  # what the stream's 28 x 28 frames keep
            assert synthetic.read_marker(small) == (second, colour)
    # the square task's frames are the red / white case, pixel for pixel
    assert (synthetic.square_frame(5, True) == synthetic.marker_frame(5, "red")).all()
    assert (synthetic.square_frame(5, False) == synthetic.marker_frame(5, None)).all()
    with pytest.raises(ValueError, match="0..15"):
        synthetic.marker_frame(16, "red")
    with pytest.raises(ValueError, match="unknown colour 'orange'"):
        synthetic.marker_frame(0, "orange")


def test_every_world_is_valid_and_its_truth_is_its_timeline():
    from tempr1_jax.rewards import compute_rewards

    samples = []
    for task in TASKS:
        for i in range(120):
            for split in ("train", "val"):
                timeline, sample = synthetic.multitask_sample(task, split, i)
                check_world(sample, timeline)
                samples.append(sample)
    assert len({s["id"] for s in samples}) == len(samples)
    # the written ground truth scores the maximum: format 1, localization 1 (tal 2), gvqa answer 1
    out = compute_rewards([prompts.target_completion(s) for s in samples], samples)
    best = {"tg": 2.0, "dtg": 2.0, "vhd": 2.0, "gvqa": 3.0, "tal": 3.0}
    np.testing.assert_allclose(out["total"], [best[s["task"]] for s in samples], atol=1e-6)
    # gvqa: 3 and 4 options alternate and every letter is equally frequent per option count (chance for guessing)
    letters = collections.Counter((len(s["options"]), s["answer"]) for s in samples if s["task"] == "gvqa")
    assert letters == {(3, "A"): 40, (3, "B"): 40, (3, "C"): 40, (4, "A"): 30, (4, "B"): 30, (4, "C"): 30, (4, "D"): 30}


def test_worlds_are_deterministic_and_independent_of_other_videos():
    a = synthetic.multitask_sample("dtg", "val", 7, seed=3)
    assert synthetic.multitask_sample("dtg", "val", 7, seed=3) == a
    assert synthetic.multitask_sample("dtg", "train", 7, seed=3) != a
    assert synthetic.multitask_sample("dtg", "val", 7, seed=4) != a
    timeline, _ = synthetic.multitask_sample("tg", "val", 0, distractors=0.0)
    assert set(timeline) == {None, "red"}
    with pytest.raises(ValueError, match="unknown task 'mcq'"):
        synthetic.multitask_sample("mcq", "val", 0)


def test_a_margin_keeps_answers_off_the_video_ends():
    """margin 1 (the demo's): no answer run starts at 0 s or ends at the video's end, so a boundary widened by 1 s
    is never clipped to the true one; without a margin some do."""
    touching = 0
    for i in range(60):
        for task in TASKS:
            timeline, s = synthetic.multitask_sample(task, "train", i, min_seconds=6, max_seconds=9, margin=1)
            check_world(s, timeline)
            assert all(1 <= a and b <= s["duration"] - 1 for a, b in s["segments"]), s
            _, s = synthetic.multitask_sample(task, "train", i, min_seconds=6, max_seconds=9)
            touching += any(a == 0 or b == s["duration"] for a, b in s["segments"])
    assert touching > 30
    for margin in (-1, 2):  # min_seconds 6 leaves < 4 s inside margins of 2 s
        with pytest.raises(ValueError, match=f"margin must be >= 0 and leave >= 4 s .* got {margin}"):
            synthetic.make_multitask_dataset("unused", tokenizer=False, min_seconds=6, margin=margin)


def test_prompts_fit_256_tokens_with_their_visual_tokens(tokenizer):
    enc = prompts.PromptEncoder(tokenizer)
    for task in TASKS:
        samples = [synthetic.multitask_sample(task, "val", i)[1] for i in range(64)]
        lengths = [len(ids) - 1 + int(s["duration"]) for ids, s in zip(enc.encode_many(samples), samples, strict=True)]
        assert max(lengths) <= 256, (task, max(lengths))


def decoded_timelines(frames_dir, size=None):
    """video id -> timeline read back from the stored JPEG frames (optionally resized to size x size)."""
    import PIL.Image

    reader = records.RecordReader()
    out = {}
    for vid, e in records.load_index(frames_dir).items():
        rec = records.parse_numpy(reader.read(e["shard"], int(e["offset"]), int(e["length"])))
        timeline = [None] * int(round(rec["duration"]))
        assert len(rec["frames"]) == 2 * len(timeline)  # 2 fps: one temporal patch (one token) per second
        for k, jpeg in enumerate(rec["frames"]):
            img = PIL.Image.open(io.BytesIO(jpeg)).convert("RGB")
            if size:
                img = img.resize((size, size), PIL.Image.BICUBIC)
            second, colour = synthetic.read_marker(np.asarray(img))
            assert second == k // 2, (vid, k, second)
            if k % 2:
                assert colour == timeline[second], (vid, k)
            timeline[second] = colour
        out[vid] = timeline
    return out


def test_make_multitask_dataset_pixels_hold_the_ground_truth(tmp_path):
    out = synthetic.make_multitask_dataset(str(tmp_path / "a"), num_train=3, num_val=2, tokenizer=False)
    train, val = schema.read_samples(out["train"]), schema.read_samples(out["val"])
    assert collections.Counter(s["task"] for s in train) == dict.fromkeys(TASKS, 3)
    assert collections.Counter(s["task"] for s in val) == dict.fromkeys(TASKS, 2)
    assert [s["task"] for s in val] == list(TASKS) * 2  # the tasks interleaved
    assert not {s["video"] for s in train} & {s["video"] for s in val}  # split by video
    assert all(s["source"] == "synthetic_multitask:val" for s in val)
    for size in (None, 28):
        timelines = decoded_timelines(out["frames"], size)
        assert set(timelines) == {s["video"] for s in train + val}
        for s in train + val:
            check_world(s, timelines[s["video"]])
    again = synthetic.make_multitask_dataset(str(tmp_path / "b"), num_train=3, num_val=2, tokenizer=False)
    for split in ("train", "val"):
        assert open(again[split]).read() == open(out[split]).read()  # deterministic in its arguments
    assert decoded_timelines(again["frames"]) == decoded_timelines(out["frames"])
    one = synthetic.make_multitask_dataset(str(tmp_path / "c"), num_train=1, num_val=2, tasks=("tal",), tokenizer=False)
    assert open(one["val"]).read().splitlines() == [
        x for x in open(out["val"]).read().splitlines() if json.loads(x)["task"] == "tal"
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tasks": ("tg", "mcq")}, "tasks must be"),
        ({"tasks": ("tg", "tg")}, "tasks must be"),
        ({"min_seconds": 5}, "6 <= min_seconds"),
        ({"max_seconds": 17}, "max_seconds <= 16"),
        ({"num_train": 0}, "num_train >= 1"),
        ({"distractors": 1.5}, "probability"),
        ({"size": 30}, "multiple of 4"),
    ],
)
def test_make_multitask_dataset_rejects_bad_settings(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic.make_multitask_dataset(str(tmp_path), tokenizer=False, **kwargs)


@pytest.mark.slow
def test_default_multitask_dataset(tmp_path):
    """The demo-sized world: 300 videos per task (64 of them held out), every video's pixels read back."""
    out = synthetic.make_multitask_dataset(str(tmp_path))
    train, val = schema.read_samples(out["train"]), schema.read_samples(out["val"])
    assert collections.Counter(s["task"] for s in val) == dict.fromkeys(TASKS, 64)
    assert collections.Counter(s["task"] for s in train) == dict.fromkeys(TASKS, 236)
    timelines = decoded_timelines(out["frames"], 28)
    for s in train + val:
        check_world(s, timelines[s["video"]])
