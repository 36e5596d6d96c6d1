"""Test setup shared by every test module.

TRITON_INTERPRET=1 must be set before triton is first imported, so that the Triton kernels run
on CPU tensors here (no GPU on developer machines or CI). Setting it in this file's import is
early enough: pytest imports conftest.py before any test module.

On a machine with CUDA, ``TRITON_INTERPRET=0 pytest tests/test_kernels.py`` runs the kernel tests
on the GPU instead: the ``kernel_device`` fixture then hands out ``"cuda"``, and the kernels are
compiled by Triton for real (``python -m bench.gpu_report`` does this).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import contextlib  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: the tests' models are tiny, so extra threads only add overhead and
    fight other processes for the CPU."""
    with torch_threads(1):
        yield


@pytest.fixture
def kernel_device() -> torch.device:
    """Where the kernel tests put their tensors: the GPU under ``TRITON_INTERPRET=0``, else CPU."""
    if os.environ.get("TRITON_INTERPRET") != "0":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip("TRITON_INTERPRET=0 without a CUDA device: the Triton kernels cannot run")
    return torch.device("cuda")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)
