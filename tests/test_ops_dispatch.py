"""``impl`` dispatch: "auto" falls back to the reference with one warning naming the reason."""

from __future__ import annotations

import warnings

import pytest
import torch

from fastpggan import ops
from fastpggan.ops import dispatch


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "_warned", set())


def _auto_three_times(capability, problem) -> tuple[list[str], list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picks = []
        for _ in range(3):
            choice, reason = dispatch.choose_impl("auto", "cuda", capability, problem)
            if reason is not None:
                dispatch.warn_once(reason)
            picks.append(choice)
    return picks, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_auto_on_capability_61_picks_reference_with_one_warning() -> None:
    picks, caught = _auto_three_times((6, 1), None)
    assert picks == ["reference"] * 3
    assert len(caught) == 1 and "capability 6.1" in str(caught[0].message)


def test_auto_without_triton_picks_reference_with_one_warning() -> None:
    problem = "Triton is unavailable (ModuleNotFoundError: No module named 'triton')"
    picks, caught = _auto_three_times((8, 0), problem)
    assert picks == ["reference"] * 3
    assert len(caught) == 1 and "No module named 'triton'" in str(caught[0].message)


def test_auto_on_volta_or_newer_picks_triton_silently() -> None:
    picks, caught = _auto_three_times((7, 0), None)
    assert picks == ["triton"] * 3 and caught == []


def test_choose_impl_rules() -> None:
    assert dispatch.choose_impl("reference", "cuda", (9, 0), None) == ("reference", None)
    assert dispatch.choose_impl("auto", "cpu", None, None)[0] == "reference"
    # explicit "triton": served on CPU only by the interpreter; a reason means it cannot run
    assert dispatch.choose_impl("triton", "cpu", None, None, interpreted=True) == ("triton", None)
    assert "TRITON_INTERPRET" in dispatch.choose_impl("triton", "cpu", None, None)[1]
    assert dispatch.choose_impl("triton", "cuda", (6, 1), None)[1] is not None
    with pytest.raises(ValueError, match="impl must be one of"):
        dispatch.choose_impl("fast", "cuda", (9, 0), None)


def test_public_ops_auto_on_cpu_use_reference_and_warn_once() -> None:
    x = torch.randn(2, 3, 2, 2)
    b = torch.randn(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = ops.bias_lrelu(x, b)
        y2 = ops.bias_lrelu_pixelnorm(x, b, 0.5)
        y3 = ops.minibatch_stddev(x)
    assert len([w for w in caught if "tensors on cpu" in str(w.message)]) == 1
    torch.testing.assert_close(y1, ops.reference.bias_lrelu(x, b), rtol=0, atol=0)
    torch.testing.assert_close(y2, ops.reference.bias_lrelu_pixelnorm(x, b, 0.5), rtol=0, atol=0)
    torch.testing.assert_close(y3, ops.reference.minibatch_stddev(x), rtol=0, atol=0)


def test_broken_triton_never_crashes_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "load_triton_ops", lambda: "Triton is unavailable (boom)")
    x = torch.randn(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ops.resolve_impl("auto", x) == "reference"
        assert ops.resolve_impl("auto", x) == "reference"
    assert len(caught) == 1 and "boom" in str(caught[0].message)
    with pytest.raises(RuntimeError, match="impl='triton' cannot run: Triton is unavailable"):
        ops.bias_lrelu(x, torch.zeros(3), impl="triton")


@pytest.mark.parametrize("impl", ["auto", "reference", "triton"])
def test_dispatch_traces_without_graph_breaks(impl: str) -> None:
    # The dispatch decision (import of the Triton ops, capability query, warning) must not break
    # a torch.compile graph; fullgraph=True raises on any break. The eager backend keeps this
    # on CPU (inductor cannot compile Triton ops without a GPU).
    def fn(x, b, impl=impl):
        y = ops.bias_lrelu_pixelnorm(ops.bias_lrelu(x, b, 0.5, impl=impl), b, impl=impl)
        return ops.minibatch_stddev(y, impl=impl)

    x, b = torch.randn(4, 3, 4, 4), torch.randn(3)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = torch.compile(fn, fullgraph=True, backend="eager")(x, b)
    torch.testing.assert_close(got, fn(x, b, "reference"))
