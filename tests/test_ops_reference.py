"""The reference ops against the official fixtures, and their derivatives by finite differences."""
import json

from collections import Counter

import numpy as np
import pytest
import torch

from sg3lib import ops
from sg3lib.ops.bias_act import ACTIVATIONS


def _cases(fixtures_dir):
    cases = json.loads((fixtures_dir / "ops.json").read_text())
    arrays = np.load(fixtures_dir / "ops.npz")
    return cases, arrays


def _t(arrays, key):
    return torch.from_numpy(arrays[key]) if key in arrays.files else None


def _run_case(case, arrays):
    k = case["key"]
    x = _t(arrays, k + "_x")
    if case["op"] == "upfirdn2d":
        return ops.upfirdn2d(x, _t(arrays, k + "_f"), up=case["up"], down=case["down"],
                             padding=case["padding"], flip_filter=case["flip_filter"],
                             gain=case["gain"], impl="ref")
    if case["op"] == "filtered_lrelu":
        return ops.filtered_lrelu(x, _t(arrays, k + "_fu"), _t(arrays, k + "_fd"), _t(arrays, k + "_b"),
                                  up=case["up"], down=case["down"], padding=case["padding"],
                                  gain=case["gain"], slope=case["slope"], clamp=case["clamp"],
                                  flip_filter=case["flip_filter"], impl="ref")
    return ops.bias_act(x, _t(arrays, k + "_b"), act=case["act"], alpha=case["alpha"],
                        gain=case["gain"], clamp=case["clamp"], impl="ref")


def test_every_fixture_case_matches(fixtures_dir):
    cases, arrays = _cases(fixtures_dir)
    assert len(cases) >= 20
    for case in cases:
        y = _run_case(case, arrays)
        ref = arrays[case["key"] + "_y"]
        assert tuple(y.shape) == ref.shape, case["key"]
        scale = max(1.0, float(np.abs(ref).max()))
        err = float(np.abs(y.numpy() - ref).max())
        assert err <= 1e-5 * scale, f"{case['key']}: max error {err:.3g} (scale {scale:.3g})"


def _upfirdn_by_definition(x, f, up, down, padding, flip_filter, gain):
    """upfirdn2d spelled out literally (zero-stuff, pad, full 2-D conv, subsample): a second truth.
    up and down are ints or [x, y] pairs, read here rather than by parse_scaling, the code under test."""
    (upx, upy), (downx, downy) = [(v, v) if isinstance(v, int) else tuple(v) for v in (up, down)]
    px0, px1, py0, py1 = padding
    n, c, h, w = x.shape
    u = torch.zeros(n, c, h * upy, w * upx, dtype=x.dtype)
    u[:, :, ::upy, ::upx] = x
    u = torch.nn.functional.pad(u, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    u = u[:, :, max(-py0, 0):u.shape[2] - max(-py1, 0), max(-px0, 0):u.shape[3] - max(-px1, 0)]
    f2 = (f[:, None] * f[None, :] if f.ndim == 1 else f) * gain
    k = f2 if flip_filter else f2.flip([0, 1])
    y = torch.nn.functional.conv2d(u.reshape(n * c, 1, *u.shape[2:]), k[None, None].to(x.dtype))
    y = y[:, :, ::downy, ::downx]
    return y.reshape(n, c, *y.shape[2:])


@pytest.mark.parametrize("fshape", [(5,), (4, 3), (1, 1)], ids=["separable", "2-D", "1x1"])
@pytest.mark.parametrize("up,down", [([2, 1], 1), ([1, 3], 1), (1, [1, 2]), (1, [3, 1]), ([2, 1], [1, 2]),
                                     ([1, 2], [2, 1])])
def test_upfirdn2d_with_different_x_and_y_factors(up, down, fshape):
    """up/down as [x, y]: each axis is stuffed and subsampled by its own factor, not the other's."""
    g = torch.Generator().manual_seed(int(len(fshape) * 7 + np.sum(up) + 3 * np.sum(down)))
    x = torch.randn(2, 1, 9, 13, generator=g, dtype=torch.float64)
    f = torch.rand(fshape, generator=g, dtype=torch.float64)
    padding = (2, 1, 3, 0)
    y = ops.upfirdn2d(x, f, up=up, down=down, padding=list(padding), impl="ref")
    ref = _upfirdn_by_definition(x, f, up, down, padding, False, 1)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("up,down,padding,taps,flip,sep", [
    (1, 1, (1, 1, 1, 1), 3, False, True), (2, 1, (2, 1, 2, 1), 4, False, True),
    (1, 2, (1, 1, 1, 1), 4, True, True), (2, 2, (5, 4, 5, 4), 12, False, True),
    (4, 2, (-6, -9, -6, -9), 24, False, True), (2, 1, (3, 2, 1, 4), 5, True, False),
    (3, 1, (0, -1, 2, 0), 4, False, False), (1, 2, (-1, 2, 0, 1), 6, False, False),
])
def test_upfirdn2d_against_definition(up, down, padding, taps, flip, sep):
    g = torch.Generator().manual_seed(up * 10 + down + taps)
    x = torch.randn(2, 3, 13, 11, generator=g, dtype=torch.float64)
    f = torch.rand(taps if sep else (taps, taps - 1), generator=g, dtype=torch.float64)
    if not sep:
        f = torch.rand(taps, taps, generator=g, dtype=torch.float64)
    y = ops.upfirdn2d(x, f, up=up, down=down, padding=list(padding), flip_filter=flip, gain=up * up, impl="ref")
    ref = _upfirdn_by_definition(x, f, up, down, padding, flip, up * up)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("up,down,padding,taps", [
    (2, 1, (9, 8, 9, 8), 12), (1, 2, (40, -7, 3, 50), 4), (4, 2, (-6, -9, 70, -20), 24), (2, 2, (5, 4, 5, 4), 12),
])
def test_upfirdn2d_banded_blocks_against_definition(up, down, padding, taps):
    """Big enough that each pass splits into several band blocks, some of which see only padding."""
    g = torch.Generator().manual_seed(taps + up)
    x = torch.randn(1, 2, 97, 75, generator=g, dtype=torch.float64)
    f = torch.rand(taps, generator=g, dtype=torch.float64)
    y = ops.upfirdn2d(x, f, up=up, down=down, padding=list(padding), gain=up * up, impl="ref")
    ref = _upfirdn_by_definition(x, f, up, down, padding, False, up * up)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("up,down,padding,fshape", [
    (1, 1, (4, -3, 0, 0), (1, 1)), (1, 2, (-4, 6, 5, -6), (2, 3)), (2, 1, (4, -5, 0, -1), (1, 1)),
    (3, 2, (-9, 12, 7, -8), (3, 2)), (1, 1, (5, -3, -2, 4), (1,)), (2, 1, (4, -5, -3, 6), (3,)),
])
def test_upfirdn2d_crop_beyond_input_on_one_side(up, down, padding, fshape):
    """Mixed-sign padding whose crop exceeds the input on one side, while the other side's padding
    keeps the output non-empty (width 2, padding [4, -3]: 3 samples): pad first, then crop."""
    g = torch.Generator().manual_seed(sum(padding) + up)
    x = torch.randn(2, 3, 3, 2, generator=g, dtype=torch.float64)
    f = torch.rand(fshape, generator=g, dtype=torch.float64)
    y = ops.upfirdn2d(x, f, up=up, down=down, padding=list(padding), impl="ref")
    ref = _upfirdn_by_definition(x, f, up, down, padding, False, 1)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    if fshape == (1, 1):  # f=None is the 1x1 identity (filtered_lrelu's fu=None, toRGB)
        torch.testing.assert_close(ops.upfirdn2d(x, None, up=up, down=down, padding=list(padding), impl="ref"),
                                   _upfirdn_by_definition(x, torch.ones(1, 1, dtype=x.dtype), up, down, padding,
                                                          False, 1))


def test_upfirdn2d_output_of_padding_only_keeps_the_graph():
    """An output that sees only padding is zero, but still a function of x (zero gradient), as from
    the CUDA path: autograd.grad must not fail for want of a graph."""
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = ops.upfirdn2d(x, torch.ones(2, dtype=torch.float64), padding=[-5, 5, 0, 0], impl="ref")
    assert not bool(y.any()) and y.requires_grad
    assert not bool(torch.autograd.grad(y.sum(), x)[0].any())


@pytest.mark.parametrize("up,down,padding", [(1, 1, 1), (2, 1, [2, 1]), (1, 2, 1), (2, 2, [3, 2, 1, 4])])
def test_upfirdn2d_gradcheck(up, down, padding):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    f = torch.rand(4, dtype=torch.float64, generator=g)
    fn = lambda x: ops.upfirdn2d(x, f, up=up, down=down, padding=padding, impl="ref")
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_gradcheck(act):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 5, dtype=torch.float64, generator=g)
    x = (x + 0.05 * torch.sign(x)).requires_grad_(True)  # keep away from kinks at 0
    b = torch.randn(4, dtype=torch.float64, generator=g).mul(0.01).requires_grad_(True)
    fn = lambda x, b: ops.bias_act(x, b, act=act, clamp=0.9 if act == "lrelu" else None, impl="ref")
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_filtered_lrelu_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, generator=g, requires_grad=True)
    fu, fd = torch.rand(6, dtype=torch.float64, generator=g), torch.rand(6, dtype=torch.float64, generator=g)
    fn = lambda x, b: ops.filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=5, clamp=2.0, impl="ref")
    assert torch.autograd.gradcheck(fn, (x, b))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_filtered_lrelu_in_reduced_precision_keeps_float32_taps(dtype):
    """A float16/bfloat16 x is filtered with the float32 taps in float32 and only the output is
    rounded, as the CUDA kernel computes (with taps rounded to bfloat16, one StyleGAN3 layer is off
    by up to 0.6% and a 64 px StyleGAN3-T image by 5.6%)."""
    from sg3lib.filters import design_lowpass_filter
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 5, 20, 20, generator=g) * 3).to(dtype)
    b = torch.randn(5, generator=g)
    fu = design_lowpass_filter(12, 4.0, 3.0, 32)  # an SG3 layer's: taps that bfloat16 cannot hold
    fd = design_lowpass_filter(12, 5.0, 2.5, 32)
    kw = dict(up=2, down=2, padding=[9, 8, 9, 8], clamp=256)
    y = ops.filtered_lrelu(x, fu, fd, b, impl="ref", **kw)
    assert y.dtype == dtype
    want = ops.filtered_lrelu(x.float(), fu, fd, b.to(dtype).float(), impl="ref", **kw).to(dtype)
    assert torch.equal(y, want)


def test_bad_arguments_are_explained():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="padding"):
        ops.upfirdn2d(x, torch.ones(3), padding=[1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        ops.upfirdn2d(x, torch.ones(9))
    with pytest.raises(ValueError, match="empty"):  # wide enough in y, too narrow in x
        ops.upfirdn2d(torch.zeros(1, 1, 8, 2), torch.ones(3, 3))
    with pytest.raises(ValueError, match="up factors must be >= 1"):
        ops.upfirdn2d(x, torch.ones(3), up=[2, 0], padding=1)
    with pytest.raises(ValueError, match="down factors must be >= 1"):
        ops.upfirdn2d(x, torch.ones(3), down=[1, 0], padding=1)
    with pytest.raises(ValueError, match=r"1-D \(separable\) or 2-D, got shape \(2, 2, 2\)"):
        ops.upfirdn2d(x, torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="unknown activation"):
        ops.bias_act(x, act="gelu-ish")
    with pytest.raises(ValueError, match="impl"):
        ops.bias_act(x, impl="triton")
    with pytest.raises(RuntimeError, match="needs a tensor on a CUDA device; this one is on the CPU"):
        ops.bias_act(x, impl="cuda")
    with pytest.raises(ValueError, match="dim 6 is out of range"):
        ops.bias_act(x, torch.zeros(1), dim=6)


@pytest.mark.parametrize("up,k,demodulate", [(1, 3, True), (1, 1, False), (2, 3, True)])
def test_modulated_conv_grouped_equals_batched(up, k, demodulate):
    """The grouped form (per-sample weights, used on the GPU in training) is the batched form's
    function: outputs, first derivatives and the second derivatives path-length regularisation takes
    (to float32 rounding: both compute the weights in float32)."""
    from sg3lib.ops.conv import modulated_conv2d
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    gain = torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.5
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) if up > 1 else None
    outs = [modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=k // 2, up=up, resample_filter=f,
                             input_gain=gain, grouped=grouped) for grouped in (False, True)]
    assert outs[0].shape == (3, 5, 6 * up, 6 * up)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    dy = torch.randn(outs[0].shape, generator=g, dtype=torch.float64)
    grads = [torch.autograd.grad(y, [x, weight, styles], dy, create_graph=True) for y in outs]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    second = [torch.autograd.grad(gr[0].square().sum(), [weight, styles]) for gr in grads]
    for a, b in zip(*second):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def _saved_shapes(fn):
    """Shapes of the tensors autograd keeps for the backward while fn() runs, and fn()'s result."""
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return shapes, out


def test_modulated_conv_grouped_keeps_factors_not_per_sample_weights():
    """Training on a GPU keeps the [N, O, I] factors for the backward, not [N * O, I, k, k] weights."""
    from sg3lib.ops.conv import modulated_conv2d
    x = torch.randn(4, 6, 8, 8, requires_grad=True)
    weight = torch.randn(5, 6, 3, 3, requires_grad=True)
    styles = torch.randn(4, 6, requires_grad=True)
    for grouped in (True, False):
        shapes, y = _saved_shapes(lambda: modulated_conv2d(x, weight, styles, padding=1, grouped=grouped))
        assert ((4 * 5, 6, 3, 3) in shapes) is False
        assert (tuple(x.shape) in shapes) is True
        y.square().sum().backward()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_grouped_on_cuda_matches_the_cpu(up, dtype):
    """The training form on a GPU (grouped, cuDNN, per-sample weights formed again in the backward)
    against the batched form on the CPU in float64: output and gradients, relative to their scale
    (cuDNN may take TF32 for float32)."""
    from sg3lib.ops.conv import modulated_conv2d
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 32, 16, 16, generator=g, dtype=torch.float64)
    weight = torch.randn(24, 32, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.randn(4, 32, generator=g, dtype=torch.float64)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    dy = torch.randn(4, 24, 16 * up, 16 * up, generator=g, dtype=torch.float64)

    def run(device, dtype, grouped):
        leaves = [t.to(device).requires_grad_(True) for t in (x.to(dtype), weight.float(), styles.float())]
        y = modulated_conv2d(leaves[0], leaves[1], leaves[2], padding=1, up=up, resample_filter=f.to(device),
                             grouped=grouped)
        return [y] + list(torch.autograd.grad(y, leaves, dy.to(device, y.dtype)))

    ref = run("cpu", torch.float64, False)
    for got, want in zip(run("cuda", dtype, None), ref):
        scale = float(want.abs().max())
        assert float((got.double().cpu() - want.double()).abs().max()) <= 2e-2 * scale


@pytest.mark.parametrize("up,down,k,groups", [(1, 1, 3, 1), (1, 2, 3, 1), (1, 2, 1, 1), (2, 1, 3, 2), (1, 1, 3, 3)])
def test_conv_with_frozen_weight_keeps_only_the_weight(up, down, k, groups):
    """A convolution whose weight takes no gradient (the frozen discriminator while the generator
    trains) keeps no input-sized tensor, and its input gradients, first and second (R1 style), are
    those of the ordinary convolution."""
    from sg3lib.ops.conv import conv2d_resample
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 9, 9, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4 * groups, 6 // groups, k, k, generator=g, dtype=torch.float64)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) / 8 if up > 1 or down > 1 else None
    z = torch.sin(x)
    run = lambda w: conv2d_resample(z, w, f=f, up=up, down=down, padding=k // 2, groups=groups)  # noqa: E731
    frozen_shapes, y_frozen = _saved_shapes(lambda: run(w))
    trained_shapes, y = _saved_shapes(lambda: run(w.clone().requires_grad_(True)))
    # the same tensors but the convolution's input (batch 2, 6 channels; after the blur when downsampling)
    assert not Counter(frozen_shapes) - Counter(trained_shapes)
    extra = list((Counter(trained_shapes) - Counter(frozen_shapes)).elements())
    assert len(extra) == 1 and extra[0][:2] == (2, 6)
    torch.testing.assert_close(y_frozen, y)
    # y.square(): the incoming gradient depends on x, so the second derivative goes through the backward
    dx = [torch.autograd.grad(out.square().sum(), x, create_graph=True)[0] for out in (y_frozen, y)]
    torch.testing.assert_close(dx[0], dx[1])
    ddx = [torch.autograd.grad(d.square().sum(), x, retain_graph=True)[0] for d in dx]
    torch.testing.assert_close(ddx[0], ddx[1])


def test_band_plan_cached_under_inference_mode_serves_autograd_later():
    """A notebook generates under torch.inference_mode(), then projects or trains with autograd:
    the band matrices cached by the first call must not be inference tensors, which autograd
    refuses to save ("Inference tensors cannot be saved for backward")."""
    g = torch.Generator().manual_seed(11)
    f = torch.rand(7, generator=g, dtype=torch.float64)  # taps no other test uses: a fresh plan
    x = torch.randn(1, 2, 9, 8, generator=g, dtype=torch.float64)
    with torch.inference_mode():
        ops.upfirdn2d(x, f, up=2, padding=3, impl="ref")
    xg = x.clone().requires_grad_(True)
    y = ops.upfirdn2d(xg, f, up=2, padding=3, impl="ref")
    (dx,) = torch.autograd.grad(y.square().sum(), xg)
    xd = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(_upfirdn_by_definition(xd, f, 2, 1, (3, 3, 3, 3), False, 1).square().sum(), xd)
    torch.testing.assert_close(dx, want, rtol=1e-10, atol=1e-10)


def test_band_plan_cache_tells_apart_plans_that_differ_only_in_the_far_padding():
    """Same length, taps, factors and leading padding, a different trailing padding: a different
    number of output rows, so a different plan (a stale one would give the wrong shape or values)."""
    g = torch.Generator().manual_seed(12)
    f = torch.rand(5, generator=g, dtype=torch.float64)  # taps no other test uses: fresh plans
    x = torch.randn(1, 2, 10, 10, generator=g, dtype=torch.float64)
    for padding in [(2, 0, 2, 0), (2, 3, 2, 3), (2, -2, 2, -2)]:
        y = ops.upfirdn2d(x, f, up=2, padding=list(padding), impl="ref")
        torch.testing.assert_close(y, _upfirdn_by_definition(x, f, 2, 1, padding, False, 1), rtol=1e-10, atol=1e-10)


def test_filter_gradient_is_taken_through_each_call_not_a_cached_plan():
    """A filter that needs a grad bypasses the plan cache: a second filter tensor with the same taps
    gets its own gradient (a cached plan would tie the graph to the first tensor)."""
    g = torch.Generator().manual_seed(13)
    taps = torch.rand(6, generator=g, dtype=torch.float64)
    x = torch.randn(1, 1, 7, 9, generator=g, dtype=torch.float64)
    fd = taps.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(_upfirdn_by_definition(x, fd, 2, 1, (2,) * 4, False, 1).square().sum(), fd)
    for _ in range(2):
        f = taps.clone().requires_grad_(True)
        (df,) = torch.autograd.grad(ops.upfirdn2d(x, f, up=2, padding=2, impl="ref").square().sum(), f)
        torch.testing.assert_close(df, want, rtol=1e-10, atol=1e-10)
    fn = lambda f: ops.upfirdn2d(x, f, down=2, padding=1, impl="ref")
    assert torch.autograd.gradcheck(fn, (taps.clone().requires_grad_(True),))


@pytest.mark.parametrize("shape", [(0, 3, 5, 4), (2, 0, 5, 4)], ids=["batch0", "channels0"])
@pytest.mark.parametrize("fshape,up", [(None, 1), (None, 2), ((3, 2), 1), ((3, 2), 2), ((4,), 1)])
def test_upfirdn2d_empty_batch_gives_empty_output(shape, fshape, up):
    """An empty batch (no seeds left to render, say) gives an empty result of the right size."""
    x = torch.randn(*shape, dtype=torch.float64)
    f = None if fshape is None else torch.rand(fshape, dtype=torch.float64)
    fh, fw = (1, 1) if f is None else (f.shape[0], f.shape[-1])
    y = ops.upfirdn2d(x, f, up=up, padding=[2, 1, 0, 1], impl="ref")
    assert y.shape == (shape[0], shape[1], 5 * up + 1 - fh + 1, 4 * up + 3 - fw + 1)
    y = ops.filtered_lrelu(x, None, None, torch.zeros(shape[1], dtype=x.dtype), impl="ref")
    assert y.shape == shape


def test_factors_and_padding_take_numpy_ints_and_refuse_floats_clearly():
    """Layer geometry is often computed with numpy (np.int64 is not an int); a float factor is
    refused with the argument's name, not "object of type 'float' has no len()"."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(1, 2, 6, 5, generator=g, dtype=torch.float64)
    f = torch.rand(4, generator=g, dtype=torch.float64)
    want = ops.upfirdn2d(x, f, up=2, down=2, padding=1, impl="ref")
    got = ops.upfirdn2d(x, f, up=np.int64(2), down=np.int64(2), padding=np.int64(1), impl="ref")
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="up must be an int"):
        ops.upfirdn2d(x, f, up=2.0, impl="ref")
    with pytest.raises(ValueError, match="padding must be an int"):
        ops.upfirdn2d(x, f, padding=1.5, impl="ref")
    with pytest.raises(ValueError, match="down must be an int"):
        ops.filtered_lrelu(x, f, f, up=2, down=[2, 2], padding=3, impl="ref")
    with pytest.raises(ValueError, match=r"filtered_lrelu expects x of shape \[N, C, H, W\]"):
        ops.filtered_lrelu(x[0], f, f, up=2, down=2, padding=3, impl="ref")


@pytest.mark.parametrize("gain", [-1.5, 0.0])
def test_filtered_lrelu_clamp_with_nonpositive_gain_is_the_definition(gain):
    """clamp(lrelu(x) * gain, +-clamp) for any gain, as the CUDA kernel computes (moving the gain
    past the clamp must keep the bounds ordered and must not divide by zero)."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) * 3
    y = ops.filtered_lrelu(x, None, None, gain=gain, slope=0.2, clamp=1.0, impl="ref")
    want = (torch.nn.functional.leaky_relu(x, 0.2) * gain).clamp(-1.0, 1.0)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fshape", [(4,), (4, 3)], ids=["separable", "2d"])
@pytest.mark.parametrize("gain", [-2.0, -0.5])
def test_upfirdn2d_negative_gain_is_the_definition(fshape, gain):
    """A negative gain scales the output by gain: with a 1-D filter each pass took gain ** 0.5, a
    complex number, and the matmul failed ("double != c10::complex<double>")."""
    g = torch.Generator().manual_seed(14)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    f = torch.rand(fshape, generator=g, dtype=torch.float64)
    y = ops.upfirdn2d(x, f, up=2, down=1, padding=[2, 1, 3, 0], gain=gain, impl="ref")
    assert y.dtype == x.dtype
    torch.testing.assert_close(y, _upfirdn_by_definition(x, f, 2, 1, (2, 1, 3, 0), False, gain),
                               rtol=1e-10, atol=1e-10)


def test_filtered_lrelu_negative_gain_with_separable_filters():
    """The gain rides on the separable downsampling pass: a negative gain (which the CUDA kernel
    applies pointwise) made the reference fail there, not only give clamp trouble."""
    g = torch.Generator().manual_seed(15)
    x = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64) * 3
    fu, fd = torch.rand(4, generator=g, dtype=torch.float64), torch.rand(6, generator=g, dtype=torch.float64)
    y = ops.filtered_lrelu(x, fu, fd, up=2, down=2, padding=5, gain=-1.5, clamp=1.0, impl="ref")
    t = _upfirdn_by_definition(x, fu, 2, 1, (5, 5, 5, 5), False, 4)
    t = (torch.nn.functional.leaky_relu(t, 0.2) * -1.5).clamp(-1.0, 1.0)
    torch.testing.assert_close(y, _upfirdn_by_definition(t, fd, 1, 2, (0, 0, 0, 0), False, 1),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_upfirdn2d_separable_in_reduced_precision_keeps_float32_taps(dtype):
    """float16/bfloat16 in and out, float32 taps and intermediate inside, as the CUDA kernel
    computes (and filtered_lrelu's reference): the taps and the result of the x pass were rounded to
    x's dtype, 0.45% off in bfloat16 with an SG3 filter where rounding the output alone costs 0.3%."""
    from sg3lib.filters import design_lowpass_filter
    g = torch.Generator().manual_seed(16)
    x = (torch.randn(2, 4, 20, 20, generator=g) * 3).to(dtype)
    f = design_lowpass_filter(12, 4.0, 3.0, 32)
    kw = dict(up=2, down=1, padding=[9, 8, 9, 8], gain=4)
    y = ops.upfirdn2d(x, f, impl="ref", **kw)
    assert y.dtype == dtype
    assert torch.equal(y, ops.upfirdn2d(x.float(), f, impl="ref", **kw).to(dtype))


@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_grouped_on_an_empty_batch(up):
    """The grouped form (the default on a GPU in training) of an empty batch gives an empty result
    and gradients, as the batched form: it failed with "non-positive groups" (up 1) or a division
    by zero (up 2), groups being the batch size."""
    from sg3lib.ops.conv import modulated_conv2d
    x = torch.randn(0, 4, 6, 6, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, requires_grad=True)
    styles = torch.randn(0, 4, requires_grad=True)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    y = modulated_conv2d(x, weight, styles, padding=1, up=up, resample_filter=f, grouped=True)
    assert y.shape == (0, 5, 6 * up, 6 * up)
    dx, dw = torch.autograd.grad(y.sum(), [x, weight])
    assert dx.shape == x.shape and not bool(dw.any())


@pytest.mark.parametrize("pad", [0, 1])
def test_grouped_modulated_conv_gradients_in_float64(pad):
    """The grouped convolution's backward summed the weight and factor gradients in float32 whatever
    the inputs: float64 gradcheck/gradgradcheck failed ('Jacobian mismatch for output 1')."""
    from sg3lib.ops.conv import _GroupedModConv
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    f = torch.randn(2, 4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda x, w, f: _GroupedModConv.apply(x, w, f, pad)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, f))
    assert torch.autograd.gradgradcheck(fn, (x, w, f))


def _conv2d_resample_by_definition(x, w, f, up, down, padding, groups):
    """StyleGAN2's resampling convolution spelled out on the fine grid: upsampling zero-stuffs, blurs
    (gain up^2) and convolves with w (a transposed convolution's orientation); downsampling blurs,
    cross-correlates with w and keeps every down-th sample. The blur pads the layer's own padding plus
    (fw + up - 1) // 2 before and (fw - up) // 2 after (upsampling), (fw - down + 1) // 2 and
    (fw - down) // 2 (downsampling): the grid alignment of the official layers."""
    fw = f.shape[-1]
    if up > 1:
        a, b = padding + (fw + up - 1) // 2, padding + (fw - up) // 2
        z = _upfirdn_by_definition(x, f, up, 1, [a, b, a, b], False, up * up)
        return torch.nn.functional.conv2d(z, w.flip([2, 3]), groups=groups)
    a, b = padding + (fw - down + 1) // 2, padding + (fw - down) // 2
    z = _upfirdn_by_definition(x, f, 1, 1, [a, b, a, b], False, 1)
    return torch.nn.functional.conv2d(z, w, groups=groups)[:, :, ::down, ::down]


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("fw", [2, 3, 4, 5])
@pytest.mark.parametrize("up,down", [(2, 1), (1, 2)], ids=["up", "down"])
def test_conv2d_resample_against_definition(up, down, fw, k, groups):
    """Odd and even, asymmetric filters (an odd [1, 2, 1] aligns differently from [1, 3, 3, 1]), 1x1
    and 3x3 kernels, grouped convolutions (StyleGAN2's grouped modulated upsampling)."""
    from sg3lib.ops.conv import conv2d_resample
    g = torch.Generator().manual_seed(fw * 10 + k + groups)
    x = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, k, k, generator=g, dtype=torch.float64)
    f = torch.rand(fw, generator=g, dtype=torch.float64) + 0.25
    y = conv2d_resample(x, w, f=f, up=up, down=down, padding=k // 2, groups=groups)
    want = _conv2d_resample_by_definition(x, w, f, up, down, k // 2, groups)
    assert y.shape == want.shape == (2, 6, 7 * up // down, 6 * up // down)
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)


def test_conv2d_resample_refuses_up_and_down_at_once():
    from sg3lib.ops.conv import conv2d_resample
    with pytest.raises(ValueError, match="either up- or downsampling"):
        conv2d_resample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3), f=torch.ones(2), up=2, down=2, padding=1)


def _modulated_conv_by_definition(x, weight, styles, padding):
    """StyleGAN2 eq. 1-3 literally, per sample, in float64: w' = s w, w'' = w' / sqrt(sum w'^2 + 1e-8)."""
    out = []
    for xn, sn in zip(x.double(), styles.double()):
        wn = weight.double() * sn.reshape(1, -1, 1, 1)
        wn = wn / (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        out.append(torch.nn.functional.conv2d(xn[None], wn, padding=padding)[0])
    return torch.stack(out)


@pytest.mark.parametrize("grouped", [False, True], ids=["batched", "grouped"])
def test_modulated_conv_of_a_zero_weight_row_or_zero_styles_is_zero_not_nan(grouped):
    """A pruned output channel (all-zero weight row) and a sample whose styles are all zero give 0
    there (eq. 3), not 0 * inf = NaN; the other channels and samples are unaffected."""
    from sg3lib.ops.conv import modulated_conv2d
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 6, 6, generator=g)
    weight = torch.randn(5, 4, 3, 3, generator=g)
    weight[2] = 0
    styles = torch.randn(3, 4, generator=g)
    styles[1] = 0
    y = modulated_conv2d(x, weight, styles, padding=1, grouped=grouped)
    assert bool(torch.isfinite(y).all())
    assert not bool(y[:, 2].any()) and not bool(y[1].any())
    torch.testing.assert_close(y.double(), _modulated_conv_by_definition(x, weight, styles, 1),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("style_scale,weight_scale", [(1e4, 1.0), (1.0, 1e4)], ids=["styles", "weight"])
def test_modulated_conv_in_float16_stays_in_range_for_large_styles_or_weights(style_scale, weight_scale):
    """Demodulation cancels any scale of the weight rows and the styles, so they are brought to unit
    RMS before x (float16) meets them: s w x summed over 4 x 9 taps would pass float16's 65504.
    Noise in float32 is added without promoting the float16 result."""
    from sg3lib.ops.conv import modulated_conv2d
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, 6, generator=g)
    weight = torch.randn(5, 4, 3, 3, generator=g) * weight_scale
    styles = (torch.rand(2, 4, generator=g) + 0.5) * style_scale
    noise = torch.randn(2, 1, 6, 6, generator=g)
    y = modulated_conv2d(x.half(), weight, styles, padding=1, noise=noise, grouped=False)
    assert y.dtype == torch.float16 and bool(torch.isfinite(y).all())
    want = _modulated_conv_by_definition(x, weight, styles, 1) + noise.double()
    assert float((y.double() - want).abs().max()) <= 1e-2 * float(want.abs().max())


def test_modulated_conv_takes_the_grouped_form_only_off_the_cpu_while_autograd_records(monkeypatch):
    """grouped=None: the grouped form (memory) where a device other than the CPU trains, whichever input
    takes the gradient; the batched form on the CPU and for inference. ('meta' stands in for a GPU:
    the choice is the device's type, and meta tensors run the shapes through.)"""
    from sg3lib.ops import conv
    calls = []
    real = conv._GroupedModConv.apply
    monkeypatch.setattr(conv._GroupedModConv, "apply", lambda *a: calls.append(1) or real(*a))

    def form(device, grad, needs):
        leaves = [torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(2, 4)]
        leaves = [t.to(device).requires_grad_(name in needs) for t, name in zip(leaves, "xws")]
        calls.clear()
        with torch.set_grad_enabled(grad):
            y = conv.modulated_conv2d(*leaves, padding=1)
        assert y.shape == (2, 5, 6, 6)
        return "grouped" if calls else "batched"
    for needs in ("x", "w", "s"):
        assert form("meta", True, needs) == "grouped", needs
        assert form("meta", False, needs) == "batched", needs
        assert form("cpu", True, needs) == "batched", needs
    assert form("meta", True, "") == "batched"


@pytest.mark.parametrize("needs", ["x", "w", "s", "ws"])
def test_grouped_modulated_conv_gradient_of_each_input_alone(needs):
    """Where only some inputs take a gradient (a frozen layer whose styles still train; x alone for
    path length regularization) the grouped backward computes just those and equals the batched one."""
    from sg3lib.ops.conv import modulated_conv2d
    g = torch.Generator().manual_seed(5)
    base = [torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64),
            torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64),
            torch.randn(2, 4, generator=g, dtype=torch.float64)]
    dy = torch.randn(2, 5, 6, 6, generator=g, dtype=torch.float64)
    grads = []
    for grouped in (False, True):
        leaves = [t.clone().requires_grad_(name in needs) for t, name in zip(base, "xws")]
        y = modulated_conv2d(*leaves, padding=1, grouped=grouped)
        grads.append(torch.autograd.grad(y, [t for t in leaves if t.requires_grad], dy))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_bias_act_clamp_bias_shape_and_dtype():
    """A negative clamp means none (as the official op); a clamp of 0 clamps to 0. The bias is one
    value per channel, a [C] vector: a [C, 1] one is refused, not broadcast. A float32 bias on a
    float16 x keeps the result float16."""
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(6)) * 10
    assert torch.equal(ops.bias_act(x, act="lrelu", clamp=-1), ops.bias_act(x, act="lrelu"))
    assert not bool(ops.bias_act(x, act="lrelu", clamp=0).any())
    with pytest.raises(ValueError, match=r"bias of shape \(3, 1\) does not match"):
        ops.bias_act(x, torch.zeros(3, 1))
    y = ops.bias_act(x.half(), torch.ones(3), act="lrelu")
    assert y.dtype == torch.float16
    torch.testing.assert_close(y, ops.bias_act(x + 1, act="lrelu").half(), rtol=1e-3, atol=1e-2)


def test_filtered_lrelu_refuses_factors_below_one():
    x = torch.zeros(1, 1, 4, 4)
    for kw in (dict(up=0), dict(down=0)):
        with pytest.raises(ValueError, match="factors must be >= 1"):
            ops.filtered_lrelu(x, **kw)
