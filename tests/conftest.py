"""Test setup shared by every test module.

TRITON_INTERPRET=1 must be set before triton is first imported, so that the Triton kernels run
on CPU tensors here (no GPU on developer machines or CI). Setting it in this file's import is
early enough: pytest imports conftest.py before any test module.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)
