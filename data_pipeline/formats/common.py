"""Shared pieces of the converters: the conversion context, file loaders that keep line numbers, sniffing."""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from data_pipeline import fileio
from data_pipeline.schema import InputError, Report, dumps, validate_sample


@dataclasses.dataclass
class Context:
    """What a converter needs besides its input paths.

    split: keep only records of this split (formats that carry one), and use it in ``source``.
    video_prefix: prepended to every video id (e.g. ``v_`` when the files are named ``v_<id>.mp4``).
    """

    report: Report = dataclasses.field(default_factory=Report)
    split: str | None = None
    video_prefix: str = ""
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rows: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    _ids: dict[str, str] = dataclasses.field(default_factory=dict)

    def count(self, path: str, *, record: bool = True) -> None:
        """Count one record (``record``; also in ``report.records_read``) or one row of a side file (durations,
        subsets) read from input ``path``; ``rows`` tells which inputs gave nothing."""
        self.rows[path] += 1
        if record:
            self.report.records_read += 1

    def video(self, raw: str) -> str:
        """The output video id of a source video id."""
        return f"{self.video_prefix}{raw}"

    def emit(self, sample: dict[str, Any], loc: str) -> None:
        """Add one finished sample (validated; a repeated id is dropped and reported)."""
        first = self._ids.get(sample["id"])
        if first is not None:
            self.report.add("duplicate_id", loc, "id", f"{sample['id']!r} already written from {first}")
            return
        try:
            validate_sample(sample)
        except ValueError as e:  # a converter bug, never user data: fail loudly
            raise AssertionError(f"{loc}: converter produced an invalid sample {dumps(sample)}: {e}") from e
        self._ids[sample["id"]] = loc
        self.samples.append(sample)


def video_stem(path: str) -> str:
    """The video id of a video file path as ``extract_frames`` names its frames: the file name without its last
    extension (``./videos/4jujhM5qhEc_00:00:39:000_00:01:24:700.mp4`` -> ``4jujhM5qhEc_00:00:39:000_00:01:24:700``)."""
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def with_released(sample: dict[str, Any], released: list[list[float] | None]) -> dict[str, Any]:
    """``sample`` plus ``released_segments`` (the dataset's own segments, which the metrics score against) when
    they differ from the cleaned ``segments``: ``released`` holds ``schema.released_segment`` of the raw segments
    (None for one no evaluator can score, left out)."""
    kept = [r for r in released if r is not None]
    if kept != sample["segments"]:
        sample["released_segments"] = kept
    return sample


class _RepeatedKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _RepeatedKey(k)
            seen.add(k)
    return out


def load_json(path: str) -> Any:
    """Parse a whole JSON document; a syntax error fails with the file, line and column, and a key repeated
    within one object (``json`` would silently keep only its last value, e.g. one of two entries of a video)
    fails naming the key."""
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    except _RepeatedKey as e:
        key = e.args[0]
        raise InputError(f"{path}: key {key!r} appears twice in one JSON object (one value would be lost)") from None


def _read_bytes(path: str) -> bytes:
    try:
        with fileio.open_file(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _decode(data: bytes, path: str, first_line: int = 1, offset: int = 0) -> str:
    """UTF-8 text of ``data`` (the bytes from ``offset`` of ``path``, starting on line ``first_line``); a bad
    byte fails with ``FILE:LINE: not UTF-8 text (... at byte N of the file)``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        raise InputError(
            f"{path}:{line}: not UTF-8 text ({e.reason}: {data[e.start : e.end]!r} at byte {offset + e.start} "
            "of the file)"
        ) from None


def read_text(path: str) -> str:
    """Whole file as text (UTF-8, a BOM dropped)."""
    return _decode(_read_bytes(path), path).lstrip("\ufeff")


def read_lines(path: str) -> list[tuple[int, str]]:
    """(1-based line number, text without its line break) of the non-blank lines of a UTF-8 text file (a BOM
    dropped); leading spaces are kept, so a JSON error's column is the file's."""
    out = []
    for i, line in enumerate(read_text(path).split("\n"), 1):
        line = line.rstrip("\r")
        if line.strip():
            out.append((i, line))
    return out


Required = Sequence["str | tuple[str, ...]"]  # a name, or alternative names of which any one will do


def _name(item: str | tuple[str, ...]) -> str:
    return item if isinstance(item, str) else " or ".join(item)


def check_fields(
    path: str,
    present: Iterable[str],
    required: Required,
    optional: Sequence[str] = (),
    *,
    what: str = "column",
    scope: str = "",
) -> None:
    """Fail (``InputError``, the "fail" rule) naming every required column / field absent from ``present``.

    One line: ``FILE: missing required column(s) a4 (required: ...; optional: ...)``; ``scope`` says where in
    a JSON document the fields belong (``$.<video>``). ``optional``: read when present, never required.
    """
    have = set(present)
    missing = [_name(r) for r in required if not have & ({r} if isinstance(r, str) else set(r))]
    if missing:
        place = f" in {scope}" if scope else ""
        raise InputError(
            f"{path}: missing required {what}(s) {', '.join(missing)}{place} "
            f"(required: {', '.join(map(_name, required))}; optional: {', '.join(optional) or 'none'})"
        )


def check_records(
    path: str, records: Sequence[Any], required: Required, optional: Sequence[str] = (), *, scope: str = ""
) -> None:
    """``check_fields`` on the union of the keys of a JSON document's records: fails when *no* record has a
    required field (the file is not of the format); a record lacking one is the converter's to report. No
    records: nothing to check (the caller reports an input that gives nothing)."""
    if not records:
        return
    keys: set[str] = set()
    for r in records:
        if isinstance(r, dict):
            keys.update(map(str, r))
    check_fields(path, keys, required, optional, what="field", scope=scope)


def csv_header(path: str) -> list[str]:
    """The header row of a csv file (stripped names)."""
    text = read_text(path)
    first = next(csv.reader(io.StringIO(text)), [])
    return [h.strip() for h in first]


def iter_csv(path: str, required: Required, optional: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number where the row starts, row dict) per data row; fails (``check_fields``) if a required
    column is absent or the file has no header."""
    reader = csv.DictReader(io.StringIO(read_text(path)))
    if reader.fieldnames is None:
        raise InputError(f"{path}: empty file (no csv header; required columns: {', '.join(map(_name, required))})")
    fields = [h.strip() for h in reader.fieldnames]
    reader.fieldnames = fields
    check_fields(path, fields, required, optional)
    start = reader.line_num + 1
    for row in reader:
        yield start, {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k is not None}
        start = reader.line_num + 1


def kind_of(path: str) -> str:
    """File kind by extension: ``json``, ``jsonl``, ``csv``, ``txt`` or ``dir``."""
    p = str(path)
    if not fileio.is_remote(p):
        import os

        if os.path.isdir(p):
            return "dir"
        if not os.path.exists(p):
            raise InputError(f"{p}: input file not found")
    low = p.lower()
    for ext in ("jsonl", "json", "csv", "txt"):
        if low.endswith("." + ext):
            return ext
    raise InputError(f"{p}: unknown input kind (expected .json, .jsonl, .csv or .txt)")
