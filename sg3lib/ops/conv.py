"""Convolutions of StyleGAN2/3: resampling convolution and modulated convolution.

conv2d_resample: a convolution fused with FIR up- or downsampling (StyleGAN2 sec. 4, following
"Making convolutional networks shift-invariant again"): upsampling is a stride-2 transposed
convolution followed by a blur, downsampling a blur followed by a stride-2 convolution.

modulated_conv2d: weight modulation and demodulation (StyleGAN2 eq. 1-3),
    w'_ijk = s_i w_ijk,   w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps).
It is computed as scale-input / shared convolution / scale-output, which is the same function as
the per-sample grouped convolution but uses ordinary batched convolutions (fast on the CPU).
"""
import torch
import torch.nn.functional as F

from .. import ops as _ops  # the dispatching upfirdn2d (reference or CUDA)
from .winograd import conv3x3_winograd, winograd_applicable

__all__ = ["conv2d_resample", "modulated_conv2d"]


def _fsize(f):
    if f is None:
        return 1
    return f.shape[-1]


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0):
    """Cross-correlate x [N, I, H, W] with w [O, I, kh, kw] (or, for up > 1, convolve the
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
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=up)
        return _ops.upfirdn2d(x, f, padding=[p0, p1, p0, p1], gain=up * up)
    if down > 1:
        p0 = padding + (fw - down + 1) // 2
        p1 = padding + (fw - down) // 2
        if k == 1:  # 1x1: downsample first, then the (cheap) conv on fewer pixels
            x = _ops.upfirdn2d(x, f, down=down, padding=[p0, p1, p0, p1])
            return F.conv2d(x, w)
        x = _ops.upfirdn2d(x, f, padding=[p0, p1, p0, p1])
        return F.conv2d(x, w, stride=down)
    if winograd_applicable(x, w):
        return conv3x3_winograd(x, w, padding)
    return F.conv2d(x, w, padding=padding)


def modulated_conv2d(x, weight, styles, demodulate=True, padding=0, up=1, resample_filter=None,
                     input_gain=None, noise=None):
    """Modulated convolution (StyleGAN2 eq. 1-3).

    x [N, I, H, W]; weight [O, I, k, k]; styles [N, I]; input_gain: scalar or [N, I] factor on the
    input applied after demodulation (StyleGAN3's magnitude EMA); noise: added after demodulation.
    Computed in x.dtype; the demodulation coefficients in float32.
    """
    n, i = styles.shape
    o = weight.shape[0]
    w32 = weight.float()
    s32 = styles.float()
    if demodulate:
        # Scale weight rows and styles to unit RMS first: demodulation cancels it exactly, and it
        # keeps reduced-precision activations in range.
        w32 = w32 * w32.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        s32 = s32 * s32.square().mean(dim=1, keepdim=True).rsqrt()
    scale_in = s32
    if input_gain is not None:
        scale_in = scale_in * torch.as_tensor(input_gain, dtype=torch.float32, device=x.device)
    x = x * scale_in.to(x.dtype).reshape(n, i, 1, 1)
    x = conv2d_resample(x, w32.to(x.dtype), f=resample_filter, up=up, padding=padding)
    if demodulate:
        # sum_{i,k} (s_i w_oik)^2 = sum_i s_i^2 (sum_k w_oik^2)
        dcoefs = (s32.square() @ w32.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
        x = x * dcoefs.to(x.dtype).reshape(n, o, 1, 1)
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
