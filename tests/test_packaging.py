"""Packaging facts CI relies on: stripped notebooks with parameters, environment.yml, README commands,
the set-up/run scripts (driven with a fake interpreter: no network, no pip) and the papermill kernel."""

import ast
import json
import os
import re
import shutil
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


def test_notebook_01_parameters():
    import papermill as pm

    params = pm.inspect_notebook(str(ROOT / "notebooks" / "01_data_preparation.ipynb"))
    defaults = {k: ast.literal_eval(v["default"]) for k, v in params.items()}
    assert defaults == {"PROFILE": "demo", "WORKSPACE": "../workspace", "STYLES": ["dirlab", "nlst", "cbct"],
                        "COHORT_SIZE": None, "SEED": 0, "REAL_SETS": {}, "INCLUDE_BUNDLED": True}


def test_papermill_kernel_is_this_interpreter():
    """``kernel_name="python3"`` must start the venv's python (jupyter_client maps argv[0] "python"
    of the native spec to sys.executable; an absolute path elsewhere would run another Python)."""
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec("python3").argv
    assert argv[0] in ("python", "python3", sys.executable), argv


# ------------------------------------------------------------------ scripts, with a fake interpreter
FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$CALLS"
if [ "$1" = "-c" ]; then
  case "$2" in *"import torch"*) [ -n "$HAS_TORCH" ] && exit 0; exit 1;; esac
fi
exit 0
"""


def _kit(tmp_path: Path, stamp: bool = False) -> Path:
    """A copy of the scripts + pyproject with a fake ``.venv/bin/python`` that logs its calls."""
    kit = tmp_path / "kit"
    shutil.copytree(ROOT / "scripts", kit / "scripts")
    shutil.copy(ROOT / "pyproject.toml", kit / "pyproject.toml")
    exe = kit / ".venv" / "bin" / "python"
    exe.parent.mkdir(parents=True)
    exe.write_text(FAKE_PYTHON)
    exe.chmod(0o755)
    if stamp:
        (kit / ".venv" / ".reindir_nb-installed-notebooks-test").touch()
        os.utime(kit / "pyproject.toml", (1, 1))  # older than the stamp
    return kit


def _run(kit: Path, script: str, tmp_path: Path, nvidia: bool = False, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    if nvidia:
        (bin_ / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (bin_ / "nvidia-smi").chmod(0o755)
    calls = tmp_path / "calls.log"
    full_env = {"PATH": f"{bin_}:/usr/bin:/bin", "CALLS": str(calls), "HOME": str(tmp_path), **env}
    result = subprocess.run(["bash", str(kit / "scripts" / script)], env=full_env, capture_output=True, text=True,
                            timeout=60)
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_setup_installs_cpu_torch_first_without_cuda(tmp_path):
    kit = _kit(tmp_path)
    result, calls = _run(kit, "setup_env.sh", tmp_path)
    assert result.returncode == 0, result.stderr
    pip = [c for c in calls if c.startswith("-m pip install")]
    assert pip == ["-m pip install --quiet --upgrade pip", "-m pip install --quiet torch==2.13.0",
                   "-m pip install --quiet -e .[notebooks,test]"]
    assert (kit / ".venv" / ".reindir_nb-installed-notebooks-test").is_file()


def test_setup_with_cuda_or_torch_present(tmp_path):
    result, calls = _run(_kit(tmp_path), "setup_env.sh", tmp_path, nvidia=True)
    assert result.returncode == 0 and "-m pip install --quiet torch>=2.1" in calls
    (tmp_path / "calls.log").unlink()
    result, calls = _run(_kit(tmp_path / "again"), "setup_env.sh", tmp_path, HAS_TORCH="1")
    assert result.returncode == 0 and not any("torch" in c and "install" in c for c in calls)


def test_setup_is_a_no_op_when_stamped(tmp_path):
    result, calls = _run(_kit(tmp_path, stamp=True), "setup_env.sh", tmp_path)
    assert result.returncode == 0 and calls == [] and result.stdout == ""


def test_setup_refuses_an_old_python(tmp_path):
    kit = _kit(tmp_path)
    shutil.rmtree(kit / ".venv")
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\nexit 1\n")  # fails the version check
    old.chmod(0o755)
    result, _ = _run(kit, "setup_env.sh", tmp_path, PYTHON=str(old))
    assert result.returncode == 1 and "Python >= 3.10" in result.stderr and not (kit / ".venv").exists()


def test_run_main_passes_profile_workspace_and_subset(tmp_path):
    kit = _kit(tmp_path, stamp=True)
    result, calls = _run(kit, "run_main.sh", tmp_path, PROFILE="smoke", WORKSPACE="/tmp/ws", ONLY="01 02")
    assert result.returncode == 0, result.stderr
    assert calls == ["-m reindir_nb.pipeline --profile smoke --workspace /tmp/ws --only 01 02"]
    (tmp_path / "calls.log").unlink()
    _, calls = _run(kit, "run_main.sh", tmp_path)
    assert calls == [f"-m reindir_nb.pipeline --profile demo --workspace {kit}/workspace --only"]


def test_ci_runs_the_readme_test_command_only():
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "bash scripts/test.sh"]


def test_main_job_records_and_prints_each_notebooks_time(tmp_path, monkeypatch):
    from reindir_nb import pipeline

    ran = []

    def fake_run(nb, workspace, profile):  # the notebooks themselves are tested one by one
        ran.append(nb.name)
        if nb.name.startswith("03"):
            raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "run_notebook", fake_run)
    seconds = pipeline.run_all(tmp_path, "smoke", only=["01", "02"])
    assert list(seconds) == ran == ["01_data_preparation.ipynb", "02_inr_registration.ipynb"]
    rows = (tmp_path / "executed" / pipeline.TIMINGS_FILE).read_text().splitlines()
    assert rows[0] == "notebook,seconds,status,profile" and rows[1].startswith("01_data_preparation.ipynb,")
    assert rows[1].endswith(",ok,smoke") and len(rows) == 3
    text = pipeline.format_timings({"01_a.ipynb": 30.0, "02_b.ipynb": 90.0})
    assert "02_b.ipynb" in text and text.splitlines()[-1].split()[:3] == ["total", "120", "s"]
    with pytest.raises(RuntimeError, match="boom"):  # a failure is recorded before it propagates
        pipeline.run_all(tmp_path, "smoke", only=["03"])
    assert (tmp_path / "executed" / pipeline.TIMINGS_FILE).read_text().splitlines()[1].split(",")[2] == "FAILED"
