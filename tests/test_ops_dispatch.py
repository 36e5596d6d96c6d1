"""``impl`` dispatch: the rules, the first-call self-check, the fallback and its one warning.

No GPU here: a GPU is simulated by telling the dispatch that CPU tensors sit on a CUDA device of
capability 6.1 (a GTX 1080), while the Triton kernels run in the interpreter; a broken kernel is
simulated by handing the dispatch a copy of the Triton ops module with one op replaced.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from fastpggan import ops
from fastpggan.ops import dispatch, registry, selfcheck, toolchain, verify


@pytest.fixture(autouse=True)
def _fresh_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.setattr(dispatch, "_decisions", {})
    monkeypatch.delenv(verify.ENV, raising=False)


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


def test_auto_on_capability_61_picks_triton_silently() -> None:
    picks, caught = _auto_three_times((6, 1), None)
    assert picks == ["triton"] * 3 and caught == []


def test_auto_below_pascal_picks_reference_with_one_warning() -> None:
    picks, caught = _auto_three_times((5, 2), None)
    assert picks == ["reference"] * 3
    assert len(caught) == 1 and "capability 5.2 is below 6.0" in str(caught[0].message)


def test_auto_when_ptxas_cannot_build_for_the_card_picks_reference() -> None:
    problem = "Triton's ptxas (/x/ptxas, CUDA 13.0) cannot build for sm_61"
    picks, caught = _auto_three_times((6, 1), problem)
    assert picks == ["reference"] * 3
    assert len(caught) == 1 and "cannot build for sm_61" in str(caught[0].message)


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
    # the CPU's path is the reference: no reason, so no warning
    assert dispatch.choose_impl("auto", "cpu", None, None) == ("reference", None)
    assert dispatch.choose_impl("auto", "cpu", None, "Triton is unavailable") == ("reference", None)
    # explicit "triton": served on CPU only by the interpreter; a reason means it cannot run
    assert dispatch.choose_impl("triton", "cpu", None, None, interpreted=True) == ("triton", None)
    assert "TRITON_INTERPRET" in dispatch.choose_impl("triton", "cpu", None, None)[1]
    assert dispatch.choose_impl("triton", "cuda", (6, 1), None) == ("triton", None)
    assert dispatch.choose_impl("triton", "cuda", (6, 0), None) == ("triton", None)
    assert "below 6.0" in dispatch.choose_impl("triton", "cuda", (5, 2), None)[1]
    with pytest.raises(ValueError, match="impl must be one of"):
        dispatch.choose_impl("fast", "cuda", (9, 0), None)


def test_tritons_ptxas_builds_for_pascal() -> None:
    # What "auto" asks before it takes Triton on a 6.x card: the ptxas Triton compiles with
    # (bundled in its wheel) lists sm_61. CUDA 13's dropped it; CUDA 12's (Triton's) has it.
    path = toolchain.ptxas_path(61)
    assert {60, 61, 70, 75, 80, 90} <= toolchain.ptxas_archs(path)
    assert toolchain.ptxas_problem((6, 1)) is None
    assert toolchain.ptxas_version(path).startswith("12.")


def test_ptxas_without_the_cards_arch_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "ptxas_archs", lambda path: frozenset({75, 80, 90}))
    assert "cannot build for sm_61" in toolchain.ptxas_problem((6, 1))
    assert toolchain.ptxas_problem((8, 0)) is None


def test_public_ops_auto_on_cpu_use_reference_silently() -> None:
    x = torch.randn(2, 3, 2, 2)
    b = torch.randn(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = ops.bias_lrelu(x, b)
        y2 = ops.bias_lrelu_pixelnorm(x, b, 0.5)
        y3 = ops.minibatch_stddev(x)
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    torch.testing.assert_close(y1, ops.reference.bias_lrelu(x, b), rtol=0, atol=0)
    torch.testing.assert_close(y2, ops.reference.bias_lrelu_pixelnorm(x, b, 0.5), rtol=0, atol=0)
    torch.testing.assert_close(y3, ops.reference.minibatch_stddev(x), rtol=0, atol=0)


def test_broken_triton_never_crashes_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "load_triton_ops", lambda: "Triton is unavailable (boom)")
    _pretend_cpu_is_cuda(monkeypatch, (8, 6))
    x = torch.randn(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ops.resolve_impl("auto", x) == "reference"
        assert ops.resolve_impl("auto", x) == "reference"
    assert len(caught) == 1 and "boom" in str(caught[0].message)
    with pytest.raises(RuntimeError, match="impl='triton' cannot run: Triton is unavailable"):
        ops.bias_lrelu(x, torch.zeros(3), impl="triton")


# ------------------------------------------------------------------------------------------------
# The first-call self-check, on a simulated GTX 1080


def _pretend_cpu_is_cuda(monkeypatch: pytest.MonkeyPatch, capability=(6, 1)) -> None:
    """Make the dispatch treat CPU tensors as sitting on a CUDA GPU of ``capability``."""
    real_choose = dispatch.choose_impl

    def choose(impl, device_type, cap, problem, interpreted=False):
        return real_choose(impl, "cuda", capability, problem, interpreted)

    monkeypatch.setattr(dispatch, "choose_impl", choose)


def _triton_ops_with(**replaced) -> SimpleNamespace:
    """The Triton ops module (interpreted kernels) with some ops replaced."""
    real = dispatch.load_triton_ops()
    assert not isinstance(real, str), real
    names = (*registry.OPS, "INTERPRETED")  # each op's torch.library op shares its name
    return SimpleNamespace(**({n: getattr(real, n) for n in names} | replaced))


def _wrong_slope(x, b, s):
    # a kernel that computes almost the right thing: LeakyReLU slope 0.21 instead of 0.2
    return torch.nn.functional.leaky_relu(x + b.view(1, -1, *[1] * (x.dim() - 2)), 0.21) * s


def _ptxas_refuses(x, group):
    raise RuntimeError("ptxas fatal: Value 'sm_61' is not defined for option 'gpu-name'")


def _three_ops(impl: str, x4: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    return [ops.bias_lrelu(x4, b, 0.5, impl=impl), ops.bias_lrelu_pixelnorm(x4, b, impl=impl),
            ops.minibatch_stddev(x4, impl=impl)]


def test_self_check_passes_for_the_real_kernels() -> None:
    module = dispatch.load_triton_ops()
    for dtype in (torch.float32, torch.float64, torch.float16):
        for op in registry.OPS:
            assert verify.self_check(op, module, torch.device("cpu"), dtype) is None, (op, dtype)


def test_self_check_reports_a_mismatch_and_an_exception() -> None:
    broken = _triton_ops_with(bias_lrelu=_wrong_slope, minibatch_stddev=_ptxas_refuses)
    cpu = torch.device("cpu")
    found = verify.self_check("bias_lrelu", broken, cpu, torch.float32)
    assert found is not None and found.startswith("output differs from the reference by")
    found = verify.self_check("minibatch_stddev", broken, cpu, torch.float32)
    assert found == "RuntimeError: ptxas fatal: Value 'sm_61' is not defined for option 'gpu-name'"
    nan_grad = _triton_ops_with(
        bias_lrelu_pixelnorm=lambda x, b, s: (NanGrad.apply(ops.reference.bias_lrelu_pixelnorm(x, b, s)), None))
    found = verify.self_check("bias_lrelu_pixelnorm", nan_grad, cpu, torch.float32)
    assert found is not None and found.startswith("gradient w.r.t. x differs")


class NanGrad(torch.autograd.Function):
    """Identity whose backward returns NaN: a kernel with a broken backward only."""

    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("nan"))


def test_failing_self_check_falls_back_per_op_with_one_warning(monkeypatch) -> None:
    _pretend_cpu_is_cuda(monkeypatch)
    broken = _triton_ops_with(bias_lrelu=_wrong_slope)
    monkeypatch.setattr(dispatch, "load_triton_ops", lambda: broken)
    calls = []
    real_check = verify.self_check
    monkeypatch.setattr(verify, "self_check", lambda *a: calls.append(a[0]) or real_check(*a))
    x4, b = torch.randn(4, 3, 2, 2), torch.randn(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            got = _three_ops("auto", x4, b)
    (warning,) = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    text = str(warning.message)
    assert "bias_lrelu failed its self-check" in text and "in float32" in text
    assert "uses the PyTorch reference" in text and "python -m fastpggan.ops.selfcheck" in text
    # the broken op fell back to the reference; the others kept the (interpreted) kernels
    want = _three_ops("reference", x4, b)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)
    assert ops.resolve_impl("auto", x4, "bias_lrelu_pixelnorm") == "triton"
    assert ops.resolve_impl("auto", x4, "bias_lrelu") == "reference"
    # once per (op, device, dtype): nine calls, three checks; another dtype checks again
    assert sorted(calls) == sorted(registry.OPS)
    with pytest.warns(RuntimeWarning, match="bias_lrelu failed its self-check .* in float64"):
        ops.bias_lrelu(x4.double(), b.double(), impl="auto")
    assert calls[-1] == "bias_lrelu" and len(calls) == 4


def test_failing_self_check_is_an_error_with_impl_triton(monkeypatch) -> None:
    _pretend_cpu_is_cuda(monkeypatch)
    broken = _triton_ops_with(minibatch_stddev=_ptxas_refuses)
    monkeypatch.setattr(dispatch, "load_triton_ops", lambda: broken)
    x4 = torch.randn(4, 3, 2, 2)
    for _ in range(2):  # remembered, and raised again
        with pytest.raises(RuntimeError, match="impl='triton' cannot run: the Triton kernel of "
                           "minibatch_stddev failed its self-check .* ptxas fatal"):
            ops.minibatch_stddev(x4, impl="triton")


def test_check_ops_runs_every_check_up_front(monkeypatch) -> None:
    _pretend_cpu_is_cuda(monkeypatch)
    broken = _triton_ops_with(minibatch_stddev=_ptxas_refuses)
    monkeypatch.setattr(dispatch, "load_triton_ops", lambda: broken)
    with pytest.raises(RuntimeError, match="minibatch_stddev failed its self-check"):
        ops.check_ops("triton", "cpu")
    with pytest.warns(RuntimeWarning, match="minibatch_stddev failed its self-check"):
        ops.check_ops("auto", "cpu")
    assert ops.resolve_impl("auto", torch.zeros(1), "minibatch_stddev") == "reference"
    assert ops.resolve_impl("auto", torch.zeros(1), "bias_lrelu") == "triton"


def test_self_check_can_be_turned_off(monkeypatch) -> None:
    _pretend_cpu_is_cuda(monkeypatch)
    broken = _triton_ops_with(bias_lrelu=_wrong_slope)
    monkeypatch.setattr(dispatch, "load_triton_ops", lambda: broken)
    monkeypatch.setenv(verify.ENV, "0")
    x4, b = torch.randn(4, 3, 2, 2), torch.randn(3)
    # unchecked, the broken kernel runs: the check is what catches it
    assert not torch.allclose(ops.bias_lrelu(x4, b), ops.reference.bias_lrelu(x4, b))
    assert "self-check off (FASTPGGAN_SELF_CHECK=0)" in _describe_simulated_1080(monkeypatch)


def test_self_check_leaves_the_random_stream_and_modes_alone(monkeypatch) -> None:
    _pretend_cpu_is_cuda(monkeypatch)
    x4, b = torch.randn(4, 3, 2, 2), torch.randn(3)
    state = torch.get_rng_state()
    # first calls under no_grad and inference_mode (sampling), the check itself needs autograd
    with torch.no_grad():
        y = ops.bias_lrelu(x4, b, impl="auto")
    with torch.inference_mode():
        m = ops.minibatch_stddev(x4, impl="auto")
    assert torch.equal(torch.get_rng_state(), state)
    assert ops.resolve_impl("auto", x4, "bias_lrelu") == "triton"
    assert ops.resolve_impl("auto", x4, "minibatch_stddev") == "triton"
    torch.testing.assert_close(y, ops.reference.bias_lrelu(x4, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m, ops.reference.minibatch_stddev(x4), rtol=1e-5, atol=1e-5)


def test_self_check_runs_while_tracing_never_in_the_graph(monkeypatch) -> None:
    # Under torch.compile the decision (and with it the self-check) is a traced constant: the
    # graph is the same whether the check ran during this trace or before it.
    _pretend_cpu_is_cuda(monkeypatch)
    graphs: list[torch.fx.GraphModule] = []

    def recording(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def fn(x, b):
        return ops.bias_lrelu(x, b, 0.5, impl="auto")

    x, b = torch.randn(4, 3, 2, 2), torch.randn(3)
    calls = []
    real_check = verify.self_check
    monkeypatch.setattr(verify, "self_check", lambda *a: calls.append(a[0]) or real_check(*a))
    for _ in range(2):  # first trace runs the check; the second reuses the decision
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(fn, fullgraph=True, backend=recording)(x, b),
                                   ops.reference.bias_lrelu(x, b, 0.5), rtol=1e-5, atol=1e-5)
    assert calls == ["bias_lrelu"]
    first, second = ([str(n.target) for n in g.graph.nodes] for g in graphs)
    assert first == second and "fastpggan.bias_lrelu.default" in first


# ------------------------------------------------------------------------------------------------
# describe_impl: the line train prints


def _describe_simulated_1080(monkeypatch, impl: str = "auto") -> str:
    monkeypatch.setattr(dispatch, "_capability", lambda index: (6, 1))
    monkeypatch.setattr(dispatch, "_index", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA GeForce GTX 1080")
    return ops.describe_impl(impl, "cuda")


def test_describe_impl_on_cpu() -> None:
    assert ops.describe_impl("auto", "cpu") == (
        "fused ops: PyTorch reference (CPU; the Triton kernels run on CUDA GPUs)")
    assert ops.describe_impl("reference", torch.device("cpu")) == (
        "fused ops: PyTorch reference (asked for)")
    # the tests run the kernels in Triton's interpreter
    assert "CPU interpreter" in ops.describe_impl("triton", "cpu")


def test_impl_problem_only_for_triton_that_cannot_run(monkeypatch) -> None:
    assert ops.impl_problem("triton", "cpu") is None  # the interpreter serves it here
    assert ops.impl_problem("auto", "cpu") is None and ops.impl_problem("reference", "cpu") is None
    monkeypatch.setattr(dispatch, "load_triton_ops", lambda: "Triton is unavailable (boom)")
    assert ops.impl_problem("triton", "cpu") == "Triton is unavailable (boom)"
    assert ops.impl_problem("auto", "cpu") is None


def test_describe_impl_on_a_gtx_1080(monkeypatch) -> None:
    assert _describe_simulated_1080(monkeypatch) == (
        "fused ops: Triton kernels on cuda:0 (NVIDIA GeForce GTX 1080, compute capability 6.1), "
        "each checked against the PyTorch reference on first use")
    monkeypatch.setattr(toolchain, "ptxas_archs", lambda path: frozenset({75, 80, 90}))
    text = _describe_simulated_1080(monkeypatch)
    assert text.startswith("fused ops: PyTorch reference (Triton's ptxas") and "sm_61" in text
    text = _describe_simulated_1080(monkeypatch, "triton")
    assert text.startswith("fused ops: Triton kernels cannot run: Triton's ptxas")


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


def test_selfcheck_command_reports_versions_and_each_op(monkeypatch, capsys) -> None:
    assert selfcheck.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "Triton's ptxas: " in out
    assert "device: cpu" in out and "fused ops: PyTorch reference (CPU" in out
    for op in registry.OPS:
        assert f"{op} float32: ok" in out
    broken = _triton_ops_with(bias_lrelu=_wrong_slope)
    monkeypatch.setattr(dispatch, "load_triton_ops", lambda: broken)
    assert selfcheck.main(["--device", "cpu"]) == 1
    assert "bias_lrelu float32: FAILED: output differs" in capsys.readouterr().out
