import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_datasets_does_not_find_this_project(tmp_path):
    probe = (
        "import importlib.util as u; s = u.find_spec('datasets'); "
        "print(s.origin if s else 'absent')"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert str(REPO) not in found.stdout


def test_the_folders_are_subpackages_of_bench():
    for name, folder in {
        "bench.datasets": "datasets",
        "bench.methods": "methods",
        "bench.reports": "reports",
    }.items():
        spec = importlib.util.find_spec(name)
        assert spec is not None and Path(spec.origin).parent == REPO / folder


def test_bench_methods_lists_every_method():
    listed = subprocess.run(
        [sys.executable, "-m", "bench.cli", "methods", "--verbose"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in (
        "random",
        "local_cl",
        "fcl",
        "simclr",
        "moco",
        "byol",
        "barlow_twins",
        "vicreg",
        "pgl",
        "gcl",
        "fedrotation",
        "swav",
    ):
        assert any(line.startswith(name + " ") for line in listed.splitlines()), name
    assert "averaged across clients" in listed


def test_the_version_is_written_once():
    """``bench.__version__`` is read from the installed metadata (pyproject.toml), not repeated."""
    import tomllib

    import bench

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert bench.__version__ == project["version"]
