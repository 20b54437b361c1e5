"""The demo's synthetic square task (data_pipeline.synthetic): frames, samples on disk, the constant baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipeline import synthetic


def test_square_frame_marks_the_second_and_the_event():
    cell = 56 // 4
    for second in (0, 5, 15):
        for visible in (False, True):
            img = synthetic.square_frame(second, visible)
            r, c = (second // 4) * cell, (second % 4) * cell
            marker = img[r : r + cell, c : c + cell].reshape(-1, 3)
            assert (marker == (synthetic._RED if visible else (255, 255, 255))).all()
            rest = img.copy()
            rest[r : r + cell, c : c + cell] = synthetic._BACKGROUND
            assert (rest == synthetic._BACKGROUND).all()  # nothing else on screen
    with pytest.raises(ValueError, match="0..15"):
        synthetic.square_frame(16, True)


def test_best_constant_iou_is_the_best_clipped_constant():
    samples = [{"duration": 6.0, "segments": [[1.0, 3.0]]}, {"duration": 6.0, "segments": [[1.0, 3.0]]},
               {"duration": 4.0, "segments": [[2.0, 4.0]]}]
    (a, b), iou = synthetic.best_constant_iou(samples)
    assert (a, b) == (1.0, 3.0) and iou == pytest.approx((1 + 1 + 1 / 3) / 3)
    # an answer past a video's end is clipped to it, as the rewards clip predictions
    (a, b), iou = synthetic.best_constant_iou([{"duration": 4.0, "segments": [[2.0, 4.0]]}])
    assert a == 2.0 and b >= 4.0 and iou == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one"):
        synthetic.best_constant_iou([])


def test_make_square_dataset_writes_deterministic_samples(tmp_path):
    out = synthetic.make_square_dataset(str(tmp_path), num_train=6, num_val=2, tokenizer=False)
    train = [json.loads(x) for x in open(out["train"])]
    val = [json.loads(x) for x in open(out["val"])]
    assert len(train) == 6 and len(val) == 2
    for s in train + val:
        (a, b), = s["segments"]
        d = s["duration"]
        assert 6 <= d <= 9 and a == int(a) and b == int(b) and 0 <= a and b <= d and 2 <= b - a <= d // 2 + 1
        assert s["query"] == synthetic.SQUARE_QUERY
    again = synthetic.make_square_dataset(str(tmp_path / "again"), num_train=6, num_val=2, tokenizer=False)
    assert [json.loads(x) for x in open(again["train"])] == train  # deterministic in its arguments
    assert np.isfinite(synthetic.best_constant_iou(val)[1])
