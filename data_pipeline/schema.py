"""The unified samples record (docs/formats.md), the rules for messy annotations, and samples JSONL I/O.

A sample is one JSON object per line::

    {"id": "3MSZA#0", "task": "tg", "video": "3MSZA", "duration": 30.96,
     "segments": [[24.3, 30.4]], "query": "person turn a light on.", "source": "charades_sta:test"}

Required: ``id`` (unique string), ``task`` (one of ``TASKS``), ``video``, ``duration`` (seconds > 0; may be
absent for the evaluation-only ``mcq``, whose benchmarks do not give it: the stream then takes the video's),
``segments`` (list of ``[start, end]`` seconds with ``0 <= start < end <= duration``; for ``dtg`` in query
order; ``[]`` for mcq), ``source`` (``dataset:split``), plus per task: ``query`` (tg, vhd), ``queries`` (dtg, as
many as segments), ``question`` / ``options`` / ``answer`` (gvqa, mcq; ``answer`` is the letter of the correct
option, options are lettered A, B, ... in order), ``category`` (mcq: the benchmark's dimension or task type) and
``action`` (tal). Optional ``released_segments``: the ground truth as the dataset released it, written by a
converter that changed it (clipped it to the video, or dropped a segment past the end), which the metrics score
against (``check_ground_truth(sample, as_released=True)``). Extra fields are kept as they are.

Messy input rules (``RULES``): every problem found while converting is reported with the file, the line
(or, for whole-document JSON, the key path) and the field, and counted in the conversion summary. Nothing is
dropped silently; "fail" problems stop the command with a one-line reason.
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from data_pipeline import fileio

# docs/formats.md: the task ids. mcq (general multiple-choice QA) is evaluation-only: the trainer refuses it
# (tempr1_jax.train), the rewards and metrics score it. New tasks go last: the stream's seeded task draws index
# this tuple, and a trailing task of weight 0 leaves every earlier draw unchanged.
TASKS = ("tg", "dtg", "vhd", "gvqa", "tal", "mcq")
TRAIN_TASKS = TASKS[:5]  # the tasks TempR1 trains on
OPTION_LETTERS = "ABCDEFGH"  # options are lettered A, B, ... in order
THINK_MODES = ("optional", "required", "forbidden")  # docs/rewards.md: whether <think> may / must / must not appear
# (min, max) ground-truth segments per task (None: unbounded)
_SEGMENT_COUNTS = {"tg": (1, 1), "dtg": (1, None), "vhd": (1, None), "gvqa": (1, None), "tal": (0, None), "mcq": (0, 0)}
REQUIRED_FIELDS = ("id", "task", "video", "duration", "segments", "source")
TASK_FIELDS = {
    "tg": ("query",),
    "dtg": ("queries",),
    "vhd": ("query",),
    "gvqa": ("question", "options", "answer"),
    "tal": ("action",),
    "mcq": ("question", "options", "answer", "category"),
}
CHOICE_TASKS = ("gvqa", "mcq")  # tasks whose answer is an option letter

# reason -> (action, meaning). Actions: "clip" (value changed, kept), "drop_segment" (one interval removed;
# for dtg its query goes with it), "drop_sample" (record not written), "skip" (not an error: a record that
# is not part of the requested output), "fail" (the command stops, exit 2).
RULES: dict[str, tuple[str, str]] = {
    "clipped_start": ("clip", "segment start < 0: set to 0"),
    "clipped_end": ("clip", "segment end > duration: set to the duration"),
    "bad_segment": ("drop_segment", "segment is not a [start, end] pair of finite numbers"),
    "reversed_segment": ("drop_segment", "segment start > end"),
    "segment_after_end": ("drop_segment", "segment starts at or after the end of the video"),
    "empty_segment": ("drop_segment", "segment has zero length (start == end, after clipping)"),
    "ambiguous_excluded": ("drop_segment", "THUMOS14 'Ambiguous' instance: not an action class, excluded"),
    "bad_json": ("drop_sample", "JSONL line is not a JSON object"),
    "bad_line": ("drop_sample", "text / csv line does not parse"),
    "missing_field": ("drop_sample", "a required field is absent, empty or of the wrong type"),
    "missing_duration": ("drop_sample", "duration absent, not a number, or <= 0"),
    "unknown_video": ("drop_sample", "video id absent from the file that gives durations / grounding"),
    "length_mismatch": ("drop_sample", "sentences and timestamps lists differ in length"),
    "answer_not_in_options": ("drop_sample", "the answer text equals none of the options"),
    "ambiguous_answer": ("drop_sample", "the answer text equals several options"),
    "no_segments": ("drop_sample", "no valid segment left"),
    "duplicate_id": ("drop_sample", "id already written by an earlier record (the first one is kept)"),
    "no_annotations": ("skip", "video without any annotation (e.g. an unlabeled test split)"),
    "other_split": ("skip", "record belongs to a split not selected with --split"),
    "unused_grounding": ("skip", "grounding entry without a matching question row"),
}


class InputError(ValueError):
    """A problem that stops a conversion (the "fail" rule): unreadable file, malformed document, bad usage."""


def where(file: str, line: int | None = None, key: str | None = None) -> str:
    """Location string: ``file:line`` for line-based files, ``file:$.key.path`` for JSON documents."""
    if line is not None:
        return f"{file}:{line}"
    if key is not None:
        return f"{file}:$.{key}"
    return str(file)


class Report:
    """Collects every issue met during a conversion; ``summary()`` counts them by reason and action."""

    def __init__(self) -> None:
        self.issues: list[dict[str, str]] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.records_read = 0

    def add(self, reason: str, loc: str, field: str, message: str) -> None:
        """Record one issue. ``loc`` from ``where``; ``field`` names the field (``segments[1]``)."""
        if reason not in RULES:
            raise KeyError(f"unknown rule {reason!r}")
        action = RULES[reason][0]
        self.counts[reason] += 1
        self.issues.append(
            {
                "reason": reason,
                "action": action,
                "where": loc,
                "field": field,
                "message": f"{loc}: {field}: {message} [{reason} -> {action}]",
            }
        )

    def messages(self, reason: str | None = None) -> list[str]:
        """All messages, or those of one reason."""
        return [i["message"] for i in self.issues if reason is None or i["reason"] == reason]

    def count_actions(self) -> dict[str, int]:
        """Issue counts per action (clip / drop_segment / drop_sample / skip)."""
        out: collections.Counter[str] = collections.Counter()
        for reason, n in self.counts.items():
            out[RULES[reason][0]] += n
        return dict(out)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: counts per reason (with action and meaning) and every message."""
        return {
            "records_read": self.records_read,
            "issues": {
                r: {"count": n, "action": RULES[r][0], "meaning": RULES[r][1]}
                for r, n in sorted(self.counts.items())
            },
            "actions": self.count_actions(),
            "messages": self.messages(),
        }


def to_float(value: Any) -> float | None:
    """A finite float from a number or numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None


def clean_duration(value: Any, report: Report, loc: str, field: str = "duration") -> float | None:
    """A positive finite duration in seconds, or None after reporting ``missing_duration``."""
    d = to_float(value)
    if d is None or d <= 0:
        report.add("missing_duration", loc, field, f"duration {value!r} is not a positive number")
        return None
    return d


def _num(x: float) -> str:
    """A number in a message with every digit it has: ``95.03999999999999``, not ``95.04``; whole numbers bare."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else repr(float(x))


def clean_segment(raw: Any, duration: float, report: Report, loc: str, field: str) -> list[float] | None:
    """Apply the segment rules to one ``[start, end]``: returns the (clipped) pair or None if dropped."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        report.add("bad_segment", loc, field, f"{raw!r} is not a [start, end] pair")
        return None
    s, e = to_float(raw[0]), to_float(raw[1])
    if s is None or e is None:
        report.add("bad_segment", loc, field, f"{raw!r} has a non-numeric or non-finite bound")
        return None
    if s > e:
        report.add("reversed_segment", loc, field, f"start {_num(s)} > end {_num(e)}")
        return None
    if s >= duration:
        report.add("segment_after_end", loc, field, f"start {_num(s)} >= duration {_num(duration)}")
        return None
    if s < 0:
        report.add("clipped_start", loc, field, f"start {_num(s)} < 0 set to 0")
        s = 0.0
    if e > duration:
        report.add(
            "clipped_end", loc, field, f"end {_num(e)} > duration {_num(duration)} set to {_num(duration)}"
        )
        e = duration
    if e <= s:
        report.add("empty_segment", loc, field, f"[{_num(s)}, {_num(e)}] has zero length")
        return None
    return [s, e]


def released_segment(raw: Any) -> list[float] | None:
    """A raw segment as the metrics score it (``released_segments``): ``[start, end]`` floats when it is a pair
    of finite numbers with ``start <= end`` (whatever its place relative to the video), else None (a malformed or
    reversed segment is scored by no evaluator)."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        return None
    s, e = to_float(raw[0]), to_float(raw[1])
    return None if s is None or e is None or s > e else [s, e]


def clean_segments(
    raws: Any, duration: float, report: Report, loc: str, field: str = "segments"
) -> list[list[float]]:
    """Apply the segment rules to a list of segments (each problem reported with its index)."""
    if not isinstance(raws, (list, tuple)):
        report.add("bad_segment", loc, field, f"{raws!r} is not a list of [start, end] pairs")
        return []
    out = []
    for i, raw in enumerate(raws):
        seg = clean_segment(raw, duration, report, loc, f"{field}[{i}]")
        if seg is not None:
            out.append(seg)
    return out


def clean_text(value: Any, report: Report, loc: str, field: str) -> str | None:
    """A non-empty stripped string, or None after reporting ``missing_field``."""
    if not isinstance(value, str) or not value.strip():
        report.add("missing_field", loc, field, f"{value!r} is not a non-empty string")
        return None
    return " ".join(value.split())


def _real(x: Any) -> bool:
    """An int or float (numpy's included), not a bool."""
    return type(x) in (int, float) or (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool))


def check_ground_truth(
    sample: Mapping[str, Any], *, as_released: bool = False
) -> tuple[str, float, list[tuple[float, float]]]:
    """The ground-truth rules every reader of samples shares: converters and the stream (``validate_sample``),
    the rewards (``tempr1_jax.rewards.check_sample``) and the metrics (``tempr1_jax.scoring``).

    ``task`` is one of ``TASKS``; ``duration`` a finite number of seconds > 0 (mcq: may be absent or null,
    returned as NaN); ``segments`` a list of finite ``[start, end]`` pairs with ``0 <= start <= end`` (an end past
    the duration is allowed here: the rewards clip it), as many as the task takes (tg exactly one, tal any number,
    mcq none, the others at least one); gvqa and mcq have an ``answer`` letter among their options. Returns (task,
    duration in s, segments as float pairs in s); raises ``ValueError("field 'NAME': ...")`` naming the first bad
    field. ``as_released=True`` reads the ground truth the metrics score against: ``released_segments`` when the
    sample has it (the dataset's own segments, which a converter clipped or partly dropped), else ``segments``,
    accepting them as benchmarks release them: any finite ``start <= end`` (NExT-GQA test has starts < 0) and
    several windows for tg (alternatives of several annotators, e.g. DiDeMo; the best one counts).
    """
    if not isinstance(sample, Mapping):
        raise ValueError(f"expected a JSON object (mapping), got {type(sample).__name__}")
    task = sample.get("task")
    if task not in TASKS:
        raise ValueError(f"field 'task': {task!r} is not one of {', '.join(TASKS)}")
    d = sample.get("duration")
    if task == "mcq" and d is None:
        d = math.nan  # unknown (the benchmark does not give it); nothing of mcq depends on it
    elif not _real(d) or not math.isfinite(d) or d <= 0:
        raise ValueError(f"field 'duration': must be a finite number of seconds > 0, got {d!r}")
    key = "released_segments" if as_released and "released_segments" in sample else "segments"
    segs = _segment_pairs(sample.get(key), key, as_released)
    lo, hi = _SEGMENT_COUNTS[task]
    hi = None if as_released and task != "mcq" else hi
    if len(segs) < lo or (hi is not None and len(segs) > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}"
        raise ValueError(f"field {key!r}: task {task} needs {want} segment(s), got {len(segs)}")
    if task in CHOICE_TASKS:
        answer, options = sample.get("answer"), sample.get("options")
        n = len(options) if isinstance(options, (list, tuple)) else len(OPTION_LETTERS)
        letters = OPTION_LETTERS[: max(n, 1)]
        if not (isinstance(answer, str) and len(answer) == 1 and answer in letters):
            raise ValueError(f"field 'answer': {answer!r} is not an option letter {letters[0]}-{letters[-1]}")
    return task, float(d), segs


def _segment_pairs(raw: Any, key: str, as_released: bool) -> list[tuple[float, float]]:
    """``[[start, end], ...]`` -> float pairs, each finite with ``start <= end`` (and ``0 <= start`` unless
    ``as_released``); ValueError naming ``key[i]`` otherwise."""
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"field {key!r}: must be a list of [start, end] pairs, got {raw!r}")
    segs = []
    for i, seg in enumerate(raw):
        if not (isinstance(seg, (list, tuple)) and len(seg) == 2 and _real(seg[0]) and _real(seg[1])):
            raise ValueError(f"field '{key}[{i}]': {seg!r} is not a [start, end] pair of numbers")
        start, end = float(seg[0]), float(seg[1])
        lowest = -math.inf if as_released else 0.0
        if not lowest <= start <= end < math.inf or start == -math.inf:  # NaN fails every comparison
            rule = "start <= end" if as_released else "0 <= start <= end"
            raise ValueError(f"field '{key}[{i}]': [{start!r}, {end!r}] breaks finite {rule}")
        segs.append((start, end))
    return segs


def validate_sample(sample: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the field if ``sample`` breaks the schema (see the module docstring): the
    shared ground-truth rules (``check_ground_truth``), the required fields of its task, segments within
    the duration (what a converter writes) and, when present, well-formed ``released_segments`` (for dtg one per
    query, as they pair with the queries)."""
    if not isinstance(sample, Mapping):
        raise ValueError(f"sample is a {type(sample).__name__}, not a JSON object")
    for f in REQUIRED_FIELDS:
        if f not in sample and not (f == "duration" and sample.get("task") == "mcq"):
            raise ValueError(f"field {f!r} is missing")
    for f in ("id", "video", "source"):
        if not isinstance(sample[f], str) or not sample[f]:
            raise ValueError(f"field {f!r}: {sample[f]!r} is not a non-empty string")
    task, d, segs = check_ground_truth(sample)
    for i, (_, end) in enumerate(segs):
        if end > d + 1e-6:
            raise ValueError(f"field 'segments[{i}]': end {end!r} > duration {d!r}")
    if "released_segments" in sample:
        released = check_ground_truth(sample, as_released=True)[2]
        if task == "dtg" and len(released) != len(segs):
            raise ValueError(f"field 'released_segments': {len(released)} segments but {len(segs)} in 'segments'")
    for f in TASK_FIELDS[task]:
        if f not in sample:
            raise ValueError(f"field {f!r} is missing (required for task {task})")
    if task in ("tg", "vhd"):
        _check_str(sample, "query")
    elif task == "tal":
        _check_str(sample, "action")
    elif task == "dtg":
        q = sample["queries"]
        if not isinstance(q, list) or not q or not all(isinstance(x, str) and x.strip() for x in q):
            raise ValueError("field 'queries': not a non-empty list of non-empty strings")
        if len(q) != len(segs):
            raise ValueError(f"field 'queries': {len(q)} queries but {len(segs)} segments")
    elif task in CHOICE_TASKS:
        _check_str(sample, "question")
        if task == "mcq":
            _check_str(sample, "category")
        opts = sample["options"]
        if (
            not isinstance(opts, list)
            or not 2 <= len(opts) <= len(OPTION_LETTERS)
            or not all(isinstance(x, str) for x in opts)
        ):
            raise ValueError(f"field 'options': needs a list of 2..{len(OPTION_LETTERS)} strings")


def _check_str(sample: Mapping[str, Any], field: str) -> None:
    v = sample[field]
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"field {field!r}: {v!r} is not a non-empty string")


def answer_index(sample: Mapping[str, Any]) -> int:
    """0-based index of a gvqa / mcq sample's answer letter; -1 for other tasks."""
    if sample.get("task") not in CHOICE_TASKS:
        return -1
    return OPTION_LETTERS.index(sample["answer"])


def infer_split(path: str) -> str | None:
    """Split guessed from a file name (``charades_sta_test.txt`` -> ``test``, ``val_1.json`` -> ``val_1``)."""
    import re

    stem = str(path).replace("\\", "/").rsplit("/", 1)[-1].split(".", 1)[0].lower()
    m = re.search(r"(?:^|[_\-])(val_\d|train|training|val|validation|test|testing)(?=$|[_\-])", stem)
    if m:
        return m.group(1)
    m = re.search(r"(val_\d|validation|training|testing|train|test|val)", stem)
    return m.group(1) if m else None


def dumps(sample: Mapping[str, Any]) -> str:
    """One compact JSONL line (no trailing newline), UTF-8 text kept as is."""
    return json.dumps(sample, ensure_ascii=False, separators=(", ", ": "))


def write_jsonl(path: str, samples: Iterable[Mapping[str, Any]]) -> int:
    """Write samples to ``path`` atomically (temp file then rename). Returns the number written."""
    tmp = f"{path}.tmp"
    n = 0
    with fileio.open_file(tmp, "w") as f:
        for s in samples:
            f.write(dumps(s) + "\n")
            n += 1
    fileio.rename(tmp, path)
    return n


def iter_jsonl(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines of a JSONL file. Lines split on "\\n" only (a
    raw U+2028 inside a string stays in its line); a line that is not UTF-8 is a ValueError naming FILE:LINE
    and the byte's offset in the file."""
    offset = 0
    with fileio.open_file(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = raw[e.start : e.start + 1]
                raise ValueError(
                    f"{path}:{i}: not UTF-8 text ({e.reason}: {bad!r} at byte {offset + e.start} of the file)"
                ) from None
            offset += len(raw)
            line = line.strip()
            if line:
                yield i, line


def read_samples(paths: str | Iterable[str], *, origins: list[int] | None = None) -> list[dict[str, Any]]:
    """Read and validate samples JSONL file(s); raises ``ValueError("FILE:LINE: field ...")`` on the first
    bad line, on an id repeated across the files, or on a file listed twice. ``origins``, when given, gets the
    index in ``paths`` of each returned sample's file."""
    if isinstance(paths, str):
        paths = [paths]
    paths = list(paths)
    for i, path in enumerate(paths):
        if path in paths[:i]:
            raise ValueError(f"{path}: listed twice in the samples files (positions {paths.index(path)} and {i})")
    out: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for k, path in enumerate(paths):
        if not fileio.exists(path):
            raise ValueError(f"{path}: samples file not found")
        for lineno, line in iter_jsonl(path):
            try:
                s = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            try:
                validate_sample(s)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            if s["id"] in seen:
                raise ValueError(f"{path}:{lineno}: field 'id': {s['id']!r} already used at {seen[s['id']]}")
            seen[s["id"]] = f"{path}:{lineno}"
            out.append(s)
            if origins is not None:
                origins.append(k)
    return out
