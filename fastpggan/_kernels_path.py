"""Make ``fastpggan.kernels`` importable from a plain checkout.

An installed copy (wheel or editable) maps the top-level ``kernels/`` folder to
``fastpggan.kernels`` through setuptools' ``package-dir``. Running from a checkout that was never
installed (``python train.py`` in the repo root) has no such mapping, so the package is loaded
from ``<repo>/kernels`` under its real name instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def ensure_kernels_package() -> None:
    """Register ``fastpggan.kernels`` from the checkout when no installed mapping provides it."""
    name = "fastpggan.kernels"
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    folder = Path(__file__).resolve().parent.parent / "kernels"
    init = folder / "__init__.py"
    if not init.is_file():
        return
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    setattr(sys.modules["fastpggan"], "kernels", module)
