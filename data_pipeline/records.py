"""The frame shard format: one ``tf.train.Example`` per video in TFRecord files, plus a sharded JSONL index.

Record features (one record per video):

    video       bytes    the video id (file stem)
    duration    float    seconds
    source_fps  float    the video's own frame rate
    fps         float    sampling rate asked for at extraction;  max_frames  int64  the cap asked for
    width, height, num_frames   int64   stored JPEG size (px) and frame count T
    frame_times float[T] seconds of each stored frame
    frames      bytes[T] JPEG frames

Each shard ``frames-<run>-<k>.tfrecord`` has its index ``frames-<run>-<k>.index.jsonl`` written after the
shard is complete, one line per video: ``{"video", "shard", "offset", "length", "num_frames", "duration",
"width", "height", "source_fps", "fps", "max_frames", "path"}`` (``offset`` / ``length`` locate the serialized
example inside the shard, so one video is read without scanning the file). The union of the ``*.index.jsonl``
files of a directory is its index; a shard without its index file is unfinished and ignored.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from typing import Any

import numpy as np

from data_pipeline import fileio

INDEX_SUFFIX = ".index.jsonl"
SHARD_SUFFIX = ".tfrecord"
CONFIG_NAME = "frames-config.json"


def serialize(ev: Any, *, fps: float, max_frames: int) -> bytes:
    """``ExtractedVideo`` -> serialized ``tf.train.Example`` bytes."""
    import tensorflow as tf

    def b(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def f(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def i(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    feats = {
        "video": b([ev.video.encode("utf-8")]),
        "duration": f([ev.duration]),
        "source_fps": f([ev.source_fps]),
        "fps": f([fps]),
        "max_frames": i([max_frames]),
        "width": i([ev.width]),
        "height": i([ev.height]),
        "num_frames": i([len(ev.jpegs)]),
        "frame_times": f(np.asarray(ev.frame_times, np.float32).tolist()),
        "frames": b(ev.jpegs),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def parse_numpy(serialized: bytes) -> dict[str, Any]:
    """Serialized example -> dict of Python / numpy values (``frames`` is a list of JPEG bytes)."""
    import tensorflow as tf

    ex = tf.train.Example.FromString(serialized)
    fm = ex.features.feature
    return {
        "video": fm["video"].bytes_list.value[0].decode("utf-8"),
        "duration": float(fm["duration"].float_list.value[0]),
        "source_fps": float(fm["source_fps"].float_list.value[0]),
        "fps": float(fm["fps"].float_list.value[0]),
        "max_frames": int(fm["max_frames"].int64_list.value[0]),
        "width": int(fm["width"].int64_list.value[0]),
        "height": int(fm["height"].int64_list.value[0]),
        "frame_times": np.asarray(fm["frame_times"].float_list.value, np.float32),
        "frames": list(fm["frames"].bytes_list.value),
    }


def record_size(length: int) -> int:
    """Bytes one TFRecord of ``length`` data bytes takes in the file (length, 2 CRCs)."""
    return length + 16


def load_index(frames_dir: str) -> dict[str, dict[str, Any]]:
    """video id -> index entry (with ``shard`` made an absolute path) from every ``*.index.jsonl``.

    A video listed twice keeps its first entry (in file-name order)."""
    out: dict[str, dict[str, Any]] = {}
    for ipath in fileio.glob(fileio.join(frames_dir, "*" + INDEX_SUFFIX)):
        with fileio.open_file(ipath, "r") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                    e["shard"] = fileio.join(frames_dir, e["shard"])
                    vid = e["video"]
                    int(e["offset"]), int(e["length"]), int(e["num_frames"]), float(e["duration"])
                except (ValueError, KeyError, TypeError) as err:
                    raise ValueError(f"{ipath}:{lineno}: bad index line ({err})") from None
                out.setdefault(vid, e)
    return out


class RecordReader:
    """Random access to records by (shard, offset, length); thread-safe; keeps a few files open."""

    def __init__(self, max_open: int = 64) -> None:
        self._lock = threading.Lock()
        self._local: dict[str, int] = {}
        self._remote: dict[str, tuple[Any, threading.Lock]] = {}
        self._max_open = max_open

    def read(self, path: str, offset: int, length: int) -> bytes:
        """The data bytes of the record at ``offset`` (checks the stored length)."""
        n = record_size(length)
        if fileio.is_remote(path):
            with self._lock:
                entry = self._remote.get(path)
                if entry is None:
                    if len(self._remote) >= self._max_open:
                        old = self._remote.pop(next(iter(self._remote)))
                        old[0].close()
                    entry = (fileio.open_file(path, "rb"), threading.Lock())
                    self._remote[path] = entry
            with entry[1]:
                entry[0].seek(offset)
                buf = entry[0].read(n)
        else:
            with self._lock:
                fd = self._local.get(path)
                if fd is None:
                    if len(self._local) >= self._max_open:
                        os.close(self._local.pop(next(iter(self._local))))
                    fd = os.open(path, os.O_RDONLY)
                    self._local[path] = fd
            buf = os.pread(fd, n, offset)
        if len(buf) != n:
            raise ValueError(f"{path}: record at offset {offset} is cut short ({len(buf)} of {n} bytes)")
        (stored,) = struct.unpack("<Q", buf[:8])
        if stored != length:
            raise ValueError(f"{path}: record at offset {offset} has length {stored}, index says {length}")
        return buf[12 : 12 + length]

    def close(self) -> None:
        """Close every open file."""
        with self._lock:
            for fd in self._local.values():
                os.close(fd)
            for f, _ in self._remote.values():
                f.close()
            self._local.clear()
            self._remote.clear()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
