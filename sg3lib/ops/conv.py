"""Convolutions of StyleGAN2/3: resampling convolution and modulated convolution.

conv2d_resample: a convolution fused with FIR up- or downsampling (StyleGAN2 sec. 4, following
"Making convolutional networks shift-invariant again"): upsampling is a stride-2 transposed
convolution followed by a blur, downsampling a blur followed by a stride-2 convolution.

modulated_conv2d: weight modulation and demodulation (StyleGAN2 eq. 1-3),
    w'_ijk = s_i w_ijk,   w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps).
Two forms of the same function: scale-input / shared convolution / scale-output (ordinary batched
convolutions, fast on the CPU and for inference), and the per-sample weights w'' as one grouped
convolution, which keeps only the layer's input for the backward instead of three activations.

Two autograd Functions keep less for the backward than torch's convolution, which keeps its input and
weight whatever takes a gradient: the grouped modulated convolution keeps its [N, O, I] factors and
forms the per-sample weights again in the backward, and a convolution whose weight takes no gradient
(the frozen discriminator while the generator trains) keeps only the weight. benchmarks/bench_memory.py,
StyleGAN3-T 256 px, batch 16, generator phase: 12.0 GiB batched -> 6.0 GiB.
"""
import functools

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .. import ops as _ops  # the dispatching upfirdn2d (reference or CUDA)
from .winograd import conv3x3_winograd, winograd_applicable

__all__ = ["conv2d_resample", "modulated_conv2d"]


def _fsize(f):
    if f is None:
        return 1
    return f.shape[-1]


def _conv_input_grad(dy, w, x_shape, stride, padding, groups, transposed):
    """d(conv)/dx . dy: a differentiable op (double backward works through it) that needs x's shape only."""
    x_like = dy.new_empty(1).expand(x_shape)  # as torch.nn.grad.conv2d_input does
    return torch.ops.aten.convolution_backward(dy, x_like, w, None, _pair(stride), _pair(padding), (1, 1),
                                               transposed, (0, 0), groups, (True, False, False))[0]


def _plain_conv(x, w, stride, padding, groups, transposed):
    conv = F.conv_transpose2d if transposed else F.conv2d
    return conv(x, w, stride=stride, padding=padding, groups=groups)


class _FrozenWeightConv(torch.autograd.Function):
    """A convolution whose weight takes no gradient; the backward keeps the weight, not the input
    (the discriminator's conv inputs in the generator phase: 1.1 GiB at StyleGAN3-T 256 px, batch 16)."""

    @staticmethod
    def forward(ctx, x, w, stride, padding, groups, transposed):
        ctx.save_for_backward(w)
        ctx.conf = (x.shape, stride, padding, groups, transposed)
        return _plain_conv(x, w, stride, padding, groups, transposed)

    @staticmethod
    def backward(ctx, dy):
        w, = ctx.saved_tensors
        return _conv_input_grad(dy, w, *ctx.conf), None, None, None, None, None


def _conv(x, w, stride=1, padding=0, groups=1, transposed=False):
    """F.conv2d, or F.conv_transpose2d; through _FrozenWeightConv where only x takes a gradient."""
    if torch.is_grad_enabled() and x.requires_grad and not w.requires_grad:
        return _FrozenWeightConv.apply(x, w, stride, padding, groups, transposed)
    return _plain_conv(x, w, stride, padding, groups, transposed)


def _per_sample_weights(w, factor, dtype):
    """w [O, I, k, k] times factor [N, O, I] -> [N * O, I, k, k] in dtype (sample n is group n)."""
    n, o, i = factor.shape
    return (w.unsqueeze(0) * factor.reshape(n, o, i, 1, 1)).reshape(n * o, i, *w.shape[2:]).to(dtype)


class _GroupedModConv(torch.autograd.Function):
    """Each sample n convolved with its own weights w * factor[n], all N as one grouped convolution.
    The backward keeps x, w and the factors and forms the per-sample weights again (autograd's own
    would keep them: 0.9 GiB at StyleGAN3-T 256 px, batch 16). Its ops are differentiable, so
    double backward (path length regularization) goes through it."""

    @staticmethod
    def forward(ctx, x, w, factor, padding):
        ctx.save_for_backward(x, w, factor)
        ctx.padding = padding
        n, i = x.shape[:2]
        y = F.conv2d(x.reshape(1, n * i, *x.shape[2:]), _per_sample_weights(w, factor, x.dtype),
                     padding=padding, groups=n)
        return y.reshape(n, -1, *y.shape[2:])

    @staticmethod
    def backward(ctx, dy):
        x, w, factor = ctx.saved_tensors
        need_x, need_w, need_f = ctx.needs_input_grad[:3]
        n, o, i = factor.shape
        xg = x.reshape(1, n * i, *x.shape[2:])
        dx, dws, _ = torch.ops.aten.convolution_backward(
            dy.reshape(1, n * o, *dy.shape[2:]).to(x.dtype), xg, _per_sample_weights(w, factor, x.dtype), None,
            (1, 1), _pair(ctx.padding), (1, 1), False, (0, 0), n, (need_x, need_w or need_f, False))
        dw = dfactor = None
        if need_w or need_f:
            acc = functools.reduce(torch.promote_types, (dws.dtype, w.dtype, factor.dtype, torch.float32))  # (fp16: fp32)
            dws = dws.to(acc).reshape(n, o, i, *w.shape[2:])
            dw = torch.einsum("noikl,noi->oikl", dws, factor.to(acc)).to(w.dtype) if need_w else None
            dfactor = torch.einsum("noikl,oikl->noi", dws, w.to(acc)).to(factor.dtype) if need_f else None
        return (dx.reshape(x.shape) if need_x else None), dw, dfactor, None


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1):
    """Cross-correlate x [N, I, H, W] with w [O, I / groups, kh, kw] (or, for up > 1, convolve the
    zero-stuffed input with w), resampling by `up` or `down` (2) with the FIR filter f.
    `padding` is the conv padding the layer would use without resampling (kernel // 2)."""
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample does either up- or downsampling, not both")
    k = w.shape[-1]
    fw = _fsize(f)
    if up > 1:
        # Transposed conv (stride up, no padding) then blur; the pads align the grids so that the
        # output is `up` times the input size for padding = k // 2.
        p0 = padding + (fw + up - 1) // 2 - (k - 1)
        p1 = padding + (fw - up) // 2 - (k - up)
        o, i = w.shape[0] // groups, w.shape[1]  # conv_transpose2d wants [groups * I, O, kh, kw]
        wt = w.reshape(groups, o, i, k, k).transpose(1, 2).reshape(groups * i, o, k, k)
        x = _conv(x, wt, stride=up, groups=groups, transposed=True)
        return _ops.upfirdn2d(x, f, padding=[p0, p1, p0, p1], gain=up * up)
    if down > 1:
        p0 = padding + (fw - down + 1) // 2
        p1 = padding + (fw - down) // 2
        if k == 1:  # 1x1: downsample first, then the (cheap) conv on fewer pixels
            x = _ops.upfirdn2d(x, f, down=down, padding=[p0, p1, p0, p1])
            return _conv(x, w, groups=groups)
        x = _ops.upfirdn2d(x, f, padding=[p0, p1, p0, p1])
        return _conv(x, w, stride=down, groups=groups)
    if winograd_applicable(x, w, groups=groups):
        return conv3x3_winograd(x, w, padding)
    return _conv(x, w, padding=padding, groups=groups)


def modulated_conv2d(x, weight, styles, demodulate=True, padding=0, up=1, resample_filter=None,
                     input_gain=None, noise=None, grouped=None):
    """Modulated convolution (StyleGAN2 eq. 1-3).

    x [N, I, H, W]; weight [O, I, k, k]; styles [N, I]; input_gain: scalar or [N, I] factor on the
    input applied after demodulation (StyleGAN3's magnitude EMA); noise: added after demodulation.
    Computed in x.dtype; the demodulation coefficients in float32. grouped: per-sample weights in
    one grouped convolution (True) or the batched form (False); None: grouped on a GPU while
    autograd records (training), where it saves memory, batched otherwise.
    """
    n, i = styles.shape
    o = weight.shape[0]
    w32 = weight.float()
    s32 = styles.float()
    if demodulate:
        # Scale weight rows and styles to unit RMS first: demodulation cancels it exactly, and it
        # keeps reduced-precision activations in range.
        # (clamped: an all-zero row, a pruned channel, would be 0 * inf = NaN, and NaN the whole image;
        # StyleGAN2 eq. 3 gives that channel 0)
        w32 = w32 * w32.square().mean(dim=[1, 2, 3], keepdim=True).clamp_min(1e-30).rsqrt()
        s32 = s32 * s32.square().mean(dim=1, keepdim=True).clamp_min(1e-30).rsqrt()
    scale_in = s32
    if input_gain is not None:
        scale_in = scale_in * torch.as_tensor(input_gain, dtype=torch.float32, device=x.device)
    # sum_{i,k} (s_i w_oik)^2 = sum_i s_i^2 (sum_k w_oik^2)
    dcoefs = (s32.square() @ w32.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt() if demodulate else None
    if grouped is None:
        grouped = x.device.type != "cpu" and torch.is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or styles.requires_grad)
    if grouped and n > 0:  # w''[n] = s_n * w * d_n, sample n's channels as group n (groups=0 is refused)
        # The [N, O, I] factors, not the per-sample weights, are what the backward keeps.
        factor = scale_in.reshape(n, 1, i) * (dcoefs.reshape(n, o, 1) if demodulate else 1)
        factor = factor.expand(n, o, i)
        if up == 1:
            x = _GroupedModConv.apply(x, w32, factor, padding)
        else:  # StyleGAN2's upsampling layers: a transposed grouped conv and a blur
            x = conv2d_resample(x.reshape(1, n * i, *x.shape[2:]), _per_sample_weights(w32, factor, x.dtype),
                                f=resample_filter, up=up, padding=padding, groups=n)
            x = x.reshape(n, o, *x.shape[2:])
    else:
        x = x * scale_in.to(x.dtype).reshape(n, i, 1, 1)
        x = conv2d_resample(x, w32.to(x.dtype), f=resample_filter, up=up, padding=padding)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, o, 1, 1)
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
