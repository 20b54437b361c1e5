"""The training / evaluation stream: samples JSONL + frame shards (or TFDS) -> bucketed numpy batches.

    stream = make_stream(config, process_index=jax.process_index(), process_count=jax.process_count())
    for batch in stream:          # dict of numpy arrays, static shapes from a small set of buckets
        ...
        saved = stream.state()    # {"position", "fingerprint"}: resume with make_stream(..., state=saved)

How it works (all order decisions are integer arithmetic on sample indices, so no decoded data ever sits in
a shuffle buffer and a position is all a resume needs):

1. Samples are read and validated, joined to their video's index entry (videos missing from the frames index
   are reported and skipped, or an error with ``missing_videos="error"``), and tokenized once: prompt ids with
   one ``<|video_pad|>``. Each sample's frame count, resize target, visual token count and prompt length are
   computed from the index alone (Qwen2.5-VL's budget rule, ``data_pipeline.vision``), so
   buckets are checked before anything is decoded.
2. A global order of positions ``g = 0, 1, ...`` is a pure function of the seed: with ``task_weights`` each
   position draws its task with those weights and takes the next sample of that task's own permutation
   (reshuffled every epoch of that task); without weights every epoch is one shuffled pass over all samples.
   ``repeat=False`` gives a single pass (evaluation), padded at the end with masked copies.
3. Host ``h`` of ``P`` takes positions ``g % P == h``; consecutive ``batch_size`` of them form its batches,
   and every host gets the same number of batches. ``state()["position"]`` counts global positions consumed.
4. tf.data, per sample in parallel (``num_parallel_calls``, deterministic order): read the video's record
   (ranged read of its shard via ``tf.io.gfile``-compatible I/O, or TFDS random access), keep the frames for
   the configured fps / cap, decode JPEG (with libjpeg DCT down-scaling when the target is at least 2x
   smaller), resize to the token budget (antialiased bicubic), patchify (``data_pipeline.vision.patchify_video``),
   expand the prompt's video placeholder and pad everything to its batch's bucket; then batch and prefetch a
   bounded number of batches.

A batch is a ``Batch``, a NamedTuple of numpy arrays (B = batch_size, L = prompt bucket, N = vision bucket in
14x14x2 patches, M = max_segments):

    input_ids int32 [B, L] (left-padded with the pad token), attention_mask int32 [B, L]
    pixel_values float32 [B, N, 1176], pixel_mask bool [B, N]
    grid_thw int32 [B, 3], second_per_grid_ts float32 [B], num_video_tokens int32 [B]
    sample_mask bool [B] (False: padding copy at the end of a single pass)
    segments float32 [B, M, 2], segments_mask bool [B, M], duration float32 [B], task_id int32 [B]
    (index in ``TASKS``), answer int32 [B] (gvqa letter index, else -1)
    id, task, video, sample_json: bytes [B] (sample_json = the full sample record, for the rewards)
    position int64 [B] (global stream position), index int64 [B] (row in the stream's sample list)
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import math
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from data_pipeline import fileio, frames, records, schema
from data_pipeline import vision as qpre
from data_pipeline.prompts import PromptEncoder, expand_video_pad

log = logging.getLogger(__name__)

PATCH_DIM = qpre.PATCH_DIM
SHORT_VIDEO_CHOICES = ("keep", "skip", "error")
_CHUNK = 1 << 16  # positions per RNG chunk of the task draw


class Batch(NamedTuple):
    """One batch of the stream: numpy arrays with the rows first (see the module docstring for the units).

    tf.data carries this structure as it is, so the dataset's signature is these fields.
    """

    input_ids: np.ndarray  # int32 [B, L] left-padded with the pad token
    attention_mask: np.ndarray  # int32 [B, L]
    pixel_values: np.ndarray  # float32 [B, N, 1176]
    pixel_mask: np.ndarray  # bool [B, N]
    grid_thw: np.ndarray  # int32 [B, 3]
    second_per_grid_ts: np.ndarray  # float32 [B]
    num_video_tokens: np.ndarray  # int32 [B]
    sample_mask: np.ndarray  # bool [B]: False for padding copies at the end of a single pass
    segments: np.ndarray  # float32 [B, M, 2] seconds
    segments_mask: np.ndarray  # bool [B, M]
    duration: np.ndarray  # float32 [B] seconds
    task_id: np.ndarray  # int32 [B], index in schema.TASKS
    answer: np.ndarray  # int32 [B], gvqa letter index, else -1
    id: np.ndarray  # bytes [B]
    task: np.ndarray  # bytes [B]
    video: np.ndarray  # bytes [B]
    sample_json: np.ndarray  # bytes [B], the whole sample record (for the rewards)
    position: np.ndarray  # int64 [B], global stream position
    index: np.ndarray  # int64 [B], row in the stream's sample list


class _Prepared(NamedTuple):
    """The host-side part of one sample (``Stream._prepare``, run by ``tf.numpy_function``)."""

    jpegs: Any  # bytes [T], the selected frames' JPEGs
    times: Any  # float32 [T] seconds
    hw: Any  # int32 [2], resize target
    ratio: Any  # int32 [], JPEG DCT down-scaling ratio
    input_ids: Any  # int32 [L]
    attention_mask: Any  # int32 [L]
    segments: Any  # float32 [M, 2]
    segments_mask: Any  # bool [M]
    duration: Any  # float32 []
    task_id: Any  # int32 []
    answer: Any  # int32 []
    num_video_tokens: Any  # int32 []
    id: Any  # bytes []
    task: Any  # bytes []
    video: Any  # bytes []
    sample_json: Any  # bytes []


# The dtypes of _Prepared's fields, as an instance of it (so the two cannot drift apart).
_PREPARED_DTYPES = _Prepared(
    "string", "float32", "int32", "int32", "int32", "int32", "float32", "bool", "float32", "int32", "int32",
    "int32", "string", "string", "string", "string",
)  # fmt: skip


def default_config() -> ml_collections.ConfigDict:
    """Data config (``config.data`` of a training config). Units: seconds, pixels, patches, tokens."""
    c = ml_collections.ConfigDict()
    c.samples = ()  # samples JSONL files (local or gs://), as written by data_pipeline.convert
    c.frames = ""  # extract_frames output directory (local or gs://)
    c.tfds_name = ""  # read samples + frames from this TFDS dataset instead ("tempr1_temporal")
    c.tfds_data_dir = ""
    c.tfds_split = "train"
    c.tokenizer = ""  # local directory loadable by transformers.AutoTokenizer
    c.think = "optional"  # think mode of the prompts: optional | required | forbidden
    c.system_prompt = ""  # "" keeps the chat template's default system turn
    c.chat_template = ""  # "" uses the tokenizer's own (Qwen2.5-VL's if it has none)
    c.task_weights = ml_collections.ConfigDict()  # e.g. {"tg": 1.0, "tal": 0.5}; empty: natural proportions
    c.seed = 0
    c.batch_size = 1  # per host
    c.repeat = True  # False: one pass (evaluation), the last batch padded with masked copies
    c.shuffle = True
    c.fps = 2.0  # frames per second fed to the model (<= the extraction fps)
    c.max_frames = 448  # uniform cap on frames per video
    c.min_pixels = 16 * 28 * 28  # Qwen2.5-VL token budget (TempR1: 3584 visual tokens)
    c.max_pixels = 768 * 28 * 28
    c.total_pixels = 3584 * 28 * 28
    c.vision_buckets = (3584, 7168, 14336)  # patches per sample (4 patches = 1 visual token)
    c.prompt_buckets = (1024, 2048, 4096, 8192)  # prompt tokens, video tokens included
    c.max_segments = 256  # ground-truth intervals per sample (THUMOS14 has up to 218 of a class)
    c.missing_videos = "skip"  # skip | error: samples whose video is not in the frames index
    # keep | skip | error: samples annotated longer than their extracted video (by > frames.ANNOTATION_SLACK_S)
    c.short_videos = "keep"
    c.max_samples = 0  # at most N samples, the same number per task where it has enough (seeded); 0: all
    c.num_parallel_calls = 2  # samples prepared concurrently
    c.prefetch_batches = 2  # batches prepared ahead (bounded host memory)
    c.jpeg_dct_scaling = True  # decode JPEG at 1/2, 1/4, 1/8 scale when the target is that much smaller
    c.resize = "tf"  # tf (tf.image bicubic + antialias) | numpy (data_pipeline.vision.resize_frames)
    return c


def check_buckets(config: ml_collections.ConfigDict, name: str = "config") -> tuple[list[int], list[int]]:
    """(vision buckets, prompt buckets) of a data config, sorted; a ValueError when they cannot be used. ``name``
    is the config block's name in messages (``config.data`` in a training config)."""
    vision = sorted(int(b) for b in config.vision_buckets)
    prompt = sorted(int(b) for b in config.prompt_buckets)
    if not vision or not prompt:
        raise ValueError(f"{name}.vision_buckets and {name}.prompt_buckets must not be empty")
    if any(b % 4 for b in vision):
        raise ValueError(f"{name}.vision_buckets must be multiples of 4 patches, got {vision}")
    if vision[0] < 4 or prompt[0] < 1:
        raise ValueError(f"{name}.vision_buckets {vision} and {name}.prompt_buckets {prompt} must be positive")
    return vision, prompt


@dataclasses.dataclass
class _Video:
    video: str
    num_frames: int
    duration: float
    width: int
    height: int
    fps: float
    locator: Any  # (shard, offset, length) for shards; TFDS row for tfds


class _ShardSource:
    """Frames from ``extract_frames`` shards: index + ranged record reads."""

    def __init__(self, frames_dir: str, name: str = "config") -> None:
        self.name = name  # the config block's name in messages
        if not frames_dir:
            raise ValueError(
                f"{self.name}.frames is empty: give the extract_frames output directory (or tfds_name)"
            )
        if not fileio.exists(frames_dir):
            raise ValueError(f"{self.name}.frames {frames_dir}: directory not found")
        index = records.load_index(frames_dir)
        if not index:
            raise ValueError(
                f"{self.name}.frames {frames_dir}: no *.index.jsonl (run data_pipeline.extract_frames)"
            )
        self.videos = {
            v: _Video(
                v,
                int(e["num_frames"]),
                float(e["duration"]),
                int(e["width"]),
                int(e["height"]),
                float(e.get("fps", 0.0)),
                (e["shard"], int(e["offset"]), int(e["length"])),
            )
            for v, e in index.items()
        }
        self._reader = records.RecordReader()

    def load(self, v: _Video) -> tuple[list[bytes], np.ndarray]:
        shard, offset, length = v.locator
        rec = records.parse_numpy(self._reader.read(shard, offset, length))
        return rec["frames"], rec["frame_times"]


class _TfdsSource:
    """Samples and frames from the ``tempr1_temporal`` TFDS dataset (random access by record offsets)."""

    def __init__(self, name: str, data_dir: str, split: str) -> None:
        import tensorflow_datasets as tfds

        from data_pipeline import tfds_builder

        builder = tfds.builder(name, data_dir=data_dir or None)
        if split not in builder.info.splits:
            raise ValueError(
                f"TFDS {name} in {data_dir}: no split {split!r} (has {list(builder.info.splits)})"
            )
        rows = (builder.info.metadata or {}).get("rows", {}).get(split)
        if rows is None:
            raise ValueError(f"TFDS {name} ({data_dir}) has no row metadata for split {split!r}")
        self.locations = tfds_builder.record_locations(builder, split)
        if len(self.locations) != len(rows):
            raise ValueError(
                f"TFDS {name} split {split}: {len(self.locations)} records, {len(rows)} metadata rows"
            )
        self.samples = [json.loads(r["sample"]) for r in rows]
        self.videos = {}
        for i, r in enumerate(rows):
            vid = self.samples[i]["video"]
            if vid not in self.videos:
                self.videos[vid] = _Video(
                    vid,
                    int(r["num_frames"]),
                    float(r["duration"]),
                    int(r["width"]),
                    int(r["height"]),
                    float(r["fps"]),
                    i,
                )
        self._reader = records.RecordReader()

    def load(self, v: _Video) -> tuple[list[bytes], np.ndarray]:
        # The builder's serialized_info stores frames as a JPEG bytes list and frame_times as a float list
        # (tf.train.Example), so the JPEG bytes are taken as they are, with no image decoding by TFDS.
        import tensorflow as tf

        fm = tf.train.Example.FromString(self._reader.read(*self.locations[int(v.locator)])).features.feature
        return list(fm["frames"].bytes_list.value), np.asarray(fm["frame_times"].float_list.value, np.float32)


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_live_streams() -> None:
    # A tf.data iterator whose generator / numpy_function threads outlive the interpreter's finalization can
    # hang the exit: close every stream while Python is still fully alive.
    for s in list(_LIVE):
        s.close()


def _fingerprint(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class Stream:
    """Iterator of numpy batches with ``state()`` for exact resumption (see the module docstring)."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        *,
        process_index: int = 0,
        process_count: int = 1,
        state: Mapping[str, Any] | None = None,
        tokenizer=None,
        name: str = "config",
    ) -> None:
        import tensorflow as tf

        self.tf = tf
        self.config = c = config
        self.name = name  # how messages name the config block, e.g. "config.data" (its keys follow)
        if not (
            isinstance(process_count, int)
            and isinstance(process_index, int)
            and process_count >= 1
            and 0 <= process_index < process_count
        ):
            raise ValueError(
                f"need integers 0 <= process_index < process_count, got {process_index}, {process_count}"
            )
        self.process_index, self.process_count = process_index, process_count
        if c.batch_size < 1:
            raise ValueError(f"{self.name}.batch_size must be >= 1, got {c.batch_size}")
        if c.missing_videos not in ("skip", "error"):
            raise ValueError(f"{self.name}.missing_videos must be 'skip' or 'error', got {c.missing_videos!r}")
        if c.get("short_videos", "keep") not in SHORT_VIDEO_CHOICES:
            raise ValueError(f"{self.name}.short_videos must be one of {SHORT_VIDEO_CHOICES}, got {c.short_videos!r}")
        if c.resize not in ("tf", "numpy"):
            raise ValueError(f"{self.name}.resize must be 'tf' or 'numpy', got {c.resize!r}")
        self.vision_buckets, self.prompt_buckets = check_buckets(c, self.name)

        self._read_samples()  # 1. samples and their videos
        self._encode_prompts(tokenizer)  # 2. tokenizer and prompts
        self._plan_sizes()  # 3. per-sample sizes from the index (no decoding)
        self._mix()  # 4. mixing
        # 5. Resume point.
        self._position0 = self._position = 0
        self._iter: Iterator | None = None
        if state is not None:
            self.restore(state)
        _LIVE.add(self)
        self.num_samples = len(self.samples)
        self.samples_per_task = {t: int(len(self.by_task[k])) for k, t in enumerate(schema.TASKS)}

    # ------------------------------------------------------------------------------------------------
    # Construction steps

    def _read_samples(self) -> None:
        """Samples (validated) joined to their videos in the frames index (or the TFDS dataset)."""
        c = self.config
        origins: list[int] = []
        if c.tfds_name:
            self.source = _TfdsSource(c.tfds_name, c.tfds_data_dir, c.tfds_split)
            samples = self.source.samples
            self.sources = [f"tfds:{c.tfds_name}/{c.tfds_split}"]
            origins = [0] * len(samples)
        else:
            if not c.samples:
                raise ValueError(f"{self.name}.samples is empty: give samples JSONL files (or tfds_name)")
            try:
                samples = schema.read_samples(list(c.samples), origins=origins)
            except ValueError as e:
                raise ValueError(f"{self.name}.samples: {e}") from None
            self.sources = [str(p) for p in c.samples]
            self.source = _ShardSource(c.frames, self.name)
        self.source_totals = np.bincount(np.asarray(origins, np.int64), minlength=len(self.sources))
        missing = [s for s in samples if s["video"] not in self.source.videos]
        self.missing_videos = sorted({s["video"] for s in missing})
        if missing:
            msg = (
                f"{len(missing)} of {len(samples)} samples refer to {len(self.missing_videos)} videos "
                "missing "
                f"from the frames index (e.g. {self.missing_videos[:5]})"
            )
            if c.missing_videos == "error":
                raise ValueError(msg)
            log.warning("%s: skipped", msg)
        # An mcq sample without a duration (its benchmark gives none) takes its video's from the frames index.
        videos = self.source.videos
        samples = [s if s.get("duration") is not None or s["video"] not in videos
                   else dict(s, duration=videos[s["video"]].duration) for s in samples]
        keep = [s["video"] in videos for s in samples]
        keep = self._check_short_videos(samples, keep)
        picked = [i for i in self._subset([s for s, k in zip(samples, keep, strict=True) if k])]
        kept = [i for i, k in enumerate(keep) if k]
        kept = [kept[j] for j in picked]
        self.samples = [samples[i] for i in kept]
        self.origin = np.asarray([origins[i] for i in kept], np.int64)
        if not self.samples:
            raise ValueError("no sample left: none of the samples' videos is in the frames index")

    def _check_short_videos(self, samples: list[dict[str, Any]], keep: list[bool]) -> list[bool]:
        """Samples annotated longer than their extracted video (``frames.shorter_than_annotation``): counted,
        reported (one warning), then kept, skipped or refused as ``short_videos`` says."""
        short = [i for i, s in enumerate(samples) if keep[i]
                 and frames.shorter_than_annotation(float(s["duration"]), self.source.videos[s["video"]].duration)]
        self.short_videos = sorted({samples[i]["video"] for i in short})
        if not short:
            return keep
        how = self.config.get("short_videos", "keep")
        s = samples[short[0]]
        msg = (f"{len(short)} of {len(samples)} samples ({len(self.short_videos)} videos) are annotated longer than "
               f"their extracted video by more than {frames.ANNOTATION_SLACK_S:g} s, so part of their ground truth "
               f"may lie past the last frame (e.g. {s['id']!r}: {float(s['duration']):g} s annotated, video "
               f"{s['video']!r} {self.source.videos[s['video']].duration:g} s)")
        if how == "error":
            raise ValueError(f"{msg}; {self.name}.short_videos='error'")
        log.warning("%s: %s", msg, "skipped (short_videos='skip')" if how == "skip" else
                    f"kept ({self.name}.short_videos='skip' drops them)")
        if how == "skip":
            keep = list(keep)
            for i in short:
                keep[i] = False
        return keep

    def _subset(self, samples: list[dict[str, Any]]) -> list[int]:
        """Indices (in order) of at most ``max_samples`` of ``samples`` (all when 0): ``stratified_subset``."""
        n = int(self.config.get("max_samples", 0) or 0)
        if n <= 0 or n >= len(samples):
            return list(range(len(samples)))
        return stratified_subset([s["task"] for s in samples], n, seed=int(self.config.seed))

    def _encode_prompts(self, tokenizer: Any) -> None:
        """The tokenizer (``config.tokenizer`` when not given) and every sample's prompt ids, tokenized once."""
        c = self.config
        if tokenizer is None:
            if not c.tokenizer:
                raise ValueError(f"{self.name}.tokenizer is empty: give a tokenizer directory")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(c.tokenizer)
        self.tokenizer = tokenizer
        self.encoder = PromptEncoder(
            tokenizer,
            think=c.think,
            system_prompt=c.system_prompt or None,
            chat_template=c.chat_template or None,
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.prompts = self.encoder.encode_many(self.samples)

    def _plan_sizes(self) -> None:
        """Frames, resize target, patches, visual tokens and prompt length per sample; checked against the buckets."""
        c = self.config
        n = len(self.samples)
        self.n_frames = np.zeros(n, np.int64)
        self.target_hw = np.zeros((n, 2), np.int64)
        self.n_patches = np.zeros(n, np.int64)
        self.n_tokens = np.zeros(n, np.int64)
        self.ratio = np.ones(n, np.int64)
        cache: dict[str, tuple] = {}
        for i, s in enumerate(self.samples):
            v = self.source.videos[s["video"]]
            if v.video not in cache:
                cache[v.video] = self._video_plan(v)
            self.n_frames[i], h, w, self.ratio[i], self.n_patches[i], self.n_tokens[i] = cache[v.video]
            self.target_hw[i] = (h, w)
        self.prompt_len = np.array([len(p) - 1 for p in self.prompts], np.int64) + self.n_tokens
        too_long = np.flatnonzero(self.prompt_len > self.prompt_buckets[-1])
        if len(too_long):
            i = int(too_long[0])
            raise ValueError(
                f"{len(too_long)} prompts exceed the largest prompt bucket {self.prompt_buckets[-1]}"
                f" (e.g. sample {self.samples[i]['id']!r}: {self.prompt_len[i]} tokens); raise "
                f"{self.name}.prompt_buckets or lower the visual budget"
            )
        too_big = np.flatnonzero(self.n_patches > self.vision_buckets[-1])
        if len(too_big):
            i = int(too_big[0])
            raise ValueError(
                f"{len(too_big)} videos exceed the largest vision bucket {self.vision_buckets[-1]}"
                f" (e.g. sample {self.samples[i]['id']!r}: {self.n_patches[i]} patches); raise "
                f"{self.name}.vision_buckets"
            )
        nseg = np.array([len(s["segments"]) for s in self.samples])
        if nseg.max() > c.max_segments:
            i = int(np.argmax(nseg))
            raise ValueError(
                f"sample {self.samples[i]['id']!r} has {nseg[i]} segments > {self.name}.max_segments "
                f"{c.max_segments}"
            )

    def _mix(self) -> None:
        """Task mixing (``config.task_weights``) and the stream's fingerprint."""
        c = self.config
        self.task_of = np.array([schema.TASKS.index(s["task"]) for s in self.samples], np.int64)
        self.by_task = [np.flatnonzero(self.task_of == t) for t in range(len(schema.TASKS))]
        weights = dict(c.task_weights.items()) if c.task_weights else {}
        unknown = set(weights) - set(schema.TASKS)
        if unknown:
            raise ValueError(
                f"{self.name}.task_weights has unknown task(s) {sorted(unknown)}; tasks: {schema.TASKS}"
            )
        if weights:
            w = np.array([float(weights.get(t, 0.0)) for t in schema.TASKS])
            if np.any(w < 0) or w.sum() <= 0:
                raise ValueError(f"{self.name}.task_weights must be >= 0 with a positive sum, got {weights}")
            empty = [schema.TASKS[t] for t in range(len(w)) if w[t] > 0 and len(self.by_task[t]) == 0]
            if empty:
                raise ValueError(f"{self.name}.task_weights gives weight to task(s) {empty} without any sample")
            self.weights = w / w.sum()
        else:
            self.weights = None
        self.fingerprint = _fingerprint(
            {
                "seed": int(c.seed),
                "weights": None if self.weights is None else self.weights.round(12).tolist(),
                "shuffle": bool(c.shuffle),
                "repeat": bool(c.repeat),
                "ids": hashlib.sha256("\n".join(s["id"] for s in self.samples).encode()).hexdigest(),
            }
        )
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._chunk_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def mixture(self) -> dict[str, Any]:
        """What the stream holds and how often each part is drawn: ``{"tasks": {task: {"samples", "share"}},
        "sources": [{"path", "read", "samples", "tasks", "share"}]}``; ``share`` is the expected fraction of a
        step's prompts (``task_weights``, else the natural proportions), ``read`` the source's valid lines
        before videos without frames (or filtered ones) were dropped."""
        counts = np.array([len(m) for m in self.by_task], np.float64)
        share = self.weights if self.weights is not None else counts / max(counts.sum(), 1.0)
        per_sample = share[self.task_of] / counts[self.task_of]
        tasks = {t: {"samples": int(counts[k]), "share": float(share[k])} for k, t in enumerate(schema.TASKS)
                 if counts[k] or share[k]}
        sources = []
        for k, path in enumerate(self.sources):
            mine = self.origin == k
            sources.append({"path": path, "read": int(self.source_totals[k]), "samples": int(mine.sum()),
                            "tasks": sorted({schema.TASKS[t] for t in self.task_of[mine]}),
                            "share": float(per_sample[mine].sum())})
        return {"tasks": tasks, "sources": sources}

    # ------------------------------------------------------------------------------------------------
    # Sizes

    def _video_plan(self, v: _Video) -> tuple[int, int, int, int, int, int]:
        """(frames used, target h, target w, JPEG DCT ratio, patches, visual tokens) of one video."""
        c = self.config
        n = min(frames.num_sampled(v.duration, c.fps, c.max_frames), v.num_frames)
        h, w = qpre.video_resize_target(
            n,
            v.height,
            v.width,
            min_pixels=c.min_pixels,
            max_pixels=c.max_pixels,
            total_pixels=c.total_pixels,
        )
        grid = (math.ceil(n / qpre.TEMPORAL_PATCH_SIZE), h // qpre.PATCH_SIZE, w // qpre.PATCH_SIZE)
        ratio = 1
        if c.jpeg_dct_scaling:
            for r in (8, 4, 2):
                if -(-v.height // r) >= h and -(-v.width // r) >= w:
                    ratio = r
                    break
        return n, h, w, ratio, grid[0] * grid[1] * grid[2], qpre.num_video_tokens(grid)

    # ------------------------------------------------------------------------------------------------
    # Order

    def _perm(self, task: int, epoch: int) -> np.ndarray:
        key = (task, epoch)
        with self._lock:
            p = self._perm_cache.get(key)
            if p is None:
                members = self.by_task[task] if task >= 0 else np.arange(self.num_samples)
                if self.config.shuffle:
                    rng = np.random.default_rng([int(self.config.seed), 7, task + 1, epoch])
                    p = members[rng.permutation(len(members))]
                else:
                    p = members
                if len(self._perm_cache) > 64:
                    self._perm_cache.clear()
                self._perm_cache[key] = p
        return p

    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Tasks drawn for positions [c*_CHUNK, (c+1)*_CHUNK) and each task's draw count before the chunk."""
        with self._lock:
            if c in self._chunk_cache:
                return self._chunk_cache[c]
        start = np.zeros(len(schema.TASKS), np.int64)
        prev = c - 1
        while prev >= 0 and prev not in self._chunk_cache:
            prev -= 1
        if prev >= 0:
            tasks, before = self._chunk_cache[prev]
            start = before + np.bincount(tasks, minlength=len(schema.TASKS))
        for k in range(prev + 1, c + 1):
            rng = np.random.default_rng([int(self.config.seed), 11, k])
            tasks = rng.choice(len(schema.TASKS), size=_CHUNK, p=self.weights).astype(np.int64)
            with self._lock:
                self._chunk_cache[k] = (tasks, start)
                for old in [x for x in self._chunk_cache if x < k - 2]:
                    del self._chunk_cache[old]
            start = start + np.bincount(tasks, minlength=len(schema.TASKS))
        return self._chunk_cache[c]

    def sample_at(self, g: int) -> int:
        """Sample index at global position ``g`` (``-1``: padding past the end of a single pass)."""
        if not self.config.repeat:
            if g >= self.num_samples:
                return -1
            return int(self._perm(-1, 0)[g])
        if self.weights is None:
            epoch, k = divmod(g, self.num_samples)
            return int(self._perm(-1, epoch)[k])
        c, off = divmod(g, _CHUNK)
        tasks, before = self._chunk(c)
        t = int(tasks[off])
        k = int(before[t] + np.count_nonzero(tasks[:off] == t))
        n_t = len(self.by_task[t])
        epoch, r = divmod(k, n_t)
        return int(self._perm(t, epoch)[r])

    def batches_per_pass(self) -> int | None:
        """Batches each host yields in one pass (``repeat=False``), None for an endless stream."""
        if self.config.repeat:
            return None
        per_host = -(-self.num_samples // self.process_count)
        return -(-per_host // self.config.batch_size)

    def _host_positions(self) -> Iterator[list[tuple[int, int]]]:
        """Batches of (global position, sample index) for this host, from the resume point on.

        Host ``h`` of ``P`` takes local indices ``jj`` at global positions ``jj * P + h``. A single pass
        (``repeat=False``) has the same number of batches on every host and resumes at the batch boundary at
        or before the saved position (a changed host count may repeat a few samples, never skip one)."""
        B, P, h = self.config.batch_size, self.process_count, self.process_index
        j = max(0, -(-(self._position0 - h) // P))  # first local index whose position is >= position0
        total = self.batches_per_pass()
        if total is not None:
            j = (j // B) * B
        while total is None or j < total * B:
            yield [(jj * P + h, self.sample_at(jj * P + h)) for jj in range(j, j + B)]
            j += B

    # ------------------------------------------------------------------------------------------------
    # Per-sample work

    def _bucket(self, value: int, buckets: list[int]) -> int:
        return buckets[int(np.searchsorted(buckets, value))]

    def _prepare(self, index: int, valid: bool, L: int, N: int):
        """Host-side part of one sample: frames to decode + prompt + ground truth (all numpy)."""
        s = self.samples[index]
        v = self.source.videos[s["video"]]
        jpegs, times = self.source.load(v)
        times = np.asarray(times, np.float64)
        sel = frames.select_frames(times, v.duration, self.config.fps, self.config.max_frames)
        if len(sel) != self.n_frames[index]:
            raise RuntimeError(f"video {v.video}: record has {len(times)} frames, index said {v.num_frames}")
        jp = np.array([jpegs[i] for i in sel], dtype=object)
        t_sel = times[sel].astype(np.float32)
        ids = expand_video_pad(self.prompts[index], self.encoder.video_pad_id, int(self.n_tokens[index]))
        input_ids = np.full(L, self.pad_id, np.int32)
        attn = np.zeros(L, np.int32)
        input_ids[L - len(ids) :] = ids
        attn[L - len(ids) :] = 1
        M = self.config.max_segments
        segs = np.zeros((M, 2), np.float32)
        seg_mask = np.zeros(M, bool)
        if s["segments"]:
            segs[: len(s["segments"])] = np.asarray(s["segments"], np.float32)
            seg_mask[: len(s["segments"])] = True
        h, w = self.target_hw[index]
        return _Prepared(
            jpegs=jp,
            times=t_sel,
            hw=np.array([h, w], np.int32),
            ratio=np.int32(self.ratio[index]),
            input_ids=input_ids,
            attention_mask=attn,
            segments=segs,
            segments_mask=seg_mask,
            duration=np.float32(s["duration"]),
            task_id=np.int32(self.task_of[index]),
            answer=np.int32(schema.answer_index(s)),
            num_video_tokens=np.int32(self.n_tokens[index]),
            id=s["id"].encode(),
            task=s["task"].encode(),
            video=s["video"].encode(),
            sample_json=schema.dumps(s).encode(),
        )

    def _patchify(self, frames_u8: np.ndarray, times: np.ndarray, hw: np.ndarray, N: int):
        """Resize (numpy path) + Qwen2.5-VL's patchify + padding to ``N`` patches."""
        if self.config.resize == "numpy":
            frames_u8 = qpre.resize_frames(frames_u8, int(hw[0]), int(hw[1]))
        fps = None
        if len(times) < 2 or not times[-1] > times[0]:
            fps = self.config.fps
        vi = qpre.patchify_video(frames_u8, times, fps=fps)
        n = vi.pixel_values.shape[0]
        out = np.zeros((N, PATCH_DIM), np.float32)
        out[:n] = vi.pixel_values
        return out, vi.grid_thw.astype(np.int32), np.float32(vi.second_per_grid_ts)

    def _decode(self, jpegs, hw, ratio):
        """JPEG frames -> uint8 [T, h, w, 3]: decoded (DCT-scaled by ``ratio``) and resized frame by frame,
        so the full-size frames of a video never sit in memory together."""
        tf = self.tf
        resize = self.config.resize == "tf"

        def dec(r):
            def one(b):
                img = tf.io.decode_jpeg(b, channels=3, ratio=r)
                if resize:
                    img = tf.image.resize(img, hw, method="bicubic", antialias=True)
                    img = tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)
                return img

            return lambda: tf.map_fn(
                one,
                jpegs,
                fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
                parallel_iterations=4,
            )

        idx = tf.cast(tf.math.log(tf.cast(ratio, tf.float32)) / math.log(2.0) + 0.5, tf.int32)
        return tf.switch_case(idx, [dec(1), dec(2), dec(4), dec(8)])

    def _load(self, elem) -> Batch:
        tf = self.tf
        L, N = elem["L"], elem["N"]
        out = tf.numpy_function(
            lambda i, v, ll, nn: self._prepare(int(i), bool(v), int(ll), int(nn)),
            [elem["index"], elem["valid"], L, N],
            [tf.as_dtype(d) for d in _PREPARED_DTYPES],
            stateful=False,
        )
        p = _Prepared(*out)
        p.jpegs.set_shape([None])
        p.hw.set_shape([2])
        imgs = self._decode(p.jpegs, p.hw, p.ratio)
        pix, grid, spg = tf.numpy_function(
            lambda f, t, s, nn: self._patchify(f, t, s, int(nn)),
            [imgs, p.times, p.hw, N],
            [tf.float32, tf.int32, tf.float32],
            stateful=False,
        )
        pix.set_shape([None, PATCH_DIM])
        grid.set_shape([3])
        M = self.config.max_segments
        return Batch(
            input_ids=tf.ensure_shape(p.input_ids, [None]),
            attention_mask=tf.ensure_shape(p.attention_mask, [None]),
            pixel_values=pix,
            pixel_mask=tf.range(N) < tf.reduce_prod(grid),
            grid_thw=grid,
            second_per_grid_ts=tf.ensure_shape(spg, []),
            num_video_tokens=tf.ensure_shape(p.num_video_tokens, []),
            sample_mask=elem["valid"],
            segments=tf.ensure_shape(p.segments, [M, 2]),
            segments_mask=tf.ensure_shape(p.segments_mask, [M]),
            duration=tf.ensure_shape(p.duration, []),
            task_id=tf.ensure_shape(p.task_id, []),
            answer=tf.ensure_shape(p.answer, []),
            id=tf.ensure_shape(p.id, []),
            task=tf.ensure_shape(p.task, []),
            video=tf.ensure_shape(p.video, []),
            sample_json=tf.ensure_shape(p.sample_json, []),
            position=elem["position"],
            index=elem["index"],
        )

    # ------------------------------------------------------------------------------------------------
    # The dataset

    def _elements(self) -> Iterator[dict[str, Any]]:
        for batch in self._host_positions():
            idx = [i if i >= 0 else 0 for _, i in batch]
            L = self._bucket(int(max(self.prompt_len[i] for i in idx)), self.prompt_buckets)
            N = self._bucket(int(max(self.n_patches[i] for i in idx)), self.vision_buckets)
            for (g, i), ii in zip(batch, idx, strict=True):
                yield {
                    "position": np.int64(g),
                    "index": np.int64(ii),
                    "valid": np.bool_(i >= 0),
                    "L": np.int32(L),
                    "N": np.int32(N),
                }

    def dataset(self):
        """The ``tf.data.Dataset`` of batches (from the current resume point)."""
        tf = self.tf
        sig = {
            "position": tf.TensorSpec([], tf.int64),
            "index": tf.TensorSpec([], tf.int64),
            "valid": tf.TensorSpec([], tf.bool),
            "L": tf.TensorSpec([], tf.int32),
            "N": tf.TensorSpec([], tf.int32),
        }
        ds = tf.data.Dataset.from_generator(self._elements, output_signature=sig)
        ds = ds.map(
            self._load, num_parallel_calls=max(1, int(self.config.num_parallel_calls)), deterministic=True
        )
        ds = ds.batch(self.config.batch_size, drop_remainder=True)
        ds = ds.prefetch(max(0, int(self.config.prefetch_batches)))
        opts = tf.data.Options()
        opts.deterministic = True
        opts.autotune.enabled = False
        opts.threading.private_threadpool_size = max(2, int(self.config.num_parallel_calls) + 1)
        return ds.with_options(opts)

    def __iter__(self) -> Stream:
        if self._iter is None:
            self._iter = self.dataset().as_numpy_iterator()
        return self

    def __next__(self) -> Batch:
        if self._iter is None:
            iter(self)
        batch = next(self._iter)
        # Every host consumes the same local indices in lockstep: after local index j the global stream has
        # consumed positions < (j + 1) * P.
        last = int(batch.position[-1])
        self._position = ((last - self.process_index) // self.process_count + 1) * self.process_count
        return batch

    def close(self) -> None:
        """Stop the background tf.data work (also done at interpreter exit)."""
        it, self._iter = self._iter, None
        if it is not None:
            del it
            import gc

            gc.collect()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved ``state()`` (before the first batch is drawn): the same dataset, seed and mixing
        (checked by fingerprint), resumed at its position."""
        if self._iter is not None:
            raise ValueError("stream.restore: the stream has already started; restore before the first batch")
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                "stream state belongs to another dataset / seed / mixing (fingerprint "
                f"{state.get('fingerprint')} != {self.fingerprint}); start without a state"
            )
        self._position0 = self._position = int(state["position"])

    def state(self) -> dict[str, Any]:
        """Resume point after the batches handed out so far (global positions, valid across host counts)."""
        return {"position": int(self._position), "fingerprint": self.fingerprint}

    def bucket_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """Every (input_ids, pixel_values) shape a batch can have: compile these ahead if needed."""
        B = self.config.batch_size
        return [
            {"input_ids": (B, L), "pixel_values": (B, N, PATCH_DIM)}
            for L in self.prompt_buckets
            for N in self.vision_buckets
        ]


def make_stream(
    config: ml_collections.ConfigDict,
    *,
    process_index: int = 0,
    process_count: int = 1,
    state: Mapping[str, Any] | None = None,
    tokenizer=None,
    name: str = "config",
) -> Stream:
    """Build the stream for this host (see ``Stream`` and the module docstring). ``name``: how messages name
    the config block (``"config.data"`` in a training config: ``config.data.prompt_buckets``)."""
    return Stream(
        config, process_index=process_index, process_count=process_count, state=state, tokenizer=tokenizer,
        name=name,
    )


def stratified_subset(tasks: Sequence[str], n: int, *, seed: int) -> list[int]:
    """Sorted indices of ``n`` of the rows whose tasks are ``tasks``: the same number per task (a task with
    fewer rows gives all of them, the rest is shared by the others), each task's rows drawn at random
    (``numpy.random.default_rng([seed, 13, task])``)."""
    by_task = {t: [i for i, x in enumerate(tasks) if x == t] for t in schema.TASKS}
    quota = {t: 0 for t in schema.TASKS}
    left = min(n, len(tasks))
    while left > 0:
        open_ = [t for t in schema.TASKS if quota[t] < len(by_task[t])]
        share, extra = divmod(left, len(open_))
        for k, t in enumerate(open_):
            add = min(share + (k < extra), len(by_task[t]) - quota[t])
            quota[t] += add
            left -= add
    out: list[int] = []
    for k, t in enumerate(schema.TASKS):
        rows = np.asarray(by_task[t], np.int64)
        rng = np.random.default_rng([int(seed), 13, k])
        out += rows[rng.permutation(len(rows))[: quota[t]]].tolist()
    return sorted(out)


def batch_samples(batch: Batch, *, valid_only: bool = True) -> list[dict[str, Any]]:
    """The sample records of a batch (for ``tempr1_jax.rewards.compute_rewards``), padding rows dropped."""
    out = []
    for j, raw in enumerate(batch.sample_json):
        if valid_only and not bool(batch.sample_mask[j]):
            continue
        out.append(json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw))
    return out


def samples_of(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Read and validate samples JSONL files (``schema.read_samples``)."""
    return schema.read_samples(list(paths))
