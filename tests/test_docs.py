"""The docs stand alone and stay true to the code.

- Every relative link of docs/*.md, README.md and the notebook's markdown cells reaches a file of the repository,
  and every ``#anchor`` a heading of the page it names.
- Every ``python -m MODULE`` and ``python PATH.py`` in a fenced code block or a code span of those pages answers
  ``--help`` with exit status 0, and every command module of ``tempr1_jax`` / ``data_pipeline`` is shown in a
  fenced block of docs/commands.md.
- README's quick start shows what its reward command prints.
- The example tables of docs/rewards.md (worked rewards, think modes, INTERVALS payloads) are what the code
  returns.

Markdown is read structurally: fenced blocks are code, links and headings are taken from the prose only.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REF_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
_MODULE = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
_SCRIPT = re.compile(r"\bpython3?\s+((?:[\w.-]+/)*[\w.-]+\.py)\b")

# Modules whose --help is known not to work, with the reason (docs/commands.md says so too). The xfail is strict:
# when one is fixed, its entry here and the sentence in docs/commands.md must go.
HELP_DEFECTS: dict[str, str] = {}  # module -> why its --help is known not to exit 0 (none today)


@functools.cache
def split_markdown(path: Path) -> tuple[tuple[tuple[int, str], ...], tuple[str, ...]]:
    """((line number, line) of the prose, fenced code blocks) of a markdown file. A fence closes on a line of
    the same character, at least as long, with nothing after it; an unclosed fence runs to the end."""
    prose: list[tuple[int, str]] = []
    blocks: list[str] = []
    fence, block = None, []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None:
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                fence, block = m.group(1), []
            else:
                prose.append((n, line))
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not m.group(2).strip():
            blocks.append("\n".join(block))
            fence = None
        else:
            block.append(line)
    if fence is not None:
        blocks.append("\n".join(block))
    return tuple(prose), tuple(blocks)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: link text kept, tags and punctuation dropped, lower case, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor of a markdown file: heading slugs (a repeated slug gets -1, -2, ...) and <a id/name>."""
    prose, _ = split_markdown(path)
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        out.update(_HTML_ANCHOR.findall(line))
        m = _HEADING.match(line)
        if m:
            s = slug(m.group(2))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return frozenset(out)


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition; code spans skipped."""
    return prose_links(split_markdown(path)[0])


def prose_links(prose: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """``links`` of (line number, line) pairs of markdown prose."""
    out = []
    for n, line in prose:
        text = _CODE_SPAN.sub("", line)
        out += [(n, t) for t in _INLINE_LINK.findall(text)]
        out += [(n, t) for t in _REF_LINK.findall(text)]
    return out


def link_problem(page: Path, target: str) -> str | None:
    """Why a link target is broken, or None."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):  # http:, https:, mailto: ...: not checked offline
        return None
    path, _, anchor = target.partition("#")
    dest = (page.parent / unquote(path)).resolve() if path else page
    if not dest.is_relative_to(ROOT):
        return f"{target!r} leaves the repository"
    if not dest.exists():
        return f"{target!r}: {dest.relative_to(ROOT)} does not exist"
    if anchor:
        if dest.suffix != ".md":
            return f"{target!r}: an anchor into a non-markdown file"
        if unquote(anchor) not in anchors(dest):
            return f"{target!r}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}"
    return None


def code_texts(page: Path, spans: bool = True) -> list[str]:
    """The fenced blocks of a page and, with ``spans``, the code spans of its prose."""
    prose, blocks = split_markdown(page)
    return list(blocks) + ([m.group(2) for _, line in prose for m in _CODE_SPAN.finditer(line)] if spans else [])


def doc_modules(pages: list[Path], spans: bool = False) -> list[str]:
    """The distinct MODULE names of ``python -m MODULE`` in the fenced blocks (and code spans) of ``pages``."""
    return sorted({m for p in pages for text in code_texts(p, spans) for m in _MODULE.findall(text)})


def doc_scripts(pages: list[Path]) -> list[str]:
    """The distinct PATH.py of ``python PATH.py`` in the fenced blocks and code spans of ``pages``."""
    return sorted({m for p in pages for text in code_texts(p) for m in _SCRIPT.findall(text)})


def notebook_prose(path: Path) -> list[tuple[int, str]]:
    """(cell number * 1000 + line number, line) of a notebook's markdown cells."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(k * 1000 + n, line) for k, c in enumerate(cells) if c["cell_type"] == "markdown"
            for n, line in enumerate("".join(c["source"]).splitlines(), 1)]


def command_modules() -> list[str]:
    """Modules of the two packages that run as commands (``if __name__ == "__main__":``)."""
    out = []
    for pkg in ("tempr1_jax", "data_pipeline"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if re.search(r"^if __name__ == .__main__.:", path.read_text(encoding="utf-8"), re.M):
                parts = path.relative_to(ROOT).with_suffix("").parts
                out.append(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
    return out


def tables(path: Path, header: tuple[str, ...]) -> list[list[str]]:
    """The body rows (cells stripped) of every table of ``path`` whose header cells are ``header``."""
    rows, inside = [], False
    for _, line in split_markdown(path)[0]:
        if not line.startswith("|"):
            inside = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if tuple(cells) == header:
            inside = True
        elif inside and not set("".join(cells)) <= set("-: "):
            assert len(cells) == len(header), f"{path.name}: row {line!r} has {len(cells)} cells"
            rows.append(cells)
    return rows


def code(cell: str) -> list[str]:
    """The code spans of a table cell, ``\\n`` standing for a newline."""
    return [m.group(2).replace("\\n", "\n") for m in _CODE_SPAN.finditer(cell)]


# ----------------------------------------------------------------------------------------------------------
# Links
# ----------------------------------------------------------------------------------------------------------


def test_the_contract_pages_exist():
    for name in ("rewards.md", "formats.md", "commands.md"):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    problems = [f"{page.name}:{n}: {why}" for n, t in links(page) if (why := link_problem(page, t))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_links_resolve(notebook):
    found = prose_links(notebook_prose(notebook))
    assert found, f"{notebook.name}: no link found in its markdown cells: the scan is broken"
    problems = [f"{notebook.name}: cell {n // 1000}: {why}" for n, t in found if (why := link_problem(notebook, t))]
    assert not problems, "\n".join(problems)


def test_link_checker_catches_broken_links(tmp_path):
    page = DOCS / "formats.md"
    assert link_problem(page, "rewards.md#reward-rules") is None
    assert link_problem(page, "#samples") is None
    assert "does not exist" in link_problem(page, "nope.md")
    assert "no heading" in link_problem(page, "rewards.md#no-such-section")
    assert "leaves the repository" in link_problem(page, "../../elsewhere/notes.md")
    assert slug("`python -m tempr1_jax.train`") == "python--m-tempr1_jaxtrain"
    md = tmp_path / "x.md"
    md.write_text("# A\n```bash\n# not a heading [x](gone.md)\n```\n## A\n[y](#a-1) `[z](gone.md)`\n")
    assert anchors(md) == {"a", "a-1"}
    assert links(md) == [(6, "#a-1")]


# ----------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------

MODULES = doc_modules(PAGES, spans=True)
SCRIPTS = doc_scripts(PAGES)


def test_every_command_module_is_documented():
    documented = set(doc_modules([DOCS / "commands.md"]))
    missing = [m for m in command_modules() if m not in documented]
    assert command_modules(), "no command module found: the scan is broken"
    assert not missing, f"docs/commands.md shows no `python -m` line for {missing}"


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=HELP_DEFECTS[m])) if m in HELP_DEFECTS else m
        for m in MODULES
    ],
)
def test_documented_command_answers_help(module):
    assert importlib.util.find_spec(module) is not None, f"the docs run `python -m {module}`, which does not exist"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    r = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"python -m {module} --help exited {r.returncode}: {r.stderr.strip()[-500:]}"
    assert "usage" in r.stdout.lower(), f"python -m {module} --help printed no usage: {r.stdout[:200]!r}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_documented_script_answers_help(script):
    assert (ROOT / script).is_file(), f"the docs run `python {script}`, which does not exist"
    r = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"python {script} --help exited {r.returncode}: {r.stderr.strip()[-500:]}"
    assert "usage" in r.stdout.lower(), f"python {script} --help printed no usage: {r.stdout[:200]!r}"


def test_the_scans_find_the_commands():
    assert {"tempr1_jax.train", "tempr1_jax.rewards", "data_pipeline.convert"} <= set(MODULES)
    assert {"scripts/tpu_vm.py", "benchmarks/grpo_step.py"} <= set(SCRIPTS)


def test_readme_shows_what_the_reward_command_prints(tmp_path):
    command = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
                   if line.startswith("python3 -m venv") and "python -m tempr1_jax.rewards " in line)
    args = shlex.split(command.split(" && python -m tempr1_jax.rewards ", 1)[1])
    shown = next(b for b in split_markdown(ROOT / "README.md")[1] if b.startswith("task ") and "\nall " in b)
    out = tmp_path / "rewards.jsonl"
    r = subprocess.run([sys.executable, "-m", "tempr1_jax.rewards", *args, "--output", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n_rows = len(out.read_text().splitlines())
    assert r.stdout.replace(str(out), "examples/completions.rewards.jsonl").strip() == shown.strip()
    assert f"wrote {n_rows} rows to examples/completions.rewards.jsonl" in shown


# ----------------------------------------------------------------------------------------------------------
# The examples of docs/rewards.md
# ----------------------------------------------------------------------------------------------------------


@functools.cache
def example_samples() -> dict[str, dict]:
    lines = (ROOT / "examples" / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return {s["id"]: s for s in map(json.loads, filter(str.strip, lines))}


def test_worked_examples_match_compute_rewards():
    from tempr1_jax.rewards import compute_rewards

    keys = ("format", "localization", "answer", "total")
    rows = tables(DOCS / "rewards.md", ("sample", "completion", *keys, "why"))
    assert len(rows) >= 10, "the worked-examples table of docs/rewards.md is gone or unreadable"
    samples = [example_samples()[code(r[0])[0]] for r in rows]
    completions = [code(r[1])[0] for r in rows]
    got = compute_rewards(completions, samples)
    for k, row in enumerate(rows):
        for j, key in enumerate(keys):
            want = float(row[2 + j])
            assert abs(float(got[key][k]) - want) < 5e-5, f"{row[0]} {row[1]}: {key} is {got[key][k]:.6f}, not {want}"


def test_think_mode_table_matches_compute_rewards():
    from tempr1_jax.rewards import compute_rewards

    modes = ("optional", "required", "forbidden")
    rows = tables(DOCS / "rewards.md", ("sample", "completion", *(f"`{m}`" for m in modes)))
    assert len(rows) >= 3, "the think-mode table of docs/rewards.md is gone or unreadable"
    for row in rows:
        sample, text = example_samples()[code(row[0])[0]], code(row[1])[0]
        for j, mode in enumerate(modes):
            got = float(compute_rewards([text], [sample], think=mode)["format"][0])
            assert got == float(row[2 + j]), f"{text!r} under think={mode}: format {got}, not {row[2 + j]}"


def test_intervals_table_matches_the_parser():
    from tempr1_jax.rewards import parse_intervals

    rows = tables(DOCS / "rewards.md", ("payload", "parsed"))
    assert len(rows) >= 10, "the INTERVALS table of docs/rewards.md is gone or unreadable"
    for payload_cell, parsed_cell in rows:
        want = None if parsed_cell.startswith("unparsable") else json.loads(code(parsed_cell)[0])
        for payload in code(payload_cell) or [""]:  # a row without code is the empty payload
            got = parse_intervals(payload, 40.0)
            assert (None if got is None else got.tolist()) == want, f"{payload!r} parses to {got}, not {want}"
