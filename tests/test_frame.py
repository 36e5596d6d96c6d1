"""The project frame: the README's test command is CI's, and kernels/ installs as fastpggan.kernels."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
)


def imported_files(code: str, path: Path, cwd: Path) -> list[str]:
    """Run ``code`` (which prints module files) in a fresh interpreter with ``path`` as argv[1]."""
    return subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.split()


def test_readme_test_command_is_what_ci_runs() -> None:
    assert TEST_COMMAND in (ROOT / "README.md").read_text()
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a clean copy: setuptools builds in the source tree, and a stale build/ folder
    # there could carry files into the wheel that the checkout no longer has.
    src = tmp_path_factory.mktemp("src") / "fastpggan"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "runs", "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True,
    )
    (whl,) = out.glob("fastpggan-*.whl")
    return whl


def test_wheel_has_no_top_level_kernels(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastpggan/kernels/__init__.py" in names
    assert not [n for n in names if n.startswith("kernels/")]
    top_level = [n for n in names if n.endswith("top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level[0]).decode().split() == ["fastpggan"]


def test_installed_copy_imports_fastpggan_kernels(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True,
    )
    assert not (target / "kernels").exists()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import fastpggan.kernels as k, fastpggan as f; print(k.__file__); print(f.__file__)"
    )
    assert imported_files(code, target, tmp_path) == [str(target / "fastpggan" / "kernels" / "__init__.py"),
                   str(target / "fastpggan" / "__init__.py")]


def test_uninstalled_checkout_imports_fastpggan_kernels(tmp_path: Path) -> None:
    # Hide any editable-install finder so that only the checkout on sys.path can provide it.
    code = (
        "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f)];"
        "sys.path_hooks = [h for h in sys.path_hooks if 'editable' not in repr(h)];"
        "sys.path.insert(0, sys.argv[1]); import fastpggan.kernels as k; print(k.__file__)"
    )
    assert imported_files(code, ROOT, tmp_path) == [str(ROOT / "kernels" / "__init__.py")]
