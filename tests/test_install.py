"""The package's installs as README.md gives them: a core install (jax + numpy: the reward library), the `train`
extra (requirements.txt, the whole training stack) and the `test` extra on top of it. The installs themselves run
in fresh venvs in CI (.ci/install_check light|train); these checks keep the files that declare them consistent."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirements(name: str) -> dict[str, str]:
    """{package name: requirement line} of a requirements file (comments and blank lines skipped)."""
    out = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out[re.match(r"[A-Za-z0-9_.\-]+", line).group(0).lower().replace("_", "-")] = line
    return out


def dynamic() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["dynamic"]


def test_the_core_install_is_jax_and_numpy():
    assert dynamic()["dependencies"] == {"file": ["requirements-core.txt"]}
    core, full = requirements("requirements-core.txt"), requirements("requirements.txt")
    assert set(core) == {"jax", "numpy"}
    for name, line in core.items():
        assert full.get(name) == line, f"requirements.txt must repeat {line!r} of requirements-core.txt"


def test_the_extras_build_on_the_training_stack():
    extras = dynamic()["optional-dependencies"]
    assert extras["train"] == {"file": ["requirements.txt"]}
    assert extras["test"] == {"file": ["requirements.txt", "requirements-test.txt"]}
    assert extras["wandb"] == {"file": ["requirements.txt", "requirements-wandb.txt"]}
    full = requirements("requirements.txt")
    for name in ("jax", "flax", "optax", "orbax-checkpoint", "transformers", "tensorflow-datasets", "numpy"):
        assert name in full, f"requirements.txt (the training stack) lacks {name}"
    for name in ("nbclient", "nbformat", "ipykernel", "matplotlib"):  # tests/test_notebook.py
        assert name in requirements("requirements-test.txt"), f"requirements-test.txt lacks {name}"


def test_readme_installs_each_extra_for_its_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [x for x in readme.splitlines() if x.startswith("python3 -m venv")]
    train = [x for x in lines if "python -m tempr1_jax.train --config configs/demo.py" in x]
    light = [x for x in lines if "python -m tempr1_jax.rewards " in x]
    test = [x for x in lines if x.endswith("python -m pytest")]
    assert train and "pip install -e '.[train]' && python -m tempr1_jax.train" in train[0]
    assert light and "pip install . && python -m tempr1_jax.rewards --completions examples/" in light[0]
    assert test and "pip install -e '.[test]' && python -m pytest" in test[0]
    assert lines.index(train[0]) < lines.index(test[0]), ".ci/run greps the first venv line with pytest"


def _run_without(module: str, tmp_path: Path, *args: str):
    """``python -m *args`` with ``module`` unimportable (a stand-in on PYTHONPATH raises ModuleNotFoundError for
    it, as a core install would)."""
    import os
    import subprocess
    import sys

    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def test_a_training_command_in_a_core_install_is_one_line(tmp_path):
    """The commands of the training stack import it at module level: without it, one line naming the command,
    the missing module and the install that brings it, not a traceback."""
    r = _run_without("ml_collections", tmp_path, "tempr1_jax.train", "--config", "configs/demo.py")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "error: python -m tempr1_jax.train needs the training stack, which this install lacks (no module named "
        "'ml_collections'): pip install -e '.[train]' (docs/install.md)")


def test_a_missing_module_outside_the_training_stack_keeps_its_traceback(tmp_path):
    """Only the training stack's modules are explained away: any other missing module is a bug to show."""
    r = _run_without("numpy", tmp_path, "tempr1_jax.rewards", "--help")
    assert "tempr1_jax/rewards.py" in r.stderr  # it failed in the command, after the hook was installed
    assert r.returncode == 1 and "Traceback" in r.stderr and "training stack" not in r.stderr
