"""notebooks/tempr1_quickstart.ipynb cannot rot: a valid notebook without committed outputs whose code cells parse
(fast), and, marked slow, executed top to bottom with nbclient on the CPU with its parameter cell overridden by a
tiny setting: the demo in two sessions (the second resumes), the reward curves, the reward library, evaluate."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tempr1_quickstart.ipynb"


def read() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def python_source(cell_source: str) -> str:
    """A code cell as the kernel runs it: ``!shell`` lines and ``%magics`` become Python calls (IPython's own
    transformation), so the result parses with ``ast`` whatever escapes the cell uses."""
    return TransformerManager().transform_cell(cell_source)


def test_the_notebook_is_valid_without_outputs_and_its_code_parses():
    nb = read()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 8, "the notebook lost its code cells"
    for n, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, f"code cell {n} has committed outputs"
        try:
            ast.parse(python_source(cell.source))
        except SyntaxError as e:
            pytest.fail(f"{NOTEBOOK.name} code cell {n}, line {e.lineno}: {e.msg}")
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "one code cell must be tagged 'parameters' (the slow test overrides it)"
    names = {t.id for node in ast.parse(params[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert {"WORKDIR", "DEMO", "FIRST_SESSION_STEPS", "INSTALL", "REAL_RUN"} <= names


def test_escaped_lines_are_handled():
    assert "get_ipython().system" in python_source("!pip install -q x")
    ast.parse(python_source("if True:\n    !ls\n%cd /tmp\nx = 1"))


def tiny_parameters(tmp_path: Path) -> str:
    """The parameter cell's tiny setting: a few videos, 2 warm-up steps, 2 GRPO steps in two sessions of 1."""
    demo = {
        "synthetic.dir": str(tmp_path / "data"),
        "synthetic.num_train": 8,
        "synthetic.num_val": 2,
        "warmup.steps": 2,
        "warmup.batch_size": 2,
        "train.total_steps": 2,
        "train.prompts_per_step": 2,
        "grpo.num_generations": 4,
        "eval.every": 1,
        "eval.batch_size": 2,
        "checkpoint.every": 1,
        "checkpoint.keep": 3,
        "logging.every": 1,
    }
    return f"INSTALL = False\nWORKDIR = {str(tmp_path / 'demo')!r}\nDEMO = {demo!r}\nFIRST_SESSION_STEPS = 1\n"


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_on_cpu(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = read()
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(tiny_parameters(tmp_path)))
    resources = {"metadata": {"path": str(NOTEBOOK.parent)}}  # the kernel starts in notebooks/, as Jupyter's would
    NotebookClient(nb, timeout=900, kernel_name="python3", resources=resources).execute()

    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    workdir = tmp_path / "demo"
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2, steps
    assert "checkpoints: [1, 2]" in text  # the first session stopped at step 1, the second went on to 2
    assert "tasks in the run: [" in text and "'tg'" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert (workdir / "evaluate" / "step_2" / "metrics.json").is_file()
    assert "tempr1_jax.train --config configs/tempr1_3b.py:/content/drive/MyDrive/tempr1/data" in text  # not run
    assert "tempr1_jax.plan --config configs/tempr1_3b.py:/content/drive/MyDrive/tempr1/data" in text
    assert os.listdir(tmp_path / "data"), "the demo's data went elsewhere"
