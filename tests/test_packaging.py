"""Packaging facts CI relies on: stripped notebooks with parameters, environment.yml, README commands."""

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_stripped_with_parameters(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{path.name} has outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(params[0]["source"]))
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell must hold assignments only"
        ast.literal_eval(node.value)  # literal values only (papermill)
        names |= {t.id for t in node.targets}
    assert {"PROFILE", "WORKSPACE"} <= names


def test_nbstripout_verify():
    exe = Path(sys.executable).parent / "nbstripout"
    result = subprocess.run([str(exe), "--verify", *map(str, NOTEBOOKS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    extras = set(re.search(r"\[(.*)\]", pip[0]).group(1).split(","))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert extras <= set(project["optional-dependencies"])
    assert any(d.startswith("torch>=") for d in project["dependencies"]), "torch stays unpinned in pyproject"


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash)?\n(.*?)```", text, re.S).group(1).strip().splitlines()
    commands = [ln for ln in first_block if ln.strip() and not ln.startswith("#")]
    assert commands == ["bash scripts/run_main.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_gitattributes_strip_sources_not_goldens():
    text = (ROOT / ".gitattributes").read_text()
    assert "notebooks/*.ipynb filter=nbstripout" in text and "tests/golden/*.ipynb -filter -diff" in text
