"""tempr1_jax.warmup: the warm-up's target completions (true or random answers in each task's format) and their
token rows."""

from __future__ import annotations

import json

import batches
import numpy as np
import pytest

from data_pipeline import prompts
from tempr1_jax import rewards
from tempr1_jax.warmup import target_rows, warmup_target


def test_random_warmup_targets_are_valid_intervals_in_the_format_not_the_truth():
    rng = np.random.default_rng(0)
    sample = {"id": "v#0", "task": "tg", "video": "v", "duration": 7.0, "segments": [[2.0, 5.0]],
              "query": "the red square is on screen"}
    assert warmup_target(sample, "truth", rng) == prompts.target_completion(sample)
    seen = set()
    for _ in range(200):
        text = warmup_target(sample, "random", rng)
        parsed = rewards.parse_completion(text, sample)
        assert parsed.format, text
        (a, b), = parsed.intervals.tolist()
        assert 0 <= a < b <= 7 and a == int(a) and b == int(b), text
        seen.add((a, b))
    assert len(seen) == 28  # every pair of whole seconds in [0, 7] comes up, the truth among them
    r = rewards.compute_rewards([warmup_target(sample, "random", rng) for _ in range(200)], [sample] * 200)
    assert np.all(r["format"] == 1) and 0.1 < np.mean(r["localization"]) < 0.5  # chance, not the truth
    gvqa = {"id": "q", "task": "gvqa", "video": "v", "duration": 0.5, "segments": [[0.1, 0.3]],
            "question": "?", "options": ["x", "y", "z"], "answer": "A"}
    for _ in range(20):
        parsed = rewards.parse_completion(warmup_target(gvqa, "random", rng), gvqa)
        assert parsed.format and 0 <= parsed.intervals[0, 0] < parsed.intervals[0, 1] <= 0.5
    with pytest.raises(ValueError, match="warmup.targets"):
        warmup_target(sample, "truht", rng)


def test_target_rows_hold_each_target_then_eos_and_mask_padding_rows(tokenizer):
    samples = [
        {"id": "a", "task": "tg", "video": "v", "duration": 7.0, "segments": [[2.0, 5.0]], "query": "q"},
        {"id": "b", "task": "tal", "video": "v", "duration": 7.0, "segments": [], "action": "x"},
    ]
    batch = batches.stream_batch(input_ids=np.zeros((3, 4), np.int32),
                                 sample_json=np.array([json.dumps(s).encode() for s in samples + samples[:1]]),
                                 sample_mask=np.array([True, True, False]))
    ids, mask = target_rows(batch, tokenizer, "truth", np.random.default_rng(0), width=16, pad=-1)
    assert ids.shape == mask.shape == (3, 16) and not mask[2].any()  # the padding copy trains on nothing
    for b, sample in enumerate(samples):
        want = tokenizer(prompts.target_completion(sample), add_special_tokens=False)["input_ids"]
        n = len(want) + 1
        assert ids[b, : n].tolist() == [*want, tokenizer.eos_token_id] and mask[b].sum() == n
        assert (ids[b, n:] == -1).all()
    with pytest.raises(ValueError, match="sample 'a' has .* tokens > rollout.max_new_tokens=4"):
        target_rows(batch, tokenizer, "truth", np.random.default_rng(0), width=4, pad=-1)
