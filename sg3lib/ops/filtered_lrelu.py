"""filtered_lrelu: StyleGAN3's alias-free nonlinearity (Karras et al. 2021, sec. 3.2).

    y = down_fd( clamp( lrelu( up_fu(x + b) ) * gain ) )

The pointwise nonlinearity creates high frequencies, so it runs at a temporarily higher sampling
rate (upsample by `up` with low-pass `fu`), and the result is low-pass filtered with `fd` before
returning to the output rate. `padding` applies to the upsampled signal. The upsampling pass
carries gain up**2 so that zero-stuffing keeps the signal's magnitude.
"""
import math

from .bias_act import add_bias
from .upfirdn2d import as_int, upfirdn2d_ref

import torch


_GROUP_ELEMS = 1 << 20  # elements of the upsampled maps per group


def check_args(x, up, down):
    """The checks both paths share: x [N, C, H, W]; up and down one int each (same along x and y)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects x of shape [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    factors = as_int(up, "up"), as_int(down, "down")
    for name, v in zip(("up", "down"), factors):
        if v < 1:
            raise ValueError(f"{name} factors must be >= 1, got {v}")  # as upfirdn2d says it
    return factors


def filtered_lrelu_ref(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2),
                       slope=0.2, clamp=None, flip_filter=False):
    up, down = check_args(x, up, down)
    clamp = None if clamp is None or clamp < 0 else clamp  # negative: none, as in bias_act (and the kernel)
    out_dtype = x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        # Reduced precision in and out, float32 taps and arithmetic inside, as the CUDA kernel
        # computes: taps rounded to bfloat16 put errors of up to 0.2% into each filter's gain, which
        # compound over the layers (StyleGAN3-T 64 px in bfloat16: 5.6% off the float32 image,
        # 0.9% this way). The bias is rounded to x's dtype first, as the kernel takes it.
        b = None if b is None else b.to(x.dtype)
        x = x.float()
    x = add_bias(x, b)
    n, c, h, w = x.shape
    # Channels are independent: run them in groups whose upsampled maps fit in a CPU cache
    # (~4 MB), so the up -> lrelu -> down chain does not stream large intermediates to memory;
    # but at least 8 planes, as the batched matmuls get far slower below that (measured: a
    # 256-channel 278 px layer takes 9.6 s in groups of 3 planes, 2.6 s in groups of 8).
    per_plane = max(1, (h * up + 16) * (w * up + 16))
    group = min(n * c, max(8, _GROUP_ELEMS // per_plane))
    if torch.compiler.is_compiling():
        group = n * c  # one group: a traced loop would unroll, and the compiler fuses the chain itself
    parts = [_one_group(xg, fu, fd, up, down, padding, gain, slope, clamp, flip_filter)
             for xg in x.reshape(1, n * c, h, w).split(group, dim=1)]
    y = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    return y.reshape(n, c, y.shape[2], y.shape[3]).to(out_dtype)


def _one_group(x, fu, fd, up, down, padding, gain, slope, clamp, flip_filter):
    x = upfirdn2d_ref(x, fu, up=up, padding=padding, flip_filter=flip_filter, gain=up ** 2)
    # clamp(lrelu(x) * gain, +-clamp) = gain * clamp(lrelu(x), +-clamp / |gain|) (the clamp is odd):
    # the gain rides on the downsampling pass, which saves a full pass over the largest map.
    # With gain 0 the output is 0 whatever the clamp.
    inplace = not (torch.is_grad_enabled() and x.requires_grad)
    x = torch.nn.functional.leaky_relu(x, slope, inplace=inplace)
    if clamp is not None and gain != 0:
        lim = clamp / abs(gain)
        x = x.clamp_(-lim, lim) if inplace else x.clamp(-lim, lim)
    return upfirdn2d_ref(x, fd, down=down, flip_filter=flip_filter, gain=gain)
