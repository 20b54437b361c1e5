"""Hand-made ``data_pipeline.stream.Batch`` values for tests that feed the policy without a real stream."""

from __future__ import annotations

import numpy as np

from data_pipeline.stream import Batch


def stream_batch(**arrays: np.ndarray) -> Batch:
    """A stream Batch holding ``arrays`` (``input_ids`` required: its rows set B); every other field is zeros of
    its usual shape (one ground-truth slot), ``sample_mask`` all true."""
    B = len(arrays["input_ids"])
    fill = {
        "attention_mask": np.ones_like(arrays["input_ids"]),
        "pixel_values": np.zeros((B, 0, 1176), np.float32),
        "pixel_mask": np.zeros((B, 0), bool),
        "grid_thw": np.zeros((B, 3), np.int32),
        "second_per_grid_ts": np.zeros(B, np.float32),
        "num_video_tokens": np.zeros(B, np.int32),
        "sample_mask": np.ones(B, bool),
        "segments": np.zeros((B, 1, 2), np.float32),
        "segments_mask": np.zeros((B, 1), bool),
        "duration": np.zeros(B, np.float32),
        "task_id": np.zeros(B, np.int32),
        "answer": np.full(B, -1, np.int32),
        "id": np.array([b"x"] * B),
        "task": np.array([b"tg"] * B),
        "video": np.array([b"v"] * B),
        "sample_json": np.array([b"{}"] * B),
        "position": np.arange(B, dtype=np.int64),
        "index": np.arange(B, dtype=np.int64),
    }
    return Batch(**(fill | arrays))
