"""Unit checks of the training pieces: ADA augmentation, its controller, mbstd ordering, EMA, config."""

import json
import math

import numpy as np
import pytest
import torch

from sg3lib.train import augment as aug
from sg3lib.train import config as C
from sg3lib.train.ema import ema_beta, update_ema
from sg3lib.train.loss import blur, blur_sigma_at, mbstd_order, path_length_batch


def _img(n=4, c=3, r=16):
    return torch.randn(n, c, r, r, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)


def _rnd(n, **gates):
    """Random numbers with every transform switched off except those in `gates` (value = param)."""
    r = aug.draw(n, torch.Generator().manual_seed(1))
    r = {k: torch.ones(n) if k in aug._U_KEYS and not k.endswith(("_bit", "_k", "_a")) and k not in
         ("itx", "ity") else v for k, v in r.items()}
    for k, v in gates.items():
        r[k] = torch.full([n], float(v))
    return r


def _turn(a=0.0, flip=1.0, scale=1.0, tx=0.0, ty=0.0):
    """One geometric matrix [1, 3, 3]: x flipped, scaled, turned by a, shifted; in float32, as
    geometric_matrix makes them."""
    c, s = math.cos(a) * scale, math.sin(a) * scale
    return torch.tensor([[[c * flip, -s, tx], [s * flip, c, ty], [0, 0, 1]]], dtype=torch.float64).float()


def test_p_zero_is_identity_and_draws_split_invariant():
    x = _img(8)
    r = aug.draw(8, torch.Generator().manual_seed(3))
    assert torch.equal(aug.augment(x, 0.0, r), x)
    y = aug.augment(x, 0.6, r)
    assert not torch.allclose(y, x)
    y2 = aug.augment(x[2:6], 0.6, aug.slice_rnd(r, 2, 6))
    torch.testing.assert_close(y[2:6], y2)  # an image's augmentation does not depend on its batch


def test_augmentation_pads_without_reflect_padding(monkeypatch):
    """--deterministic on a GPU failed at the first augmented step: reflect padding's CUDA backward
    has no deterministic kernel (torch raises under use_deterministic_algorithms). The padding is
    index gathers now, whose backward is deterministic there; the values are those of reflect."""
    import torch.nn.functional as F
    x = _img(8).requires_grad_(True)
    r = aug.draw(8, torch.Generator().manual_seed(3))
    want = aug.augment(x, 0.9, r)
    real_pad = F.pad

    def pad(t, p, mode="constant", value=None):
        assert mode != "reflect", "reflect padding in the augmentation"
        return real_pad(t, p, mode=mode) if value is None else real_pad(t, p, mode=mode, value=value)
    monkeypatch.setattr(F, "pad", pad)
    got = aug.augment(x, 0.9, r)
    got.sum().backward()
    assert torch.equal(got, want) and x.grad.isfinite().all()


def test_pixel_blitting_is_exact():
    x = _img()
    flip = aug.augment(x, 0.5, _rnd(4, xflip=0.0, xflip_bit=0.0))
    torch.testing.assert_close(flip, x.flip(3), rtol=0, atol=1e-6)
    rot = aug.augment(x, 0.5, _rnd(4, rot90=0.0, rot90_k=0.3))  # k = 1: a quarter turn
    assert any(torch.allclose(rot, torch.rot90(x, k, dims=(2, 3)), atol=1e-5) for k in (1, 3))
    # Integer translation by 2 px (0.125 * 16): output pixel x shows input pixel x + 2, and the
    # border is filled by reflection (x = 16 -> 14, x = 17 -> 13).
    sh = aug.augment(x, 0.5, _rnd(4, itrans=0.0, itx=1.0, ity=0.5))
    torch.testing.assert_close(sh[..., 0:14], x[..., 2:16], atol=1e-6, rtol=0)
    torch.testing.assert_close(sh[..., 14], x[..., 14], atol=1e-6, rtol=0)
    torch.testing.assert_close(sh[..., 15], x[..., 13], atol=1e-6, rtol=0)


def test_pixel_blitting_copies_pixels_bit_for_bit():
    """Quarter turns copy pixels: the matrix's cos(pi/2) of -4e-8 used to put the source positions a
    hair off the pixel centres, and at 64 px a quarter turn blended in ~1e-5 of a neighbour."""
    x = _img(2, r=64)
    for k in (1, 2, 3):
        y = aug.augment(x, 0.5, _rnd(2, rot90=0.0, rot90_k=k / 4 + 0.1))
        assert any(torch.equal(y, torch.rot90(x, j, dims=(2, 3))) for j in (k, 4 - k)), k


def test_sym6_is_an_orthonormal_wavelet_with_six_vanishing_moments():
    """The stored Symlet-6 values: low-pass sum sqrt(2), orthonormal under even shifts, and the
    matching high-pass g[k] = (-1)^k h[11 - k] kills polynomials up to degree 5."""
    h = torch.tensor(aug.SYM6, dtype=torch.float64)
    assert abs(h.sum().item() - 2 ** 0.5) < 1e-12
    for shift in range(0, 12, 2):
        assert abs((h[shift:] * h[:12 - shift]).sum().item() - (shift == 0)) < 1e-12, shift
    g = h.flip(0) * torch.tensor([(-1.0) ** k for k in range(12)], dtype=torch.float64)
    k = torch.arange(12, dtype=torch.float64)
    for m in range(6):
        assert abs((g * k ** m).sum().item()) < 1e-9 * 12 ** m, m


def test_fractional_geometry_goes_through_the_wavelet_filtered_resampling():
    """ADA app. B: a sub-pixel shift or free rotation is resampled at twice the resolution between
    Symlet-6 filters. On a band-limited image, a 0.3 px shift comes out 3x closer to the truly
    shifted image than one bilinear resampling gets; whole-pixel moves stay exact copies; a batch
    mixing both gives each image what it gets alone."""
    xs = torch.arange(32, dtype=torch.float64)
    wave = lambda t: torch.cos(2 * torch.pi * 0.2 * t).view(1, 1, 1, 32).expand(1, 1, 32, 32)  # noqa: E731
    M = torch.eye(3).clone()
    M[0, 2] = 0.3  # output pixel x shows the input at x + 0.3
    M = M.unsqueeze(0)
    true = wave(xs + 0.3)[..., 8:-8]
    err_plain = (aug.resample(wave(xs), M)[..., 8:-8] - true).abs().max()
    err_ours = (aug.transform(wave(xs), M)[..., 8:-8] - true).abs().max()
    assert err_ours < err_plain / 3, (err_ours, err_plain)  # measured 3.5x
    # Up then down is the identity (orthonormal filter), up to the borders (reflect-padded first).
    x = _img(2, r=32).double()
    torch.testing.assert_close(aug.resample_antialiased(x, torch.eye(3).expand(2, 3, 3)), x, rtol=0, atol=1e-9)
    # A batch of a quarter turn, a sub-pixel shift and an identity.
    x = _img(3)
    rot = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    Ms = torch.stack([rot, M[0].float(), torch.eye(3)])
    out = aug.transform(x, Ms)
    assert any(torch.allclose(out[0:1], torch.rot90(x[0:1], k, dims=(2, 3)), rtol=0, atol=1e-6) for k in (1, 3))
    torch.testing.assert_close(out[1:2], aug.resample_antialiased(x[1:2], Ms[1:2]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[2:3], x[2:3], rtol=0, atol=0)


def test_flips_and_rotations_with_a_fraction_land_where_their_matrix_says():
    """Symlet-6 is not symmetric: the doubled image sat 0.4 fine samples off the centre the matrix
    turned about. Shifts cancelled it; a flip or a rotation turned it, so such an image came out up
    to 0.4 px from where M put it, and a quarter turn resampled (by 1e-5 rad more) differed from the
    exact copy by 0.18 on an image in [-1, 1]."""
    import math
    n = 64
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    smooth = lambda x, y: torch.cos(2 * math.pi * 0.07 * x + 0.3) * torch.cos(2 * math.pi * 0.05 * y - 0.2)  # noqa: E731
    img = smooth(xs, ys).view(1, 1, n, n).float()
    c = (n - 1) / 2
    for M in (_turn(0, flip=-1, tx=0.3), _turn(math.pi / 6), _turn(math.pi + 1e-4), _turn(math.pi / 2 + 1e-5)):
        src = M[0].double() @ torch.stack([xs.flatten() - c, ys.flatten() - c, torch.ones(n * n, dtype=torch.float64)])
        truth = smooth(src[0] + c, src[1] + c).view(n, n).float()  # the image truly moved as M says
        err = (aug.resample_antialiased(img, M)[0, 0] - truth)[16:-16, 16:-16].abs().max()
        assert err < 0.01, (M, err)  # was 0.06-0.18 for these
    exact = aug.transform(img, _turn(math.pi / 2).round())
    near = aug.transform(img, _turn(math.pi / 2 + 1e-5))
    assert (exact - near)[..., 8:-8, 8:-8].abs().max() < 0.01


def test_sub_pixel_moves_reflect_the_image_itself_at_the_borders():
    """ADA app. B: the image is padded by reflection as far as the transform reads before the
    doubled-resolution resampling. The upsampled image used to be reflected instead (a quarter
    pixel off the image's own mirror, with the filters cut at the edge): a 2.001 px shift differed
    from the exact 2 px copy by up to 1.8 at the borders, a near-identity scale from the image by 0.4."""
    x = _img(2)
    for tx, ty in ((2, 0), (0, 0), (-3, 5)):
        M = torch.eye(3).repeat(2, 1, 1)
        M[:, 0, 2], M[:, 1, 2] = tx, ty
        exact = aug.transform(x, M)
        M[:, 0, 2] += 1e-3
        torch.testing.assert_close(aug.transform(x, M), exact, atol=0.02, rtol=0)
    r = _rnd(2, iso=0.0)
    r["iso_s"] = torch.full([2], 1e-3)  # scale 2^(2e-4): resampled, but all but the identity
    torch.testing.assert_close(aug.augment(x, 0.5, r), x, atol=0.02, rtol=0)


def test_colour_transforms():
    grey = torch.full([2, 3, 4, 4], 0.3)
    hue = aug.augment(grey, 0.5, _rnd(2, hue=0.0, hue_a=0.8))
    torch.testing.assert_close(hue, grey, atol=1e-6, rtol=0)  # hue rotation keeps the grey axis
    x = _img(2)
    hue = aug.augment(x, 0.5, _rnd(2, hue=0.0, hue_a=0.8))
    assert not torch.allclose(hue, x, atol=1e-3)
    torch.testing.assert_close(hue.mean(1), x.mean(1), atol=1e-5, rtol=0)  # luma kept
    b = aug.augment(x, 0.5, _rnd(2, bright=0.0))
    d = b - x
    assert torch.allclose(d, d.flatten(1)[:, :1, None, None].expand_as(d), atol=1e-6)
    assert d.abs().max() > 0
    g = aug.augment(_img(2, c=1), 0.5, _rnd(2, contrast=0.0))  # grayscale images work
    assert g.shape == (2, 1, 16, 16)


def test_colour_steps_compose_in_the_papers_order():
    """ADA app. B: brightness, then contrast, luma flip, hue rotation and saturation, each acting on the
    last one's result (contrast scales the brightness offset, hue turns the flipped colours)."""
    x = _img(2)
    steps = [dict(bright=0.0), dict(contrast=0.0), dict(lumaflip=0.0, lumaflip_bit=0.0),
             dict(hue=0.0, hue_a=0.8), dict(sat=0.0)]
    one_by_one = x
    for gate in steps:
        one_by_one = aug.augment(one_by_one, 0.5, _rnd(2, **gate))
    at_once = aug.augment(x, 0.5, _rnd(2, **{k: v for gate in steps for k, v in gate.items()}))
    torch.testing.assert_close(at_once, one_by_one, atol=1e-5, rtol=0)


def test_colour_transforms_grayscale_and_alpha():
    """L images get the colour pipeline of their (l, l, l) RGB image averaged back, luma flip
    included (ADA app. B); channels past RGB (alpha) only move with the geometry."""
    x = _img(2, c=1)
    flip = aug.augment(x, 0.5, _rnd(2, lumaflip=0.0, lumaflip_bit=0.0))
    torch.testing.assert_close(flip, -x, atol=1e-6, rtol=0)  # a grey image is its own luma
    r = _rnd(2, bright=0.0, contrast=0.0, lumaflip=0.0, lumaflip_bit=0.0, hue=0.0, sat=0.0)
    torch.testing.assert_close(aug.augment(x, 0.5, r), aug.augment(x.expand(2, 3, 16, 16), 0.5, r).mean(1, True),
                               atol=1e-5, rtol=0)
    rgba = _img(2, c=4)
    y = aug.augment(rgba, 0.5, r)
    torch.testing.assert_close(y[:, :3], aug.augment(rgba[:, :3], 0.5, r), atol=1e-6, rtol=0)
    torch.testing.assert_close(y[:, 3:], rgba[:, 3:], atol=0, rtol=0)


def test_augment_twice_differentiable():
    """Lazy R1 differentiates D(augment(x)) with respect to x, then differentiates that again."""
    x = _img(2).double().requires_grad_(True)
    r = aug.draw(2, torch.Generator().manual_seed(5))
    w = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    y = (aug.augment(x, 0.8, r).square() * w).sum()
    g, = torch.autograd.grad(y, x, create_graph=True)
    g.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_augmentations_draw_the_papers_distributions():
    """ADA app. B, bgc: each transform on with probability p (rotations p_rot = 1 - sqrt(1 - p) each, so
    that some rotation has p); scales log-normal with log2 std 0.2, integer translation uniform in
    +-0.125 of the size, fractional translation normal with std 0.125 of it, brightness std 0.2,
    contrast log2 std 0.5, saturation log2 std 1, hue and rotation angles uniform in (-pi, pi). M maps
    output pixels to input ones (the inverse transform): these distributions are symmetric, so alike."""
    n, size = 40000, 64
    u_std = math.pi / math.sqrt(3)  # of U(-pi, pi)

    def geo(**gates):
        return aug.geometric_matrix(_rnd(n, **gates), 1.0, size)

    def col(**gates):
        return aug.colour_matrix(_rnd(n, **gates), 1.0)

    r = aug.draw(n, torch.Generator().manual_seed(2))
    for key in ("xflip", "iso", "bright", "sat"):
        assert (r[key] < 0.3).float().mean().item() == pytest.approx(0.3, abs=0.01)
    rotated = (aug.geometric_matrix(dict(_rnd(n), prerot=r["prerot"], postrot=r["postrot"]), 0.3, size)
               - torch.eye(3)).abs().amax((1, 2)) > 1e-6
    assert rotated.float().mean().item() == pytest.approx(0.3, abs=0.01)
    M = geo(xflip=0.0)
    assert (M[:, 0, 0] == -1).float().mean().item() == pytest.approx(0.5, abs=0.01)
    k = torch.round(torch.atan2(geo(rot90=0.0)[:, 1, 0], geo(rot90=0.0)[:, 0, 0]) / (math.pi / 2)) % 4
    assert torch.bincount(k.long(), minlength=4).div(n).sub(0.25).abs().max() < 0.01
    t = geo(itrans=0.0)[:, :2, 2]
    assert torch.equal(t, t.round()) and t.abs().max() == size * 0.125
    assert t.float().std().item() == pytest.approx(size * 0.25 / math.sqrt(12), rel=0.03)
    assert geo(ftrans=0.0)[:, :2, 2].std().item() == pytest.approx(size * 0.125, rel=0.03)
    M = geo(iso=0.0)
    assert torch.equal(M[:, 0, 0], M[:, 1, 1]) and M[:, 0, 0].log2().std().item() == pytest.approx(0.2, rel=0.03)
    M = geo(aniso=0.0)
    torch.testing.assert_close(M[:, 0, 0] * M[:, 1, 1], torch.ones(n))
    assert M[:, 0, 0].log2().std().item() == pytest.approx(0.2, rel=0.03)
    for gate in ("prerot", "postrot"):
        M = geo(**{gate: 0.0})
        assert torch.atan2(M[:, 1, 0], M[:, 0, 0]).std().item() == pytest.approx(u_std, rel=0.03)
    assert col(bright=0.0)[:, 0, 3].std().item() == pytest.approx(0.2, rel=0.03)
    assert col(contrast=0.0)[:, 0, 0].log2().std().item() == pytest.approx(0.5, rel=0.03)
    flipped = col(lumaflip=0.0) @ torch.tensor([1.0, 1, 1, 1])
    assert (flipped[:, 0] < 0).float().mean().item() == pytest.approx(0.5, abs=0.01)  # grey (1,1,1) -> -1
    red = col(hue=0.0)[:, :3, 0]  # red's hue turned about the grey axis: its angle from red
    grey = torch.full([3], 1 / math.sqrt(3))
    a, b = red - (red @ grey)[:, None] * grey, torch.tensor([1.0, 0, 0]) - grey / math.sqrt(3)
    cos = (a @ b) / (a.norm(dim=1) * b.norm())
    sin = torch.linalg.cross(b.expand(n, 3), a) @ grey / (a.norm(dim=1) * b.norm())
    assert torch.atan2(sin, cos).std().item() == pytest.approx(u_std, rel=0.03)
    S = col(sat=0.0)  # chroma (red minus its grey) scaled by s
    chroma = S[:, :3, :3] @ torch.tensor([2 / 3, -1 / 3, -1 / 3])
    assert (chroma[:, 0] / (2 / 3)).log2().std().item() == pytest.approx(1.0, rel=0.03)


def test_ada_controller():
    ada = aug.AdaController(p=0.0, target=0.6, interval=4, speed_kimg=500)
    ada.accumulate(8.0, 8)  # r_t = 1 > target: overfitting, raise p
    assert ada.update(2, 32) == 0.0  # not an update step
    assert ada.update(3, 32) == pytest.approx(32 * 4 / 500000)
    ada.accumulate(torch.tensor(-6.0), 6)  # sums stay tensors (on the GPU) until an update reads them
    ada.accumulate(torch.tensor(-2.0), 2)  # r_t = -1 < target: lower p, never below 0
    for s in range(3):
        ada.update(s, 32)
    assert ada.update(7, 32) == 0.0 and ada.rt == -1.0
    ada.accumulate(torch.tensor(3.0), 4)
    state = ada.state_dict()
    assert state["sign_sum"] == 3.0 and isinstance(state["sign_sum"], float)
    ada2 = aug.AdaController()
    ada2.load_state_dict(state)
    assert ada2.state_dict() == state


def test_ada_p_stays_between_0_and_1():
    """p is a probability: a step down from near 0 stops at 0, a step up from near 1 stops at 1."""
    for p, sign_sum, expected in ((0.0001, -8.0, 0.0), (0.9999, 8.0, 1.0)):
        ada = aug.AdaController(p=p, target=0.6, interval=1, speed_kimg=1)
        ada.accumulate(sign_sum, 8)
        assert ada.update(0, 8) == expected, p


def test_each_geometric_step_reads_its_own_random_numbers():
    """The pre- and post-rotation angles, and the x and y fractional translations, are independent
    draws: each step reads its own key of draw()'s numbers."""
    size = 64
    M = aug.geometric_matrix(_rnd(1, prerot=0.0, prerot_a=0.75), 1.0, size)  # (0.75 * 2 - 1) pi = pi / 2
    torch.testing.assert_close(M[0, :2, :2], torch.tensor([[0.0, -1], [1, 0]]), atol=1e-6, rtol=0)
    M = aug.geometric_matrix(_rnd(1, postrot=0.0, postrot_a=0.25), 1.0, size)  # -pi / 2
    torch.testing.assert_close(M[0, :2, :2], torch.tensor([[0.0, 1], [-1, 0]]), atol=1e-6, rtol=0)
    r = _rnd(1, ftrans=0.0)
    r["ftx"], r["fty"] = torch.tensor([1.0]), torch.tensor([-2.0])
    torch.testing.assert_close(aug.geometric_matrix(r, 1.0, size)[0, :2, 2], torch.tensor([8.0, -16.0]))


def test_reflected_indices_are_torchs_reflect_padding():
    import torch.nn.functional as F
    for n in (2, 3, 5):
        i = torch.arange(-(n - 1), 2 * n - 1)
        want = F.pad(torch.arange(n, dtype=torch.float64).view(1, 1, n), (n - 1, n - 1), mode="reflect").flatten()
        assert torch.equal(aug._reflect(i, n), want.long()), n
    assert torch.equal(aug._reflect(torch.tensor([-2.0, 0.0, 3.0]), 1), torch.zeros(3))  # a single pixel


def _up2_by_definition(x, h):
    """y[j] = sqrt(2) sum_i x[i] h[j - 2i + SHIFT] along the last axis, x extended by reflection."""
    W = x.shape[-1]
    y = torch.zeros(*x.shape[:-1], 2 * W, dtype=x.dtype)
    for j in range(2 * W):
        for i in range(-W + 1, 2 * W - 1):
            k = j - 2 * i + aug._SHIFT
            if 0 <= k < len(h):
                y[..., j] += math.sqrt(2) * x[..., aug._reflect(torch.tensor(i), W)] * h[k]
    return y


def _down2_by_definition(y, h):
    """x[i] = sum_j y[j] h[j - 2i + SHIFT] / sqrt(2) along the last axis, y extended by reflection."""
    W2 = y.shape[-1]
    x = torch.zeros(*y.shape[:-1], W2 // 2, dtype=y.dtype)
    for i in range(W2 // 2):
        for k in range(len(h)):
            j = 2 * i - aug._SHIFT + k
            x[..., i] += y[..., aug._reflect(torch.tensor(j), W2)] * h[k] / math.sqrt(2)
    return x


@pytest.mark.parametrize("w", [6, 9])
def test_wavelet_up_and_down_sampling_are_their_formulas(w):
    h = torch.tensor(aug.SYM6, dtype=torch.float64)
    x = torch.randn(1, 2, 3, w, generator=torch.Generator().manual_seed(w), dtype=torch.float64)
    torch.testing.assert_close(aug._up2(x, h), _up2_by_definition(x, h), rtol=0, atol=1e-12)
    y = torch.randn(1, 2, 3, 2 * w, generator=torch.Generator().manual_seed(w + 1), dtype=torch.float64)
    torch.testing.assert_close(aug._down2(y, h), _down2_by_definition(y, h), rtol=0, atol=1e-12)


@pytest.mark.parametrize("h,w", [(16, 16), (12, 21)])
def test_sub_pixel_moves_pad_as_far_as_they_read(h, w):
    """The reflect padding is enough: the resampled image is what it would be from an image padded
    as far as reflection goes (size - 1 a side) beforehand, cropped back, for square and oblong images."""
    import torch.nn.functional as F
    x = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(h + w), dtype=torch.float64)
    big = F.pad(x, (w - 1, w - 1, h - 1, h - 1), mode="reflect")
    moves = (_turn(tx=0.3, ty=-6.6), _turn(0.2), _turn(-0.4, flip=-1), _turn(scale=1.1), _turn(0.1, scale=0.9, tx=2.5))
    for M in moves:  # (positions in float32: the two grids' are ~1e-6 apart)
        got = aug.resample_antialiased(x, M)
        want = aug.resample_antialiased(big, M)[..., h - 1:2 * h - 1, w - 1:2 * w - 1]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_only_whole_pixel_moves_are_copied():
    """Pixel blitting is told apart from the slightest fractional step: a copy where M maps pixel
    centres onto pixel centres, resampling otherwise (a quarter turn of an image whose sides differ
    by an odd count puts the centres between pixels)."""
    whole = [_turn(), _turn(math.pi / 2).round(), _turn(flip=-1), _turn(tx=3, ty=-2), _turn(math.pi).round()]
    about_corner = _turn(1e-3)  # a slight turn about pixel (0, 0): that one corner stays on its pixel
    about_corner[0, :2, 2] = about_corner[0, :2, :2] @ torch.full([2], 7.5) - 7.5
    fractional = [_turn(1e-3), _turn(scale=1.001), _turn(tx=0.01), _turn(ty=-0.02), about_corner]
    got = aug._moves_whole_pixels(torch.cat(whole + fractional), 16, 16)
    assert got.tolist() == [True] * len(whole) + [False] * len(fractional)
    quarter = _turn(math.pi / 2).round()
    assert aug._moves_whole_pixels(quarter, 16, 14).tolist() == [True]
    assert aug._moves_whole_pixels(quarter, 16, 15).tolist() == [False]


def test_hue_rotation_is_rodrigues_about_the_grey_axis():
    """ADA app. B: hue rotation turns colours about the luma axis v = (1, 1, 1) / sqrt(3) by theta:
    R r = cos(theta) r + sin(theta) v x r + (1 - cos(theta)) (v . r) v. The matrix is homogeneous
    (last row 0, 0, 0, 1) whatever the steps."""
    theta = math.pi / 2 * 0.6
    M = aug.colour_matrix(_rnd(1, hue=0.0, hue_a=0.5 + 0.3 / 2), 1.0)[0].double()  # (hue_a * 2 - 1) pi
    v = torch.full([3], 1 / math.sqrt(3), dtype=torch.float64)
    for r in torch.eye(3, dtype=torch.float64):
        want = math.cos(theta) * r + math.sin(theta) * torch.linalg.cross(v, r) + (1 - math.cos(theta)) * (v @ r) * v
        torch.testing.assert_close(M[:3, :3] @ r, want, atol=1e-6, rtol=0)
    every = aug.colour_matrix(aug.draw(64, torch.Generator().manual_seed(0)), 1.0)
    assert torch.equal(every[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(64, 4))


def test_ada_update_without_images_or_adaptation_keeps_p():
    """An update step with nothing accumulated since the last (no real logits yet) has no r_t to take:
    p and r_t stay. A fixed p stays fixed through updates even with an adapting run's sums loaded."""
    ada = aug.AdaController(p=0.25, interval=2)
    assert ada.update(1, 32) == 0.25 and ada.rt is None
    fixed = aug.AdaController(p=0.3, interval=2, enabled=False)
    fixed.load_state_dict({"p": 0.9, "sign_sum": 8.0, "count": 8.0, "rt": 1.0})
    assert [fixed.update(s, 32) for s in range(4)] == [0.3] * 4 and fixed.rt is None


def test_mbstd_order_groups_consecutive_samples():
    for n, g in ((8, 4), (8, 2), (4, 4), (2, 4), (6, 2)):
        perm, pos = mbstd_order(n, g)
        gg = min(g, n)
        # D groups input position j with j + n/gg, ...: those positions hold consecutive samples.
        for j in range(n // gg):
            members = sorted(int(perm[j + m * (n // gg)]) for m in range(gg))
            assert members == list(range(members[0], members[0] + gg))
        assert torch.equal(perm[pos], torch.arange(n))
    # made where D runs (an index from the CPU would be copied to the GPU on each call, a host sync)
    assert {t.device.type for t in mbstd_order(8, 4, torch.device("meta"))} == {"meta"}


def test_blur_and_ema_and_config():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1
    y = blur(x, 1.0)
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5) and y[0, 0, 4, 4] < 0.2
    assert torch.equal(blur(x, 0.0), x)
    assert ema_beta(0, 32, 10, 0.05) == 0.0  # ramp-up: G_ema starts as a copy of G
    assert ema_beta(10 ** 7, 32, 10, 0.05) == pytest.approx(0.5 ** (32 / 10000))
    assert ema_beta(0, 32, 10, 0.0) == pytest.approx(0.5 ** (32 / 10000))  # no ramp-up (transfer)
    c = C.make_config(256, cfg="stylegan3-r", batch=32)
    assert (c["cbase"], c["cmax"], c["map"], c["conv_kernel"], c["radial"]) == (65536, 1024, 2, 1, True)
    assert c["gamma"] == pytest.approx(0.0002 * 256 ** 2 / 32) and c["ema_kimg"] == 10
    (gcls, gk), (dcls, dk) = C.network_kwargs(c)
    assert gcls.endswith("stylegan3.Generator") and gk["use_radial_filters"] and gk["conv_kernel"] == 1
    assert dk["epilogue_kwargs"]["mbstd_group_size"] == 4
    c2 = C.make_config(64, cfg="stylegan2", batch=16, gamma=5)
    assert (c2["map"], c2["style_mixing"], c2["pl_weight"], c2["gamma"]) == (8, 0.9, 2.0, 5)
    with pytest.raises(ValueError, match="not a power of two"):
        C.make_config(48)
    assert C.scaled_adam(0.002, (0.0, 0.99), 16) == (0.002 * 16 / 17, (0.0, 0.99 ** (16 / 17)))


def test_freezed_must_be_a_count():
    """--freezed -1 used to freeze nothing without a word; the official option takes N >= 0 only."""
    assert C.make_config(64, freezed=3)["freezed"] == 3
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"--freezed .* must be a whole number >= 0"):
            C.make_config(64, freezed=bad)


def test_ada_kimg_must_be_positive():
    assert C.make_config(64, ada_kimg=100)["ada_kimg"] == 100
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"--ada-kimg .* must be a number above 0"):
            C.make_config(64, ada_kimg=bad)


def test_update_ema_averages_parameters_and_copies_buffers():
    torch.manual_seed(0)
    G, G_ema = torch.nn.BatchNorm1d(5), torch.nn.BatchNorm1d(5)
    for m in (G, G_ema):
        torch.nn.init.normal_(m.weight)
        torch.nn.init.normal_(m.bias)
    G.running_mean.normal_()
    before = [p.detach().clone() for p in G_ema.parameters()]
    update_ema(G_ema, G, 0.9)
    for e, old, p in zip(G_ema.parameters(), before, G.parameters()):
        torch.testing.assert_close(e, 0.9 * old + 0.1 * p.detach())
    assert torch.equal(G_ema.running_mean, G.running_mean)
    update_ema(G_ema, G, 0.0)  # beta 0 (the ramp-up's start): a copy
    for e, p in zip(G_ema.parameters(), G.parameters()):
        torch.testing.assert_close(e, p.detach())


def test_default_precision_is_the_official_mixed_precision_and_free_on_the_cpu():
    """Like the official training, the 4 highest resolutions of G and D are marked float16 and
    activations clamped at 256 unless --precision fp32; on the CPU those layers compute in float32, so the images are the same."""
    from sg3lib.networks import build_network
    kw = dict(cfg="stylegan3-t", batch=4, cbase=256, cmax=16, map=2, z_dim=8, w_dim=8)
    c = C.make_config(32, **kw)
    assert c["precision"] == "fp16"
    (gcls, gk), (dcls, dk) = C.network_kwargs(c)
    assert gk["num_fp16_res"] == dk["num_fp16_res"] == 4 and gk["conv_clamp"] == dk["conv_clamp"] == 256
    (_, gk32), (_, dk32) = C.network_kwargs(C.make_config(32, precision="fp32", **kw))
    assert gk32["num_fp16_res"] == dk32["num_fp16_res"] == 0
    assert gk32["conv_clamp"] is None and dk32["conv_clamp"] is None  # as the official --fp32
    assert C.make_config(32, precision="fp32", conv_clamp=64, **kw)["conv_clamp"] == 64  # asked for
    torch.manual_seed(0)
    G, D = build_network(gcls, gk).eval(), build_network(dcls, dk).eval()
    G32, D32 = build_network(gcls, gk32).eval(), build_network(dcls, dk32).eval()
    G32.load_state_dict(G.state_dict())
    D32.load_state_dict(D.state_dict())
    assert any(getattr(m, "use_fp16", False) for m in G.modules())
    z, cond = torch.randn(2, 8), torch.zeros(2, 0)
    with torch.no_grad():
        img = G(z, cond, noise_mode="const")
        assert img.dtype == torch.float32 and torch.equal(img, G32(z, cond, noise_mode="const"))
        assert torch.equal(D(img, cond), D32(img, cond))


def test_presets_are_the_papers_training_settings():
    """The recommended configurations (StyleGAN3 appendix, StyleGAN2 sec. 2-3, ADA sec. 3): learning
    rates, mapping depth, style mixing and path length per preset; Adam, lazy regularisation, ADA
    and G_ema's ramp-up shared; a transfer adapts ADA 5x faster, follows G at once, does not blur."""
    want = {"stylegan3-t": (0.0025, 0.002, 2, 0.0, 0.0), "stylegan3-r": (0.0025, 0.002, 2, 0.0, 0.0),
            "stylegan2": (0.002, 0.002, 8, 0.9, 2.0)}
    for cfg, numbers in want.items():
        c = C.make_config(256, cfg=cfg, batch=32)
        assert (c["glr"], c["dlr"], c["map"], c["style_mixing"], c["pl_weight"]) == numbers, cfg
        assert (tuple(c["betas"]), c["eps"], c["D_reg_interval"], c["G_reg_interval"], c["pl_batch_shrink"],
                c["pl_decay"]) == ((0.0, 0.99), 1e-8, 16, 4, 2, 0.01), cfg
        assert (c["aug"], c["target"], c["ada_interval"], c["ada_kimg"], c["ema_rampup"], c["mbstd_group"]) == \
            ("ada", 0.6, 4, 500, 0.05, 4), cfg
        assert c["stats_batch"] == 4  # G's running statistics from 4 images a step (loss.update_stats)
    assert C.TRANSFER == dict(ada_kimg=100, ema_rampup=0.0, blur_sigma=0.0)


def test_networks_of_a_config_train_every_layer_and_keep_the_official_magnitude_half_life():
    """A new run's D trains all its layers (freezing is --freezed's, applied by the run); StyleGAN3's
    magnitude EMA has a half-life of 20 kimg at any batch; the mbstd group shrinks to a smaller
    --batch-gpu by default."""
    from sg3lib.networks import build_network
    for batch in (32, 8):
        c = C.make_config(16, cfg="stylegan3-t", batch=batch, cbase=256, cmax=16, z_dim=8, w_dim=8)
        (gc, gk), (dc, dk) = C.network_kwargs(c)
        G, D = build_network(gc, gk), build_network(dc, dk)
        assert G.synthesis.layer_names and all(
            getattr(G.synthesis, n).magnitude_ema_beta ** (20000 / batch) == pytest.approx(0.5)
            for n in G.synthesis.layer_names)
        weights = [n for n, _ in D.named_buffers() if n.endswith(".weight")]
        assert not weights and "b16.fromrgb.weight" in dict(D.named_parameters())
    assert C.make_config(16, batch=8, batch_gpu=2)["mbstd_group"] == 2


def test_official_config_r_only_blurs_and_doubles_only_g():
    """Official configs: only StyleGAN3-R blurs D's images (sigma 10 over batch*200/32 kimg) and
    it doubles G's feature maps only; D keeps cbase 32768 / cmax 512 in every config."""
    t, r, s2 = (C.make_config(256, cfg=k, batch=32) for k in ("stylegan3-t", "stylegan3-r", "stylegan2"))
    assert (t["blur_sigma"], r["blur_sigma"], s2["blur_sigma"]) == (0.0, 10.0, 0.0)
    assert r["blur_fade_kimg"] == 200
    for c, g in ((t, (32768, 512)), (r, (65536, 1024)), (s2, (32768, 512))):
        (_, gk), (_, dk) = C.network_kwargs(c)
        assert (gk["channel_base"], gk["channel_max"]) == g
        assert (dk["channel_base"], dk["channel_max"]) == (32768, 512), c["cfg"]
    # A smaller R keeps the official ratio; D's capacity can be set on its own.
    (_, gk), (_, dk) = C.network_kwargs(C.make_config(64, cfg="stylegan3-r", cbase=16384, cmax=256))
    assert (gk["channel_base"], dk["channel_base"], dk["channel_max"]) == (16384, 8192, 128)
    (_, dk) = C.network_kwargs(C.make_config(64, cfg="stylegan3-r", dcbase=4096, dcmax=64))[1]
    assert (dk["channel_base"], dk["channel_max"]) == (4096, 64)


def test_batch_gpu_defaults_to_a_share_of_the_batch():
    """Official: batch_gpu = batch // gpus; a 2-process run needs no --batch-gpu."""
    c = C.make_config(64, batch=32, world=2)
    assert c["batch_gpu"] == 16 and C.check_batch(c, 2) == 1
    assert C.make_config(64, batch=32)["batch_gpu"] == 32


def test_batch_split_errors_name_the_flag():
    """A batch that no --batch-gpu can split over the processes says so (it blamed the default
    --batch-gpu); zero or negative sizes are errors (0 divided by zero, --batch-gpu 0 was taken as
    the default, negative sizes ran with negative rounds)."""
    with pytest.raises(ValueError, match="--batch 7 cannot be split evenly over 2 processes"):
        C.check_batch(C.make_config(16, batch=7, world=2), 2)
    for opts, flag in ((dict(batch=0), "--batch 0"), (dict(batch=-8), "--batch -8"),
                       (dict(batch_gpu=0), "--batch-gpu 0"), (dict(batch_gpu=-4), "--batch-gpu -4"),
                       (dict(mbstd_group=0), "--mbstd-group 0")):
        with pytest.raises(ValueError, match=f"{flag} must be a whole number >= 1"):
            C.check_batch(C.make_config(16, **dict(dict(batch=8), **opts)), 1)
    c = C.make_config(16, batch=12, batch_gpu=2, mbstd_group=2, world=2)
    assert C.check_batch(c, 2) == 3  # 2 processes x 3 rounds of 2


def test_augmentation_modes_are_the_official_ones():
    """--aug ada adapts p from --p, fixed keeps --p, noaug never augments: a p given to noaug, a
    fixed mode without p, or a p outside [0, 1] is an error that says what to use."""
    assert C.make_config(32, aug="fixed", p=0.25)["p"] == 0.25
    assert C.make_config(32, aug="ada", p=0.25)["p"] == 0.25
    with pytest.raises(ValueError, match="--aug fixed --p"):
        C.make_config(32, aug="noaug", p=0.25)
    with pytest.raises(ValueError, match="needs --p"):
        C.make_config(32, aug="fixed")
    with pytest.raises(ValueError, match="not a probability"):
        C.make_config(32, p=1.5)
    with pytest.raises(ValueError, match="choose one of ada, fixed, noaug"):
        C.make_config(32, aug="adaptive")


def test_ada_state_keeps_the_last_r_t():
    """The stats of the ticks before the next ADA update report r_t, after a resume too."""
    ada = aug.AdaController(p=0.1, interval=2)
    ada.accumulate(2.0, 4)
    ada.update(1, 4)
    resumed = aug.AdaController(p=0.1, interval=2)
    resumed.load_state_dict(ada.state_dict())
    assert resumed.rt == ada.rt == 0.5
    resumed.load_state_dict({"p": 0.2, "sign_sum": 0.0, "count": 0.0})  # a snapshot from before rt was kept
    assert resumed.rt is None
    fixed = aug.AdaController(p=0.3, enabled=False)  # continued with --aug fixed: no adapted r_t to report
    fixed.load_state_dict(ada.state_dict())
    assert fixed.rt is None and fixed.p == 0.3


def test_snapshot_retention_options_are_checked():
    with pytest.raises(ValueError, match="--keep-snapshots -1 is negative"):
        C.make_config(16, keep_snapshots=-1)
    with pytest.raises(ValueError, match="--keep-every-kimg 0.0001 is less than one image"):
        C.make_config(16, keep_every_kimg=0.0001)
    assert C.make_config(16, keep_snapshots=0)["keep_snapshots"] == 0  # 0 keeps all
    assert C.make_config(16, keep_every_kimg=0)["keep_every_kimg"] is None  # 0: no milestones


def test_truncating_the_stats_log_is_durable_and_leaves_no_temporary(tmp_path, monkeypatch):
    """A resume rewrites stats.jsonl without the lines after its snapshot: fsynced before the rename
    (a crash could otherwise leave an empty log in place of the run's history), then the folder."""
    import os
    from sg3lib.train.stats import read_stats, truncate_after
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps({"kimg": k}) + "\n" for k in (0.1, 0.2, 0.3)))
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.path.realpath(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd)))
    truncate_after(tmp_path, 0.2)
    assert [r["kimg"] for r in read_stats(tmp_path)[0]] == [0.1, 0.2]
    assert os.listdir(tmp_path) == ["stats.jsonl"]
    assert any(os.path.basename(p).startswith(".stats.jsonl.tmp-") for p in synced)  # the data, before the rename
    assert str(tmp_path) in synced  # and the folder's entry after it


def test_ada_keeps_p_when_r_t_is_at_the_target():
    """ADA sec. 3: p += sign(r_t - target) * B * interval / (ada_kimg * 1000), with sign(0) = 0."""
    step = 40 * 4 / (500 * 1000)  # batch 40, every 4 steps, 0 -> 1 in 500 kimg
    for sign_sum, expected in ((96.0, 0.3), (98.0, 0.3 + step), (94.0, 0.3 - step)):
        ada = aug.AdaController(p=0.3, target=0.6, interval=4, speed_kimg=500)
        ada.accumulate(torch.tensor(sign_sum), 160)  # 4 steps of 40 real images
        assert ada.update(3, 40) == pytest.approx(expected, abs=1e-12), sign_sum
    assert ada.rt == pytest.approx(94 / 160)


def test_gradients_are_sanitised_as_the_official_training():
    """Official training: NaN gradients become 0 and every element is clamped to +-1e5 (a finite
    3e5 too, not only inf)."""
    from sg3lib.train.loop import _Run
    layer = torch.nn.Linear(6, 1, bias=False)
    torch.nn.init.zeros_(layer.weight)
    layer.weight.grad = torch.tensor([[float("nan"), float("inf"), -float("inf"), 3e5, -3e5, 1.5]])
    _Run._opt_step(object.__new__(_Run), layer, torch.optim.SGD(layer.parameters(), lr=1.0))
    expected = -torch.tensor([[0.0, 1e5, -1e5, 1e5, -1e5, 1.5]])  # SGD at lr 1: w = -grad
    assert torch.equal(layer.weight.detach(), expected)


def test_blur_is_a_true_gaussian_of_standard_deviation_sigma():
    """StyleGAN3-R's blur of D's images: deliberately exp(-t^2 / (2 sigma^2)) (std sigma), not the
    official exp2(-t^2 / sigma^2) (std 0.85 sigma); README says so."""
    sigma, r = 10.0, 30  # taps to ceil(3 sigma)
    x = torch.zeros(1, 1, 2 * r + 1, 2 * r + 1, dtype=torch.float64)
    x[0, 0, r, r] = 1
    y = blur(x, sigma)[0, 0]
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    f = torch.exp(-t ** 2 / (2 * sigma ** 2))
    f = f / f.sum()
    torch.testing.assert_close(y, torch.outer(f, f))
    std = float((y.sum(0) * t ** 2).sum().sqrt())
    assert 0.97 * sigma < std < sigma  # (truncated at 3 sigma); the official kernel's is ~8.4


def test_blur_fades_linearly_to_zero_over_blur_fade_kimg():
    """StyleGAN3-R's blur: 10 px at the start, 5 halfway, 0 from blur_fade_kimg on; a fade of 0 blurs nothing."""
    assert blur_sigma_at(0, 10.0, 200) == 10.0
    assert blur_sigma_at(100_000, 10.0, 200) == pytest.approx(5.0)
    assert blur_sigma_at(200_000, 10.0, 200) == 0 and blur_sigma_at(10 ** 6, 10.0, 200) == 0
    assert blur_sigma_at(0, 10.0, 0) == 0
    c = C.make_config(256, cfg="stylegan3-r", batch=64)  # the preset's fade: 200 kimg at batch 32, 400 at 64
    assert blur_sigma_at(200_000, c["blur_sigma"], c["blur_fade_kimg"]) == pytest.approx(5.0)


def test_the_path_length_batch_is_shared_evenly_by_every_round_of_every_process():
    """batch / pl_batch_shrink (2, as the official), in whole images per round of each process."""
    assert path_length_batch(32, 2, 1, 1) == 16 and path_length_batch(32, 2, 2, 2) == 16
    assert path_length_batch(32, 2, 2, 3) == 12    # 16 rounded down to 2 processes x 3 rounds
    assert path_length_batch(8, 2, 2, 4) == 8      # --batch-gpu 1 on 2 processes: one image per round
    assert path_length_batch(8, 2, 1, 4) == 4 and path_length_batch(4, 2, 1, 4) == 4


@pytest.fixture
def tensorboard_calls(monkeypatch):
    """TensorBoard is not installed here: a stand-in SummaryWriter records what it is asked for, as
    ("init", log_dir, purge_step), ("add", key, value, step), ("flush",) and ("close",)."""
    import sys
    import types
    calls = []

    class RecordingWriter:
        def __init__(self, log_dir, purge_step=None):
            calls.append(("init", log_dir, purge_step))

        def add_scalar(self, key, value, global_step):
            calls.append(("add", key, value, global_step))

        def flush(self):
            calls.append(("flush",))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=RecordingWriter))
    return calls


def test_tensorboard_hides_the_events_of_work_lost_after_the_snapshot(tensorboard_calls, tmp_path):
    """A resumed run redoes the ticks after its snapshot: their TensorBoard events are purged
    (SummaryWriter's purge_step), as their stats.jsonl lines are dropped."""
    from sg3lib.train.stats import StatsWriter
    StatsWriter(tmp_path, tensorboard=True, purge_step=4001)
    StatsWriter(tmp_path, tensorboard=True)
    assert tensorboard_calls == [("init", tmp_path, 4001), ("init", tmp_path, None)]


def test_tensorboard_step_is_the_image_count(tensorboard_calls, tmp_path):
    """The events' step is the image count: int(kimg * 1000) made 4004 images step 4003 (4.004 * 1000
    is 4003.9999...), off by one from the purge step a resume gives in images."""
    from sg3lib.train.stats import StatsWriter
    StatsWriter(tmp_path, tensorboard=True).write({"kimg": 4.004, "loss_G": 1.0, "time": 1796310992.4})
    # (the time, a float32 scalar, moved in steps of 128 s: events carry it)
    assert [c[1:] for c in tensorboard_calls if c[0] == "add"] == [("loss_G", 1.0, 4004)]


def test_stats_writer_sends_numbers_not_flags_to_tensorboard_flushing_each_tick(tensorboard_calls, tmp_path):
    """Each record is one whole line of stats.jsonl; TensorBoard gets its numbers (a flag such as
    'diverged' is no scalar to plot), flushed every tick (a notebook's TensorBoard reads a live run),
    and is closed by close()."""
    from sg3lib.train.stats import StatsWriter, read_stats
    w = StatsWriter(tmp_path, tensorboard=True)
    w.write({"kimg": 1.0, "loss_G": 0.5, "diverged": True, "tick": 1, "note": "x"})
    w.write({"kimg": 2.0, "loss_D": 0.25})
    assert tensorboard_calls[1:] == [("add", "loss_G", 0.5, 1000), ("add", "tick", 1, 1000), ("flush",),
                                     ("add", "loss_D", 0.25, 2000), ("flush",)]
    w.close()
    assert tensorboard_calls[-1] == ("close",)
    text = (tmp_path / "stats.jsonl").read_text()
    assert text.endswith("\n") and text.count("\n") == 2
    assert read_stats(tmp_path) == ([{"kimg": 1.0, "loss_G": 0.5, "diverged": True, "tick": 1, "note": "x"},
                                     {"kimg": 2.0, "loss_D": 0.25}], 0)
    StatsWriter(tmp_path).close()  # (without TensorBoard: nothing to close)


def test_truncating_keeps_the_snapshot_tick_and_drops_the_next_even_an_image_later(tmp_path, capsys):
    """kimg is a count of images / 1000: the record one image after the snapshot is lost work."""
    from sg3lib.train.stats import truncate_after
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps({"kimg": k}) + "\n" for k in (4.0, 4.004, 4.005)))
    truncate_after(tmp_path, 4.004)
    assert [json.loads(l)["kimg"] for l in (tmp_path / "stats.jsonl").read_text().splitlines()] == [4.0, 4.004]
    (tmp_path / "stats.jsonl").write_text('{"kimg": 1.0}\n{"kim\n0\n')
    truncate_after(tmp_path, 1.0)
    assert "dropped 2 unreadable lines (cut short or damaged)" in capsys.readouterr().out
    (tmp_path / "stats.jsonl").write_text('{"kimg": 1.0}\n{"kim\n')
    truncate_after(tmp_path, 1.0)
    assert "dropped 1 unreadable line (cut short or damaged)" in capsys.readouterr().out
    truncate_after(tmp_path / "nowhere", 1.0)  # (a run without a log yet: nothing to do)
    assert not (tmp_path / "nowhere").exists()


def test_a_tick_line_reads_as_a_log_line():
    from sg3lib.train.stats import tick_line
    rec = {"tick": 3, "kimg": 4.004, "loss_G": 1.23456, "loss_D": 0.5, "ada_p": 0.0125, "sec_per_kimg": 12.3456,
           "mem_peak_gb": 9.87654, "time": 1796310992.4}
    assert tick_line(rec) == ("tick 3  kimg 4.004  loss_G 1.235  loss_D 0.5  ada_p 0.0125  sec_per_kimg 12.35  "
                              "mem_peak_gb 9.877")
    assert tick_line({"tick": 0, "kimg": 0.0}) == "tick 0  kimg 0"  # (the first tick: no losses yet)


def test_a_diverged_record_is_named_whatever_the_infinity():
    from sg3lib.train.stats import divergence_warning
    said = divergence_warning({"kimg": 2.5, "loss_G": float("nan"), "loss_D": float("inf"), "tick": 4})
    assert said.startswith("warning: loss_G is nan, loss_D is inf at kimg 2.5: training has diverged")
    assert divergence_warning({"kimg": 2.5, "loss_G": 0.5, "diverged": False}) is None


def test_an_unreadable_stats_line_is_skipped_counted_and_reported(tmp_path, capsys):
    """A stats.jsonl with bytes that are not UTF-8 (a damaged disk block) made every resume fail with
    UnicodeDecodeError, since a resume rewrites the log: the line is skipped like a cut one, and the
    rewrite says how many lines it dropped and from which file."""
    from sg3lib.train.stats import read_stats, truncate_after
    (tmp_path / "stats.jsonl").write_bytes(b'{"kimg": 0.1}\n\xff\xfe\x00garbage\n{"kimg": 0.2}\n')
    recs, bad = read_stats(tmp_path)
    assert [r["kimg"] for r in recs] == [0.1, 0.2] and bad == 1
    truncate_after(tmp_path, 0.2)
    said = capsys.readouterr().out
    assert "1 unreadable line" in said and str(tmp_path / "stats.jsonl") in said
    assert read_stats(tmp_path) == ([{"kimg": 0.1}, {"kimg": 0.2}], 0)


@pytest.mark.parametrize("opts,message", [
    (dict(ema_kimg=float("nan")), r"ema_kimg=nan must be a number of kimg >= 0"),  # G_ema all nan, no word
    (dict(ema_kimg=-1.0), r"ema_kimg=-1.0 must be a number of kimg >= 0"),
    (dict(ema_rampup=-0.05), r"ema_rampup=-0.05 must be a number >= 0"),  # G_ema a copy of G all run
    (dict(blur_sigma=float("nan")), r"blur_sigma=nan must be a number of pixels >= 0"),  # NaN to integer, step 1
    (dict(blur_fade_kimg=float("inf")), r"blur_fade_kimg=inf must be a number of kimg >= 0"),
    (dict(style_mixing=float("nan")), r"style_mixing=nan must be a probability in \[0, 1\]"),  # no mixing
    (dict(style_mixing=1.5), r"style_mixing=1.5 must be a probability in \[0, 1\]"),
    (dict(betas=(0.0, 1.0)), r"betas=\(0.0, 1.0\) must be two numbers in \[0, 1\)"),  # torch, after the run folder
    (dict(betas=(0.9,)), r"betas=\(0.9,\) must be two numbers in \[0, 1\)"),
    (dict(eps=-1e-8), r"eps=-1e-08 must be a number >= 0"),
])
def test_schedule_options_without_a_flag_are_checked(opts, message):
    """train()'s EMA, blur, style mixing and Adam options were not checked: ema_kimg nan trained a
    G_ema of NaN without a word, a negative ema_rampup made G_ema a plain copy of G for the whole
    run, blur_sigma nan failed in the first step (cannot convert NaN to integer), style_mixing nan
    silently mixed nothing, and torch refused betas (0, 1) only after the run folder was made."""
    with pytest.raises(ValueError, match=message):
        C.make_config(16, **opts)


def test_schedule_options_at_their_limits_still_make_a_config():
    c = C.make_config(16, ema_kimg=0, ema_rampup=0, blur_sigma=0, blur_fade_kimg=0, style_mixing=1,
                      betas=[0.5, 0.999], eps=0)
    assert (c["ema_kimg"], c["ema_rampup"], c["style_mixing"], c["betas"]) == (0, 0, 1, [0.5, 0.999])


def test_keep_snapshots_must_be_a_count():
    """train(keep_snapshots=nan) passed the check (nan < 0 is false) and the run ended at its first
    snapshot, when pruning took int(nan); 2.5 kept 2 without a word."""
    for bad in (float("nan"), 2.5, "3", True):
        with pytest.raises(ValueError, match=r"--keep-snapshots .* must be a whole number >= 0"):
            C.make_config(16, keep_snapshots=bad)


def test_ada_switched_on_at_a_resume_adapts_from_its_own_steps():
    """A fixed-p run summed sign(D(real)) over all of its steps (never reset: p never adapted), so an
    ADA run continued from it took its first r_t over the whole earlier run, not its own 4 steps."""
    fixed = aug.AdaController(p=0.2, interval=4, enabled=False)
    for step in range(100):
        fixed.accumulate(torch.tensor(-8.0), 8)  # r_t = -1 in the fixed run
        fixed.update(step, 8)
    ada = aug.AdaController(p=0.2, target=0.6, interval=4, speed_kimg=1)
    ada.load_state_dict(fixed.state_dict())
    for step in range(100, 104):
        ada.accumulate(torch.tensor(8.0), 8)  # r_t = 1 since the switch: raise p
        ada.update(step, 8)
    assert ada.rt == 1.0 and ada.p > 0.2


def test_a_stats_line_that_is_json_but_no_record_is_dropped_not_a_crash(tmp_path, capsys):
    """A damaged line reading as valid JSON ('0', 'null', a list) was kept as a record, and the resume's
    truncate_after failed on it: AttributeError: 'int' object has no attribute 'get'."""
    from sg3lib.train.stats import read_stats, truncate_after
    (tmp_path / "stats.jsonl").write_text('{"kimg": 0.1}\n0\nnull\n[1]\n{"kimg": 0.2}\n')
    assert read_stats(tmp_path) == ([{"kimg": 0.1}, {"kimg": 0.2}], 3)
    truncate_after(tmp_path, 0.1)
    assert "3 unreadable lines" in capsys.readouterr().out
    assert read_stats(tmp_path) == ([{"kimg": 0.1}], 0)


def test_derived_seeds_are_python_ints_and_unchanged():
    """numpy 1.x (pyproject allows 1.23) refused `np.uint64 & int` in derive_seed: every training run
    failed at its first step. The seeds are now made from Python ints, the same numbers as before
    (snapshots resume with the same streams)."""
    from sg3lib.train.loop import derive_seed
    for parts in [(0, 0, 0), (7, 123456, 3, 17), (2 ** 32 - 1, 5, 1), (42,)]:
        state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
        before = int(state.astype(np.uint64).dot(np.array([1 << 32, 1], dtype=np.uint64))) & ((1 << 63) - 1)
        got = derive_seed(*parts)
        assert type(got) is int and got == before and 0 <= got < 2 ** 63


def test_torchrun_refuses_a_gpu_a_process_cannot_have(monkeypatch):
    """--device cuda:0 under torchrun put every rank on GPU 0 (NCCL then fails with 'Duplicate GPU
    detected'); more processes than GPUs gave rank 1 torch's raw 'invalid device ordinal'."""
    from sg3lib.train import distributed as dist_mod
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("set_device reached"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"--device cuda:0 under torchrun would put every process on GPU 0.*--device cuda"):
        dist_mod.init("cuda:0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for device in ("cuda", None):
        with pytest.raises(ValueError, match=r"process 1 \(LOCAL_RANK 1\) needs GPU 1, but torch sees 1 GPU"):
            dist_mod.init(device)


@pytest.mark.parametrize("kimg, images", [(4.03, 4030), (0.0041, 5), (0.0049, 5), (0.0001, 1), (1e-9, 1), (1e-10, 1), (2, 2000)])
def test_a_length_in_kimg_is_the_next_whole_image_count(kimg, images):
    """--kimg 0.0041 asks for 4.1 images: the run takes 5 (at least what was asked), not 4."""
    from sg3lib.train.loop import kimg_images
    assert kimg_images(kimg) == images


def test_config_edges_and_batch_derived_defaults():
    """The last accepted value of each range and the first refused one; the defaults that follow the batch."""
    c = C.make_config(16, batch=64)
    assert (c["ema_kimg"], c["blur_fade_kimg"], c["gamma"]) == (20, 400, 0.0002 * 16 ** 2 / 64)
    assert C.make_config(16, seed=2 ** 32 - 1)["seed"] == 2 ** 32 - 1
    with pytest.raises(ValueError, match=r"--seed 4294967296 must be a whole number from 0 to 4294967295"):
        C.make_config(16, seed=2 ** 32)
    with pytest.raises(ValueError, match=r"must be two numbers in \[0, 1\)"):
        C.make_config(16, betas=(0.0, 0.9, 0.9))
    assert C.make_config(16, betas=(0.0, 0.9))["betas"] == [0.0, 0.9]  # a list, as JSON gives it back
    assert C.make_config(16, keep_every_kimg=0.001)["keep_every_kimg"] == 0.001  # one image
    with pytest.raises(ValueError, match="not a power of two >= 4"):
        C.make_config(2)
    # stylegan3-r's D takes half of cmax: 1 leaves it none, though G has its one channel.
    with pytest.raises(ValueError, match=r"leave D's 16 px layers without channels; give --cbase 32 or more and "
                                         r"--cmax 2 or more \(stylegan3-r's D takes half of each\)"):
        C.make_config(16, cfg="stylegan3-r", cmax=1)


def test_check_batch_names_a_continued_runs_group_and_lazy_ratios_without_an_interval():
    c = C.make_config(16, batch=12, batch_gpu=6, mbstd_group=4)
    with pytest.raises(ValueError, match="multiple of this run's minibatch-std group 4"):
        C.check_batch(c, 1, group_fixed=True)
    with pytest.raises(ValueError, match=r"multiple of the minibatch-stddev group 4 \(set --mbstd-group\)"):
        C.check_batch(c, 1)
    assert C.scaled_adam(0.002, (0.0, 0.99), 0) == (0.002, (0.0, 0.99))  # interval 0 / None: not lazy
    assert C.scaled_adam(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))
    lr, betas = C.scaled_adam(0.002, (0.5, 0.99), 16)
    assert lr == pytest.approx(0.002 * 16 / 17) and betas == pytest.approx((0.5 ** (16 / 17), 0.99 ** (16 / 17)))


def test_arch_diff_leaves_out_the_allowed_keys():
    old, new = dict(map=2, cbase=256, kimg=1), dict(map=8, cbase=512, kimg=2)
    assert C.arch_diff(old, new) == ["cbase: 256 -> 512", "map: 2 -> 8"]  # (ARCH_KEYS order; kimg may differ)
    assert C.arch_diff(old, new, allowed=("cbase",)) == ["map: 2 -> 8"]


def test_each_stats_line_is_flushed_and_synced_before_write_returns(tmp_path, monkeypatch):
    """A run killed (or a Colab runtime lost) right after a tick keeps that tick's line."""
    from sg3lib.train import stats
    synced = []
    monkeypatch.setattr(stats.os, "fsync", lambda fd: synced.append(open(tmp_path / "stats.jsonl").read()))
    w = stats.StatsWriter(tmp_path)
    w.write({"kimg": 1.0})
    w.write({"kimg": 2.0})
    assert synced == ['{"kimg": 1.0}\n', '{"kimg": 1.0}\n{"kimg": 2.0}\n']  # flushed before each sync


def test_a_worker_error_is_its_last_line_without_the_traceback_before_it():
    """DataLoader's workers put 'Caught ... Original Traceback' and the traceback before the message."""
    from sg3lib.train.loop import _last_line
    e = OSError("Caught OSError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                '  File "x.py", line 1, in f\nOSError: [Errno 5] Input/output error: \'d.zip\'\n  \n')
    assert _last_line(e) == "[Errno 5] Input/output error: 'd.zip'"
    assert _last_line(RuntimeError("")) == "RuntimeError"


def test_an_interruption_frees_what_its_frames_held_and_says_how_to_continue(tmp_path):
    """A notebook keeps the last traceback: its frames kept the networks and activations alive (twice
    the GPU memory on a rerun). Also those of the error it interrupted (its __context__)."""
    import gc
    import weakref
    import zipfile
    from sg3lib.train.loop import _interruption

    class Big:
        pass

    def inner(x):
        raise ValueError("during")  # what the interrupt came during: only its traceback has this frame

    def step(x):
        try:
            inner(x)
        except ValueError:
            raise KeyboardInterrupt

    def held():
        big = Big()
        try:
            step(big)
        except KeyboardInterrupt as e:
            return weakref.ref(big), e

    ref, error = held()
    gc.collect()
    assert ref() is not None  # the traceback's frames hold it
    out = _interruption(error, tmp_path, {})
    gc.collect()
    assert ref() is None
    assert str(out) == "training interrupted while setting up; no snapshot was written yet: run it again to start over"
    with zipfile.ZipFile(tmp_path / "snapshot-000000016.pt", "w") as z:  # what find_latest takes as whole
        z.writestr("archive/data.pkl", b"")
    assert str(_interruption(KeyboardInterrupt(), tmp_path, {"state": {"cur_nimg": 24}})) == (
        "training interrupted at 0.024 kimg; the newest snapshot is snapshot-000000016.pt (0.016 kimg): continue "
        "from it with train(..., resume='latest') (sg3 train --resume latest)")


def test_another_batch_keeps_a_value_given_now_and_only_rank_0_says_so(capsys):
    from sg3lib.train.loop import _follow_new_batch
    was = C.batch_derived(64, 32)
    base = dict(was, blur_sigma=0)
    _follow_new_batch(base, dict(base, batch=32), {"batch": 64, "gamma": 1.5}, 64, rank=0)
    assert base["gamma"] == was["gamma"] and "ema_kimg" not in base  # gamma: given now (it wins later)
    said = capsys.readouterr().out
    assert said.startswith("--batch 64 (the run had 32): ema_kimg 10 -> 20 (") and "gamma" not in said
    base = dict(was)
    _follow_new_batch(base, dict(base, batch=32, blur_sigma=0), {"batch": 64}, 64, rank=1)
    assert "gamma" not in base and capsys.readouterr().out == ""


def test_another_precision_keeps_a_conv_clamp_given_now_and_says_how_to_keep_the_old(capsys):
    from sg3lib.train.loop import _follow_new_precision
    base = {"conv_clamp": 256}
    _follow_new_precision(base, {"precision": "fp16"}, {"precision": "fp32", "conv_clamp": 256}, rank=0)
    assert base == {"conv_clamp": 256} and capsys.readouterr().out == ""
    _follow_new_precision(base, {"precision": "fp16"}, {"precision": "fp32"}, rank=0)
    assert base == {} and capsys.readouterr().out == (
        "--precision fp32 (the run had fp16): conv_clamp 256 -> None (the default that follows the precision; "
        "conv_clamp=256 in train() keeps the run's)\n")
    base = {"conv_clamp": None}
    _follow_new_precision(base, {"precision": "fp32"}, {"precision": "bf16"}, rank=1)
    assert base == {} and capsys.readouterr().out == ""
