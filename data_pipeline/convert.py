"""``python -m data_pipeline.convert``: public annotation files -> unified samples JSONL (docs/formats.md).

    python -m data_pipeline.convert --format charades_sta \\
        --input charades_sta_test.txt Charades_v1_test.csv --output charades_test.jsonl

Every problem in the input is handled by a documented rule (``data_pipeline.schema.RULES``: clip, drop the
segment, drop the sample, skip, or fail), printed with its file, line (or JSON key path) and field, and
counted in a summary written next to the output (``<output stem>.summary.json``). Exit status: 0 on success,
1 when ``--strict`` finds anything dropped, 2 on bad input or usage, or when no sample is converted (one-line
reason on stderr). An input that gives no record while others do is warned about (``empty_inputs`` in the
summary): a legitimately empty split is possible, and the other inputs' samples are still worth writing.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

from data_pipeline import fileio
from data_pipeline.formats import FORMAT_TASKS, FORMATS, convert_files
from data_pipeline.schema import RULES, InputError, write_jsonl


def summary_path(output: str) -> str:
    """``out/x.jsonl`` -> ``out/x.summary.json``."""
    base = output[: -len(".jsonl")] if output.endswith(".jsonl") else output
    return base + ".summary.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_pipeline.convert",
        description="Convert public temporal annotation files into unified samples JSONL.",
        epilog="Formats and their tasks: " + ", ".join(f"{k} ({v})" for k, v in FORMAT_TASKS.items()),
    )
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="source annotation format")
    p.add_argument("--input", required=True, nargs="+", help="annotation file(s) (see the format's docs)")
    p.add_argument("--output", required=True, help="samples JSONL to write")
    p.add_argument(
        "--split",
        default=None,
        help="keep one split and name it in 'source' (default: from the file names / subsets)",
    )
    p.add_argument(
        "--video-prefix",
        default="",
        help="prepend to every video id (e.g. v_ when the video files are named v_<id>.mp4)",
    )
    p.add_argument("--summary", default=None, help="summary JSON path (default: <output stem>.summary.json)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 (writing no samples) if any segment or sample would be dropped",
    )
    p.add_argument("--show", type=int, default=5, help="messages printed per reason (all are in the summary)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = _parser().parse_args(argv)
    err = sys.stderr
    if any(os.path.abspath(p) == os.path.abspath(args.output) for p in args.input if not fileio.is_remote(p)):
        print(f"convert: error: --output {args.output} is one of the --input files (it would be replaced)", file=err)
        return 2
    try:
        ctx = convert_files(args.format, args.input, split=args.split, video_prefix=args.video_prefix)
    except InputError as e:
        print(f"convert: error: {e}", file=err)
        return 2
    report = ctx.report
    empty = [p for p in map(os.fspath, args.input) if not ctx.rows[p]]
    tasks = collections.Counter(s["task"] for s in ctx.samples)
    videos = len({s["video"] for s in ctx.samples})
    summary = {
        "format": args.format,
        "inputs": [os.fspath(p) for p in args.input],
        "output": args.output,
        "samples_written": len(ctx.samples),
        "samples_per_task": dict(tasks),
        "videos": videos,
        "segments_written": sum(len(s["segments"]) for s in ctx.samples),
        "empty_inputs": empty,
        **report.summary(),
    }
    for reason, n in sorted(report.counts.items()):
        action, meaning = RULES[reason]
        print(f"convert: {reason}: {n} ({action}: {meaning})", file=err)
        for msg in report.messages(reason)[: max(args.show, 0)]:
            print(f"  {msg}", file=err)
        if n > args.show > 0:
            print(f"  ... {n - args.show} more in the summary", file=err)
    spath = args.summary or summary_path(args.output)
    out_dir = os.path.dirname(args.output)
    if out_dir:
        fileio.makedirs(out_dir)
    dropped = report.count_actions()
    n_dropped = dropped.get("drop_sample", 0) + dropped.get("drop_segment", 0)
    if args.strict and n_dropped:
        summary["output"] = None
        _write_summary(spath, summary)
        print(
            f"convert: error: --strict: {dropped.get('drop_sample', 0)} sample(s) and "
            f"{dropped.get('drop_segment', 0)} segment(s) would be dropped; see {spath}",
            file=err,
        )
        return 1
    if not ctx.samples:
        summary["output"] = None
        _write_summary(spath, summary)
        gave_nothing = f"; no record in {', '.join(empty)}" if empty else ""
        print(
            f"convert: error: no sample converted from {report.records_read} record(s) of {args.input}"
            f"{gave_nothing} (see {spath})",
            file=err,
        )
        return 2
    for p in empty:
        print(f"convert: warning: {p}: no record read from this input (empty, or not {args.format}?)", file=err)
    write_jsonl(args.output, ctx.samples)
    _write_summary(spath, summary)
    per_task = ", ".join(f"{t} {n}" for t, n in sorted(tasks.items()))
    print(
        f"convert: {args.format}: {report.records_read} records read -> {len(ctx.samples)} samples "
        f"({per_task}) over {videos} videos; {n_dropped} dropped, {dropped.get('clip', 0)} clipped, "
        f"{dropped.get('skip', 0)} skipped -> {args.output} (summary {spath})",
        file=err,
    )
    return 0


def _write_summary(path: str, summary: dict) -> None:
    tmp = path + ".tmp"
    with fileio.open_file(tmp, "w") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
        f.write("\n")
    fileio.rename(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
