"""Shared pieces of the converters: the conversion context, file loaders that keep line numbers, sniffing."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
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
    _ids: dict[str, str] = dataclasses.field(default_factory=dict)

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


def load_json(path: str) -> Any:
    """Parse a whole JSON document; a syntax error fails with the file, line and column."""
    try:
        with fileio.open_file(path, "r") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None


def read_text(path: str) -> str:
    """Whole file as text (UTF-8, a BOM dropped)."""
    try:
        with fileio.open_file(path, "r") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    return text.lstrip("\ufeff")


def csv_header(path: str) -> list[str]:
    """The header row of a csv file (stripped names)."""
    text = read_text(path)
    first = next(csv.reader(io.StringIO(text)), [])
    return [h.strip() for h in first]


def iter_csv(path: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number where the row starts, row dict) per data row; fails if a required column is absent."""
    reader = csv.DictReader(io.StringIO(read_text(path)))
    fields = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = fields
    missing = [c for c in required if c not in fields]
    if missing:
        raise InputError(f"{path}:1: csv header {fields} lacks column(s) {missing}")
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
