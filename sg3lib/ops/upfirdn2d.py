"""upfirdn2d: upsample, pad, FIR-filter and downsample a batch of 2-D images.

    y = downsample_down( conv( pad( upsample_up(x) ), f * gain ) )

Upsampling inserts up-1 zeros after each sample; negative padding crops. The filter is a true
convolution (flipped) unless flip_filter=True. A 1-D filter is separable (applied along x then y,
each pass scaled by sqrt(gain)); a 2-D filter `f[y, x]` is not.

The reference path never multiplies by the inserted zeros: upsampling is a transposed
convolution with stride `up` (polyphase), downsampling a strided convolution, so CPU users pay
only for the samples they keep. Built from torch convolutions, it supports any order of autograd.
"""
import torch
import torch.nn.functional as F


def _pair(v, name):
    if isinstance(v, int):
        return v, v
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or [x, y], got {v!r}")
    return int(v[0]), int(v[1])


def parse_scaling(up_or_down, name="up"):
    sx, sy = _pair(up_or_down, name)
    if sx < 1 or sy < 1:
        raise ValueError(f"{name} factors must be >= 1, got {up_or_down!r}")
    return sx, sy


def parse_padding(padding):
    """int, [x, y] or [x0, x1, y0, y1] -> (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return tuple(padding)
    raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}")


def filter_size(f):
    """(width, height) of a filter; None is the 1x1 identity."""
    if f is None:
        return 1, 1
    return (f.shape[-1], f.shape[0]) if f.ndim == 2 else (f.shape[0], f.shape[0])


def _pad_or_crop(x, dim, before, after):
    """Pad (positive) or crop (negative) tensor x along dim."""
    if before < 0:
        x = x.narrow(dim, -before, x.shape[dim] + before)
        before = 0
    if after < 0:
        x = x.narrow(dim, 0, x.shape[dim] + after)
        after = 0
    if before or after:
        pad = [0, 0] * (x.ndim - 1 - dim % x.ndim) + [before, after]
        x = F.pad(x, pad)
    return x


def _conv(x, w, stride=1):
    """Apply the same small filter bank w [O, 1, kh, kw] to every image of x [B, 1, H, W] as one
    depthwise convolution (groups=B): much faster on CPU than B images through a 1-channel conv."""
    b = x.shape[0]
    y = F.conv2d(x.reshape(1, b, x.shape[2], x.shape[3]), w.repeat(b, 1, 1, 1), stride=stride, groups=b)
    return y.reshape(b, w.shape[0], y.shape[2], y.shape[3])


def _polyphase_filters(w, up, p0):
    """Split correlation kernel w into `up` phase filters (StyleGAN3 App. C: upsampling by zero
    insertion then filtering equals `up` short filters at the input rate, interleaved).

    Output sample m = q*up + r is  sum_t x[q + j0 + t] * h[r, t].  Returns (h [up, T], j0).
    """
    k = w.numel()
    j0 = min(-((p0 - r) // up) for r in range(up))          # ceil((r - p0) / up), smallest
    j1 = max((k - 1 + r - p0) // up for r in range(up))
    j = torch.arange(j0, j1 + 1, device=w.device)
    taps = j[None, :] * up + p0 - torch.arange(up, device=w.device)[:, None]   # [up, T] indices into w
    valid = (taps >= 0) & (taps < k)
    return w[taps.clamp(0, k - 1)] * valid.to(w.dtype), j0


def _upfirdn_1d(x, w, up, down, p0, p1, axis):
    """One pass along `axis` (2 = y, 3 = x) of x [B, 1, H, W].

    w is the correlation kernel (1-D): z[m] = sum_k u[m + k] w[k] with u the zero-stuffed,
    padded input; the result is z[::down]. Zeros are never multiplied: up > 1 runs the polyphase
    filters as one convolution with `up` output channels, down > 1 a strided convolution.
    """
    k, n = w.numel(), x.shape[axis]
    along = (lambda t: t.reshape(t.shape[0], 1, t.shape[-1], 1)) if axis == 2 else (lambda t: t.reshape(t.shape[0], 1, 1, t.shape[-1]))
    if up == 1:
        x = _pad_or_crop(x, axis, p0, p1)
        return _conv(x, along(w[None]), stride=(down, 1) if axis == 2 else (1, down))
    length = n * up + p0 + p1 - k + 1                          # samples of z
    q = -(-length // up)                                       # output samples per phase
    h, j0 = _polyphase_filters(w, up, p0)
    x = _pad_or_crop(x, axis, -j0, (q + j0 + h.shape[1] - 1) - n)
    y = _conv(x, along(h))                                      # [B, up, H, q] or [B, up, q, W]
    b = y.shape[0]
    if axis == 3:
        y = y.permute(0, 2, 3, 1).reshape(b, 1, y.shape[2], q * up)[..., :length]
        return y[..., ::down] if down > 1 else y
    y = y.permute(0, 3, 2, 1).reshape(b, 1, y.shape[3], q * up)[..., :length]   # [B, 1, W, H*up]
    y = y[..., ::down] if down > 1 else y
    return y.transpose(2, 3)


def _upfirdn2d_nonseparable(x, w, upx, upy, downx, downy, px0, px1, py0, py1):
    kh, kw = w.shape
    if upx == 1 and upy == 1:
        x = _pad_or_crop(_pad_or_crop(x, 3, px0, px1), 2, py0, py1)
        return _conv(x, w[None, None], stride=(downy, downx))
    t = F.conv_transpose2d(x, w.flip([0, 1])[None, None], stride=(upy, upx))
    h, wd = x.shape[2] * upy + py0 + py1 - kh + 1, x.shape[3] * upx + px0 + px1 - kw + 1
    sy, sx = kh - 1 - py0, kw - 1 - px0
    t = _pad_or_crop(t, 2, -sy, sy + h - t.shape[2])
    t = _pad_or_crop(t, 3, -sx, sx + wd - t.shape[3])
    return t[:, :, ::downy, ::downx]


def upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Pure-PyTorch upfirdn2d (the truth, and the CPU path)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    upx, upy = parse_scaling(up, "up")
    downx, downy = parse_scaling(down, "down")
    px0, px1, py0, py1 = parse_padding(padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")
    n, c, h, w = x.shape
    fw, fh = filter_size(f)
    out_h = (h * upy + py0 + py1 - fh) // downy + 1
    out_w = (w * upx + px0 + px1 - fw) // downx + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"upfirdn2d output would be empty: input {h}x{w}, up {up}, down {down}, "
                         f"padding {padding}, filter {fh}x{fw}")
    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    w_corr = f if flip_filter else f.flip(list(range(f.ndim)))
    y = x.reshape(n * c, 1, h, w)  # one filter for every channel: fold channels into the batch
    if f.ndim == 1:
        y = _upfirdn_1d(y, w_corr, upx, downx, px0, px1, axis=3)
        y = _upfirdn_1d(y, w_corr, upy, downy, py0, py1, axis=2)
    else:
        y = _upfirdn2d_nonseparable(y, w_corr, upx, upy, downx, downy, px0, px1, py0, py1)
    return y.reshape(n, c, y.shape[2], y.shape[3])
