"""``tempr1_temporal``: a TFDS dataset that packages converted samples with their extracted frames.

Build it from the outputs of the two commands (``convert`` samples files, one per split, and an
``extract_frames`` directory)::

    python -m data_pipeline.tfds_builder --samples train.jsonl val.jsonl --frames /data/frames \\
        --data-dir /data/tfds

or put them in a manual directory laid out as ``<manual_dir>/samples/<split>.jsonl`` +
``<manual_dir>/frames/``
and call ``tfds.builder("tempr1_temporal", data_dir=...).download_and_prepare(download_config=
tfds.download.DownloadConfig(manual_dir=...))``. Then::

    import data_pipeline.tfds_builder  # registers the builder
    ds = tfds.load("tempr1_temporal", split="train", data_dir="/data/tfds")    # frames decoded to uint8

One example per sample (a video's frames are stored with each of its samples: simple and self-contained, at
the cost of repeating a video used by several samples), in TFRecord files. Features: ``id``, ``task``,
``video``, ``duration`` (s), ``segments`` [K, 2] (s), ``sample`` (the full JSON record), ``frames`` (JPEG
images), ``frame_times`` [T] (s), ``fps`` (the extraction rate). Examples keep the samples file order (no
shuffling), and the metadata (``info.metadata["rows"][split]``) lists each row's sample and frame sizes so
that the training stream (``config.tfds_name``) plans buckets without reading frames; it reads rows by random
access from the record offsets (``record_locations``: headers only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import tensorflow_datasets as tfds

from data_pipeline import records, schema

NAME = "tempr1_temporal"


def _rows(samples: list[dict], index: dict[str, dict]) -> list[dict]:
    rows = []
    for s in samples:
        e = index.get(s["video"])
        if e is None:
            continue
        rows.append(
            {
                "sample": schema.dumps(s),
                "num_frames": int(e["num_frames"]),
                "duration": float(e["duration"]),
                "width": int(e["width"]),
                "height": int(e["height"]),
                "fps": float(e.get("fps", 0.0)),
            }
        )
    return rows


class Tempr1Temporal(tfds.core.GeneratorBasedBuilder):
    """TempR1 temporal tasks (tg, dtg, vhd, gvqa, tal): samples with their sampled video frames."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Unified samples (docs/formats.md) + JPEG frames from extract_frames."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put one samples JSONL per split in <manual_dir>/samples/<split>.jsonl "
        "(python -m data_pipeline.convert) "
        "and the frames directory in <manual_dir>/frames (python -m data_pipeline.extract_frames)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "task": tfds.features.Text(),
                    "video": tfds.features.Text(),
                    "sample": tfds.features.Text(),
                    "duration": tfds.features.Scalar(np.float32),
                    "segments": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
                    "frames": tfds.features.Sequence(
                        tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
                    ),
                    "frame_times": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                    "fps": tfds.features.Scalar(np.float32),
                }
            ),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
            homepage="https://arxiv.org/abs/2512.03963",
        )

    def _split_generators(self, dl_manager):
        manual = str(dl_manager.manual_dir)
        sdir, fdir = os.path.join(manual, "samples"), os.path.join(manual, "frames")
        if not os.path.isdir(sdir) or not os.path.isdir(fdir):
            raise ValueError(f"{manual}: expected samples/<split>.jsonl and frames/ inside (see the docs)")
        index = records.load_index(fdir)
        splits = {}
        rows_meta = {}
        for name in sorted(os.listdir(sdir)):
            if not name.endswith(".jsonl"):
                continue
            split = name[: -len(".jsonl")]
            samples = schema.read_samples(os.path.join(sdir, name))
            rows = _rows(samples, index)
            missing = len(samples) - len(rows)
            if missing:
                print(
                    f"tempr1_temporal: split {split}: {missing} of {len(samples)} samples skipped "
                    "(video not in "
                    f"{fdir})",
                    file=sys.stderr,
                )
            rows_meta[split] = rows
            splits[split] = self._generate_examples(rows, index)
        if not splits:
            raise ValueError(f"{sdir}: no <split>.jsonl file")
        self.info.metadata["rows"] = rows_meta
        return splits

    def _generate_examples(self, rows: list[dict], index: dict[str, dict]):
        reader = records.RecordReader()
        for row in rows:
            s = json.loads(row["sample"])
            e = index[s["video"]]
            rec = records.parse_numpy(reader.read(e["shard"], e["offset"], e["length"]))
            yield (
                s["id"],
                {
                    "id": s["id"],
                    "task": s["task"],
                    "video": s["video"],
                    "sample": row["sample"],
                    "duration": np.float32(s["duration"] if s.get("duration") is not None else e["duration"]),
                    "segments": np.asarray(s["segments"], np.float32).reshape(-1, 2),
                    "frames": rec["frames"],
                    "frame_times": rec["frame_times"],
                    "fps": np.float32(rec["fps"]),
                },
            )
        reader.close()


def build(samples: dict[str, str], frames_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """Build ``tempr1_temporal`` into ``data_dir`` from ``{split: samples.jsonl}`` + an extract_frames dir."""
    import tempfile

    with tempfile.TemporaryDirectory() as manual:
        os.makedirs(os.path.join(manual, "samples"))
        for split, path in samples.items():
            os.symlink(os.path.abspath(path), os.path.join(manual, "samples", f"{split}.jsonl"))
        os.symlink(os.path.abspath(frames_dir), os.path.join(manual, "frames"))
        builder = tfds.builder(NAME, data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return builder


def record_locations(builder: tfds.core.DatasetBuilder, split: str) -> list[tuple[str, int, int]]:
    """(file, offset, length) of every example of a split, in order, by reading only the record headers."""
    import struct

    from data_pipeline import fileio

    out = []
    for path in builder.info.splits[split].filepaths:
        path = str(path)
        with fileio.open_file(path, "rb") as f:
            pos = 0
            while True:
                f.seek(pos)
                head = f.read(12)
                if not head:
                    break
                if len(head) < 12:
                    raise ValueError(f"{path}: truncated record header at offset {pos}")
                (length,) = struct.unpack("<Q", head[:8])
                out.append((path, pos, length))
                pos += records.record_size(length)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m data_pipeline.tfds_builder --samples SPLIT.jsonl ... --frames DIR --data-dir DIR``."""
    p = argparse.ArgumentParser(
        prog="python -m data_pipeline.tfds_builder",
        description="Package samples + extracted frames as the tempr1_temporal TFDS dataset.",
    )
    p.add_argument(
        "--samples",
        nargs="+",
        required=True,
        help="samples JSONL files; the split is the file stem (or give split=path)",
    )
    p.add_argument("--frames", required=True, help="extract_frames output directory")
    p.add_argument("--data-dir", required=True, help="TFDS data directory to write")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    splits = {}
    for item in args.samples:
        split, sep, path = item.partition("=")
        if not sep:
            path = item
            split = os.path.basename(item).split(".", 1)[0]
        splits[split] = path
    try:
        builder = build(splits, args.frames, args.data_dir)
    except (ValueError, OSError) as e:
        print(f"tfds_builder: error: {e}", file=sys.stderr)
        return 2
    print(
        f"tfds_builder: {NAME} {builder.version} written to {builder.data_dir} "
        f"({', '.join(f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
