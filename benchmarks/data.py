"""Input pipeline speed and memory: the tf.data stream vs a plain per-sample Python loader doing the same
work.

Generated frames (textured 640x360 JPEGs at 2 fps, written as extract_frames shards), mixed-task samples with
TempR1's settings (2 fps, at most 448 frames, 3584 visual tokens, batch 2, default buckets) and the tiny
tokenizer. Side by side in one process, over the same samples in the same order:

  baseline: for each sample, read its record, decode every kept JPEG with PIL, resize with PIL (bicubic,
            antialiased) to the token budget, the model room's ``patchify_video``, prompt ids with the video
            pad expanded, left-pad / right-pad to the batch's bucket, collate (one thread, no prefetch);
  stream:   ``data_pipeline.stream`` with its defaults (2 parallel samples, libjpeg DCT down-scaling when the
            target is >= 2x smaller, tf.image resize, prefetch 2 batches); the same without DCT
            down-scaling; the same with one sample at a time (what parallelism adds).

The loaders run in interleaved rounds (so that load from other jobs
on the machine hits them alike) and the best round of each is reported: wall samples/s and frames/s (frames
decoded per second) with the ratio to the baseline, CPU milliseconds per sample (all threads of the process:
the work done, robust when other jobs share the cores) with its ratio, peak RSS, and the agreement of the
outputs (prompt ids and grids must be identical; mean absolute difference of the normalized pixels); then
streams ``--long-batches`` batches and reports host RSS after warm-up, at the end and at peak, to show memory
stays flat.
Usage: python benchmarks/data.py [--videos 12] [--min-seconds 30] [--max-seconds 300]
       [--batches 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from data_pipeline import extract_frames, frames, records, schema, stream  # noqa: E402
from data_pipeline import vision as qpre  # noqa: E402
from data_pipeline.prompts import expand_video_pad  # noqa: E402
from data_pipeline.tiny_tokenizer import build_tiny_tokenizer  # noqa: E402


class RssMonitor:
    """Samples this process's resident set size every 20 ms; ``peak`` since the last ``reset``."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self._peak = 0
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(0.02)

    def now(self) -> int:
        return self._proc.memory_info().rss

    def reset(self) -> None:
        self._peak = self.now()

    @property
    def peak(self) -> int:
        return max(self._peak, self.now())

    def stop(self) -> None:
        self._stop = True


def make_data(root: str, n_videos: int, min_s: float, max_s: float, seed: int = 0) -> dict[str, str]:
    """Frame shards of generated textured videos (no video coding: frames go straight to JPEG) + samples."""
    import av

    rng = np.random.default_rng(seed)
    fdir = os.path.join(root, "frames")
    os.makedirs(fdir, exist_ok=True)
    settings = extract_frames.Settings()
    writer = extract_frames.ShardWriter(fdir, 4, settings)
    samples = []
    w, h = 640, 360
    for i in range(n_videos):
        vid = f"bench{i}"
        d = float(rng.uniform(min_s, max_s))
        times = frames.sample_times(d, settings.fps, settings.max_frames)
        base = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
        enc = av.CodecContext.create("mjpeg", "w")
        enc.width, enc.height, enc.pix_fmt = w, h, "yuvj420p"
        enc.time_base = __import__("fractions").Fraction(1, 25)
        enc.qmin = enc.qmax = settings.jpeg_qscale
        jpegs = []
        for k in range(len(times)):
            img = np.roll(base, k, axis=1).repeat(8, 0).repeat(8, 1)[:h, :w]
            img = (img.astype(np.int16) + rng.integers(-12, 12, img.shape, dtype=np.int16)).clip(0, 255)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img.astype(np.uint8)), format="rgb24")
            jpegs.append(b"".join(bytes(p) for p in enc.encode(frame.reformat(format="yuvj420p"))))
        writer.add(frames.ExtractedVideo(vid, f"{vid}.mp4", d, 30.0, w, h, times, jpegs))
        a = round(d * 0.2, 1)
        b = round(d * 0.5, 1)
        src = "bench:train"
        samples += [
            {
                "id": f"{vid}#0",
                "task": "tg",
                "video": vid,
                "duration": d,
                "segments": [[a, b]],
                "query": "a person opens the door and turns on the light",
                "source": src,
            },
            {
                "id": f"{vid}#tal",
                "task": "tal",
                "video": vid,
                "duration": d,
                "segments": [[0.0, a], [b, d]],
                "action": "Playing basketball",
                "source": src,
            },
            {
                "id": f"{vid}_q",
                "task": "gvqa",
                "video": vid,
                "duration": d,
                "segments": [[a, b]],
                "question": "why did the boy pick up the ball?",
                "options": ["to throw it", "to eat it", "to hold it"],
                "answer": "A",
                "source": src,
            },
        ]
    writer.commit()
    path = os.path.join(root, "samples.jsonl")
    schema.write_jsonl(path, samples)
    return {"frames": fdir, "samples": path}


class PlainLoader:
    """The baseline: one sample after another in plain Python (PIL decode + resize, numpy), then collate."""

    def __init__(self, s: stream.Stream) -> None:
        self.s = s
        self.index = records.load_index(s.config.frames)
        self.reader = records.RecordReader()

    def sample(self, i: int, L: int, N: int) -> dict[str, np.ndarray]:
        import PIL.Image

        s, c = self.s, self.s.config
        sample = s.samples[i]
        e = self.index[sample["video"]]
        rec = records.parse_numpy(self.reader.read(e["shard"], e["offset"], e["length"]))
        times = np.asarray(rec["frame_times"], np.float64)
        sel = frames.select_frames(times, e["duration"], c.fps, c.max_frames)
        h, w = (int(x) for x in s.target_hw[i])
        imgs = []
        for k in sel:
            im = PIL.Image.open(io.BytesIO(rec["frames"][k])).convert("RGB")
            imgs.append(np.asarray(im.resize((w, h), PIL.Image.Resampling.BICUBIC)))
        vi = qpre.patchify_video(np.stack(imgs), times[sel])
        ids = expand_video_pad(s.prompts[i], s.encoder.video_pad_id, int(s.n_tokens[i]))
        input_ids = np.full(L, s.pad_id, np.int32)
        input_ids[L - len(ids) :] = ids
        pix = np.zeros((N, qpre.PATCH_DIM), np.float32)
        pix[: len(vi.pixel_values)] = vi.pixel_values
        return {
            "input_ids": input_ids,
            "attention_mask": (np.arange(L) >= L - len(ids)).astype(np.int32),
            "pixel_values": pix,
            "grid_thw": vi.grid_thw.astype(np.int32),
            "second_per_grid_ts": np.float32(vi.second_per_grid_ts),
            "n_frames": len(sel),
        }

    def batches(self, positions: list[list[int]]):
        s = self.s
        for batch in positions:
            L = s._bucket(int(max(s.prompt_len[i] for i in batch)), s.prompt_buckets)
            N = s._bucket(int(max(s.n_patches[i] for i in batch)), s.vision_buckets)
            items = [self.sample(i, L, N) for i in batch]
            yield {k: np.stack([it[k] for it in items]) for k in items[0]}


def time_round(it, n_batches: int, frames_per_batch: list[int]) -> tuple[tuple[float, float, float], dict]:
    """((samples/s, frames/s, CPU ms per sample), first batch) of the next ``n_batches`` batches of ``it``.

    CPU time is the whole process's (every thread, TF's included): the work done, whatever else runs."""
    t0, c0 = time.perf_counter(), time.process_time()
    first = next(it)
    first = first._asdict() if hasattr(first, "_asdict") else first  # the stream's Batch, the baseline's dict
    for _ in range(n_batches - 1):
        next(it)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    bs = len(first["input_ids"])
    return (n_batches * bs / dt, sum(frames_per_batch) / dt, 1000 * dc / (n_batches * bs)), first


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--min-seconds", type=float, default=30.0)
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--batches", type=int, default=4, help="batches per timed round and loader")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (best one reported)")
    p.add_argument("--long-batches", type=int, default=60, help="batches streamed for the memory check")
    p.add_argument("--batch-size", type=int, default=2)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    mon = RssMonitor()
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        data = make_data(root, args.videos, args.min_seconds, args.max_seconds)
        tok = build_tiny_tokenizer(os.path.join(root, "tok"))
        print(
            f"generated {args.videos} videos ({args.min_seconds:.0f}-{args.max_seconds:.0f} s, 640x360 "
            "JPEG at "
            f"2 fps) in {time.perf_counter() - t:.1f} s"
        )

        def config(**kw):
            c = stream.default_config()
            c.samples, c.frames, c.tokenizer = [data["samples"]], data["frames"], tok
            c.batch_size = args.batch_size
            for k, v in kw.items():
                setattr(c, k, v)
            return c

        t = time.perf_counter()
        s = stream.make_stream(config())
        startup = time.perf_counter() - t
        nb = args.batches * args.rounds
        order = [
            [s.sample_at(g) for g in range(b * s.config.batch_size, (b + 1) * s.config.batch_size)]
            for b in range(nb)
        ]
        frames_per_batch = [int(sum(s.n_frames[i] for i in b)) for b in order]
        print(
            f"{s.num_samples} samples, "
            f"{sum(s.n_frames[i] for b in order for i in b) / (nb * args.batch_size):.0f}"
            f" frames and {np.mean([s.n_tokens[i] for b in order for i in b]):.0f} visual tokens per sample; "
            f"stream start-up (read, tokenize, plan) {startup:.2f} s"
        )

        base_loader = PlainLoader(s)
        loaders = {"baseline (plain loader)": lambda r: base_loader.batches(order[r * args.batches :])}
        variants = {
            "stream": {},
            "stream, no DCT down-scaling": {"jpeg_dct_scaling": False},
            "stream, 1 sample at a time": {"num_parallel_calls": 1},
        }
        for name, kw in variants.items():

            def make(r, kw=kw):
                state = {"position": r * args.batches * args.batch_size, "fingerprint": s.fingerprint}
                return stream.make_stream(config(**kw), state=state, tokenizer=s.tokenizer)

            loaders[name] = make
        firsts, peaks, rounds = {}, {}, {name: [] for name in loaders}
        # Rounds interleave the loaders so that load from other jobs hits them alike (the best round of each
        # is reported). Each stream starts afresh at the round's position and is closed after it, so nothing
        # runs in the background while another loader is timed; its start-up latency is inside its timing.
        for r in range(args.rounds):
            fpb = frames_per_batch[r * args.batches : (r + 1) * args.batches]
            for name, make in loaders.items():
                it = make(r)
                mon.reset()
                stats, first = time_round(iter(it), args.batches, fpb)
                rounds[name].append(stats)
                firsts.setdefault(name, first)
                peaks[name] = max(peaks.get(name, 0), mon.peak)
                if hasattr(it, "close"):
                    it.close()
        print(
            f"\n{'loader':30s} {'samples/s':>9s} {'frames/s':>8s} {'ratio':>6s} {'CPU ms/sample':>13s} "
            f"{'CPU ratio':>9s} {'peak RSS':>9s} {'|dpixel|':>8s}"
        )
        best = {
            n: (max(x[0] for x in v), max(x[1] for x in v), min(x[2] for x in v)) for n, v in rounds.items()
        }
        base_name = "baseline (plain loader)"
        for name, (sps, fps_, cpu) in best.items():
            first, b_first = firsts[name], firsts[base_name]
            n = int(np.prod(first["grid_thw"][0]))
            diff = np.abs(first["pixel_values"][0, :n] - b_first["pixel_values"][0, :n]).mean()
            same = np.array_equal(first["input_ids"], b_first["input_ids"]) and np.array_equal(
                first["grid_thw"], b_first["grid_thw"]
            )
            assert same, f"{name}: prompt ids / grids differ from the baseline's"
            print(
                f"{name:30s} {sps:9.2f} {fps_:8.0f} {sps / best[base_name][0]:5.2f}x {cpu:13.0f} "
                f"{best[base_name][2] / cpu:8.2f}x {peaks[name] / 2**20:5.0f} MiB {diff:8.4f}"
            )
        print(
            f"(best of {args.rounds} interleaved rounds of {args.batches} batches; |dpixel|: mean absolute "
            "difference of the first sample's normalized pixels from the baseline's, one gray level = 0.015; "
            "prompt ids and grids are identical)"
        )

        # Memory over a long stream: RSS after warm-up vs at the end.
        st = stream.make_stream(config())
        it = iter(st)
        for _ in range(5):
            next(it)
        mon.reset()
        warm = mon.now()
        t = time.perf_counter()
        for _ in range(args.long_batches):
            next(it)
        dt = time.perf_counter() - t
        end = mon.now()
        print(
            f"\nlong stream: {args.long_batches} batches "
            f"({args.long_batches * args.batch_size / dt:.2f} samples/s):"
            f" RSS {warm / 2**20:.0f} MiB after warm-up, {end / 2**20:.0f} MiB at the end, peak "
            f"{mon.peak / 2**20:.0f} MiB"
        )
        st.close()
    mon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
