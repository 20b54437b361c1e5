"""Slow checks of the data pipeline (run with ``python -m pytest -m slow``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipeline import stream, synthetic

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_host_memory_stays_flat_over_a_long_stream(tmp_path, tiny_tokenizer_dir):
    import psutil

    d = synthetic.make_dataset(str(tmp_path), num_videos=4, width=320, height=240, tokenizer=False)
    c = stream.default_config()
    c.samples, c.frames, c.tokenizer = [d["samples"]], d["frames"], tiny_tokenizer_dir
    c.batch_size = 2
    c.vision_buckets = (1024, 4096, 14336)
    c.prompt_buckets = (1024, 4096)
    c.max_segments = 4
    proc = psutil.Process()
    with stream.make_stream(c) as s:
        it = iter(s)
        for _ in range(20):
            next(it)
        warm = proc.memory_info().rss
        for _ in range(200):  # 20 passes over the 20 samples
            next(it)
        end = proc.memory_info().rss
    assert end - warm < 64 * 2**20, f"RSS grew by {(end - warm) / 2**20:.0f} MiB over 200 batches"


@pytest.mark.slow
def test_benchmark_runs():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "data.py"),
            "--videos",
            "2",
            "--min-seconds",
            "10",
            "--max-seconds",
            "20",
            "--batches",
            "1",
            "--rounds",
            "1",
            "--long-batches",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=str(ROOT),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "baseline (plain loader)" in out and "long stream" in out and "x " in out
