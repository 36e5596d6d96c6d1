"""The augmentation pipeline (fastpggan.augment): every transform against a direct
implementation on small images (and its inverse where it has one), p = 0 exactly the identity,
awkward shapes, float64 gradcheck and gradgradcheck (the penalty's double backward runs through
it), and no black borders (mirrored, not zero-padded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastpggan.augment import (
    Augment,
    augment,
    blit,
    blit_params,
    check_pipe,
    colour,
    colour_matrix,
    colour_params,
    geometric,
    geometric_matrix,
    geometric_params,
)

PIPES = ("b", "g", "c", "bg", "bc", "gc", "bgc")
L = torch.long


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth(n: int, size: int, dtype=torch.float64) -> torch.Tensor:
    """Band-limited RGB images ``[n, 3, size, size]`` (a few cycles per image) and the function
    they sample, ``f(x, y)`` in pixels about the centre."""
    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = 2 * math.pi / size
        chans = [torch.cos(w * 1.0 * x + 0.3) + 0.5 * torch.sin(w * 1.5 * y),
                 torch.sin(w * 0.5 * (x + y)), 0.7 * torch.cos(w * (x - 2 * y) / 2)]
        return torch.stack(chans, 0)
    c = (torch.arange(size, dtype=dtype) + 0.5) - size / 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    return f(x, y).unsqueeze(0).expand(n, 3, size, size).clone(), f


@pytest.mark.parametrize("pipe", PIPES)
@pytest.mark.parametrize("shape", [(3, 3, 8, 8), (3, 3, 4, 4), (1, 3, 16, 16)])
def test_p_zero_is_exactly_the_identity(pipe, shape):
    x = torch.randn(shape)
    assert torch.equal(augment(x, torch.tensor(0.0), pipe, _gen()), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [4, 8])
def test_shapes_dtypes_and_finite_at_p_one(dtype, size):
    x = torch.randn(3, 3, size, size, dtype=dtype)
    y = augment(x, torch.tensor(1.0), "bgc", _gen())
    assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()
    assert not torch.equal(y, x)


def test_same_generator_state_same_augmentation_and_p_moves_in_place():
    x = torch.randn(4, 3, 8, 8)
    p = torch.tensor(0.0)
    aug = Augment("bgc", p, _gen(5))
    assert torch.equal(aug(x), x)
    p.fill_(0.8)  # the loop moves p in place: the same object sees it
    a = Augment("bgc", p, _gen(5))(x)
    assert not torch.equal(a, x)
    assert torch.equal(a, augment(x, torch.tensor(0.8), "bgc", _gen(5)))


def test_check_pipe():
    assert check_pipe("gc") == "gc"
    for bad in ("", "bb", "x", "bgcx"):
        with pytest.raises(ValueError, match="distinct letters"):
            check_pipe(bad)


# --- blits against numpy -----------------------------------------------------------------
def _blit_direct(img: np.ndarray, flip: int, turns: int, sx: int, sy: int) -> np.ndarray:
    """[C, S, S]: np.flip, np.rot90 (counter-clockwise as displayed), then a shift with
    symmetric padding."""
    out = img[:, :, ::-1] if flip else img
    out = np.rot90(out, turns, axes=(1, 2))
    S = img.shape[1]
    big = np.pad(out, ((0, 0), (S, S), (S, S)), mode="symmetric")
    return big[:, S - sy:2 * S - sy, S - sx:2 * S - sx]


@pytest.mark.parametrize("size", [4, 5, 8])
def test_blit_matches_numpy_flip_rot90_and_mirrored_shift(size):
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    for flip in (0, 1):
        for turns in range(4):
            for sx, sy in ((0, 0), (1, 0), (-2, 1), (size - 1, -size + 1)):
                got = blit(x, torch.tensor([flip]), torch.tensor([turns]), torch.tensor([[sx, sy]]))
                want = _blit_direct(x[0].numpy(), flip, turns, sx, sy)
                np.testing.assert_array_equal(got[0].numpy(), want)


def test_blit_inverses_and_batch_independence():
    x = torch.randn(3, 3, 8, 8)
    flip, turns = torch.tensor([1, 0, 1]), torch.tensor([1, 2, 3])
    none = torch.zeros(3, 2, dtype=L)
    y = blit(x, flip, turns, none)
    back = blit(blit(y, torch.zeros(3, dtype=L), (4 - turns) % 4, none), flip, torch.zeros(3, dtype=L), none)
    assert torch.equal(back, x)
    # one image's parameters do not touch another's
    one = blit(x[1:2], flip[1:2], turns[1:2], none[1:2])
    assert torch.equal(one, y[1:2])


# --- geometric against sampling the underlying function -------------------------------------
def _geometric_direct(f, M: torch.Tensor, size: int) -> torch.Tensor:
    """The image moved by ``M`` [3, 3], evaluated exactly: f at the inverse-mapped centres."""
    c = (torch.arange(size, dtype=torch.float64) + 0.5) - size / 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    src = torch.linalg.inv(M) @ torch.stack([x.flatten(), y.flatten(), torch.ones(size * size, dtype=torch.float64)])
    return f(src[0].view(size, size), src[1].view(size, size))


def _p(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


@pytest.mark.parametrize("params", [
    (1.0, 0.0, 1.0, 0.0, 0.0),  # identity
    (1.0, 0.0, 1.0, 1.5, -0.75),  # fractional move
    (1.0, 0.4, 1.0, 0.0, 0.0),  # rotation
    (1.3, 0.0, 1.0, 0.0, 0.0),  # zoom in
    (0.8, -1.0, 1.25, 0.5, 0.25),  # all together
])
def test_geometric_matches_the_moved_function(params):
    """On a band-limited image the resampling equals the moved function, away from the borders
    (where the mirror takes over): the filters' ripple only."""
    size = 32
    x, f = _smooth(1, size)
    M = geometric_matrix(*(_p(v) for v in params))
    got = geometric(x, M)[0]
    want = _geometric_direct(f, M[0], size)
    inner = slice(8, -8)
    err = (got[:, inner, inner] - want[:, inner, inner]).abs().max()
    assert err < 0.02, err


def test_geometric_quarter_turn_and_integer_move_match_the_blits():
    size = 16
    x, _ = _smooth(1, size)
    quarter = geometric(x, geometric_matrix(_p(1), _p(-math.pi / 2), _p(1), _p(0), _p(0)))
    assert (quarter - blit(x, torch.tensor([0]), torch.tensor([1]), torch.zeros(1, 2, dtype=L))).abs().max() < 0.02
    moved = geometric(x, geometric_matrix(_p(1), _p(0), _p(1), _p(3), _p(-2)))
    want = blit(x, torch.tensor([0]), torch.tensor([0]), torch.tensor([[3, -2]]))
    assert (moved - want)[..., 4:-4, 4:-4].abs().max() < 0.02


def test_geometric_inverse_returns_the_image():
    size = 32
    x, _ = _smooth(2, size)
    M = geometric_matrix(_p(1.2, 0.9), _p(0.5, -2.0), _p(0.9, 1.1), _p(1.3, -0.4), _p(0.2, 0.6))
    back = geometric(geometric(x, M), torch.linalg.inv(M))
    assert (back - x)[..., 8:-8, 8:-8].abs().max() < 0.03


def test_no_black_borders_a_constant_image_stays_constant():
    """Mirroring, not zero padding: whatever the blits and geometric transforms do, a flat image
    stays flat (zero padding would bring in dark corners the generator could learn)."""
    x = torch.full((8, 3, 8, 8), 0.6, dtype=torch.float64)
    y = augment(x, torch.tensor(1.0), "bg", _gen(3))
    assert (y - 0.6).abs().max() < 1e-12


# --- colour against per-pixel formulas ----------------------------------------------------
def _cm(b=0.0, c=1.0, flip=0.0, theta=0.0, s=1.0) -> torch.Tensor:
    return colour_matrix(_p(b), _p(c), _p(flip), _p(theta), _p(s))


def test_colour_transforms_match_direct_formulas():
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64) * 2 - 1
    grey = x.mean(1, keepdim=True)
    torch.testing.assert_close(colour(x, _cm(b=0.3)), x + 0.3)
    torch.testing.assert_close(colour(x, _cm(c=1.7)), x * 1.7)
    torch.testing.assert_close(colour(x, _cm(flip=1.0)), x - 2 * grey)
    torch.testing.assert_close(colour(x, _cm(s=0.25)), grey + 0.25 * (x - grey))
    torch.testing.assert_close(colour(x, _cm(s=0.0)), grey.expand_as(x))
    # a third of a turn about the grey axis moves each channel's value to the next channel
    torch.testing.assert_close(colour(x, _cm(theta=2 * math.pi / 3)), x[:, [2, 0, 1]])
    # together, in the documented order
    want = x + 0.1
    want = want * 0.8
    want = want - 2 * want.mean(1, keepdim=True)
    want = want[:, [2, 0, 1]]
    g = want.mean(1, keepdim=True)
    want = g + 1.5 * (want - g)
    torch.testing.assert_close(colour(x, _cm(0.1, 0.8, 1.0, 2 * math.pi / 3, 1.5)), want)


def test_colour_inverses():
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    for fwd, inv in ((_cm(theta=0.7), _cm(theta=-0.7)), (_cm(flip=1.0), _cm(flip=1.0)),
                     (_cm(s=2.0), _cm(s=0.5)), (_cm(b=0.2, c=2.0), _cm(b=-0.2, c=1.0) @ _cm(c=0.5))):
        torch.testing.assert_close(colour(colour(x, fwd), inv), x)


def test_hue_rotation_keeps_luma_and_chroma_norm():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    y = colour(x, _cm(theta=1.1).expand(2, 4, 4))
    torch.testing.assert_close(y.mean(1), x.mean(1))
    torch.testing.assert_close((y - y.mean(1, keepdim=True)).norm(dim=1), (x - x.mean(1, keepdim=True)).norm(dim=1))


# --- gradients ----------------------------------------------------------------------------
@pytest.mark.parametrize("pipe", ["b", "g", "c", "bgc"])
def test_gradcheck_and_gradgradcheck_float64(pipe):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    p = torch.tensor(0.7, dtype=torch.float64)

    def fn(t: torch.Tensor) -> torch.Tensor:  # the same draws on every call
        return augment(t, p, pipe, _gen(11)).square()  # squared: a non-linear downstream

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_each_transform_is_drawn_with_probability_p():
    """Each transform independently with probability p: the share of images a class leaves
    untouched is (1 - p) ** (its transforms), and a drawn flip or turn is uniform."""
    n, p = 20000, torch.tensor(0.3, dtype=torch.float64)
    like = torch.zeros(n, 3, 8, 8, dtype=torch.float64)
    _, moved = geometric_params(n, 8, p, like, _gen(1))
    _, changed = colour_params(n, p, like, _gen(2))
    flip, turns, shift = blit_params(n, 8, p, like, _gen(3))
    for share, want in ((moved.double().mean(), 1 - 0.7**4), (changed.double().mean(), 1 - 0.7**5),
                        (flip.double().mean(), 0.3 / 2), ((turns != 0).double().mean(), 0.3 * 3 / 4)):
        assert abs(share - want) < 4 * math.sqrt(want * (1 - want) / n), (share, want)
    assert shift.abs().max() <= 1  # at most an eighth of 8 px
