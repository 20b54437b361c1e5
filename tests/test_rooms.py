"""Dependencies point one way: the data pipeline imports nothing of tempr1_jax, the evaluation does not import
the trainer, the rewards import no model or trainer code (read from the source, every import statement)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported(path: Path) -> set[str]:
    """Every module named by an import statement of a file (absolute names; relative imports as '.name')."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names |= {base} | {f"{base}.{a.name}" if node.module else f"{base}{a.name}" for a in node.names}
    return names


def test_the_data_pipeline_imports_nothing_of_tempr1_jax():
    files = sorted((ROOT / "data_pipeline").rglob("*.py"))
    assert len(files) > 10
    bad = {str(f.relative_to(ROOT)): sorted(n for n in imported(f) if n.split(".")[0] == "tempr1_jax") for f in files}
    assert not {f: n for f, n in bad.items() if n}


def test_evaluation_and_rewards_do_not_import_the_trainer():
    trainer = {"tempr1_jax.train", "tempr1_jax.grpo_step", "tempr1_jax.trainer", "tempr1_jax.warmup"}
    for name in ("evaluate.py", "evaluator.py", "scoring.py", "metrics.py", "rewards.py"):
        names = imported(ROOT / "tempr1_jax" / name)
        assert not names & trainer, (name, sorted(names & trainer))
        if name in ("rewards.py", "metrics.py"):  # the standalone libraries know nothing of models
            assert not any(n.startswith(("tempr1_jax.models", "flax")) for n in names), (name, sorted(names))


def test_the_imports_helper_reads_from_imports():
    src = ROOT / "tempr1_jax" / "evaluate.py"
    assert any(n.startswith("tempr1_jax") for n in imported(src))  # it does see the package's own imports
