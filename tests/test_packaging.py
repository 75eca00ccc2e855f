"""A non-editable install works: the wheel holds every module, the configs (default.yaml and
every preset) and the ``hyperfeat`` command, and the configs load from the unpacked wheel
outside any checkout. (A full ``pip install`` into a fresh virtual environment is too slow
for the suite.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hyperfeat"


def _has_build_backend() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 64


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the project's own files (never from the checkout, whose
    build/ folder could hand stale modules to the wheel)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(PACKAGE, src / "hyperfeat", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(src)]
    if _has_build_backend():
        command.insert(4, "--no-build-isolation")  # offline: the environment's setuptools
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = (root / "dist").glob("hyperfeat-*.whl")
    return path


def test_wheel_holds_every_module_config_and_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hyperfeat/configs/default.yaml" in names
    presets = {p.relative_to(REPO).as_posix() for p in (PACKAGE / "configs").rglob("*.yaml")}
    assert {"hyperfeat/configs/backbone/tiny.yaml", "hyperfeat/configs/experiment/smoke.yaml"} <= presets
    assert presets <= names, sorted(presets - names)
    modules = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "hyperfeat = hyperfeat.cli:main" in text


LOAD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import hyperfeat
from hyperfeat.config import load_config, preset_names
cfg = load_config(overrides=["experiment=smoke", "backbone=tiny"])
print(json.dumps({"file": hyperfeat.__file__, "model": cfg.backbone.model, "groups": {
    g: preset_names(g) for g in ("backbone", "data", "experiment")}}))
"""


def test_configs_load_from_the_unpacked_wheel_outside_a_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, str(site)], cwd=elsewhere, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(record["file"]).resolve().is_relative_to(site.resolve())  # the wheel's copy, not the checkout
    assert record["model"] == "tiny"
    for group, names in record["groups"].items():
        assert names == sorted(p.stem for p in (PACKAGE / "configs" / group).glob("*.yaml")), group
