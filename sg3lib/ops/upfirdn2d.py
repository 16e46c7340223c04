"""upfirdn2d: upsample, pad, FIR-filter and downsample a batch of 2-D images.

    y = downsample_down( conv( pad( upsample_up(x) ), f * gain ) )

Upsampling inserts up-1 zeros after each sample; negative padding crops. The filter is a true
convolution (flipped) unless flip_filter=True. A 1-D filter is separable (applied along x then y,
each pass scaled by sqrt(|gain|), one also by its sign); a 2-D filter `f[y, x]` is not.
With float16/bfloat16 inputs the separable passes run in float32 and only the result is rounded;
a 2-D filter is convolved in x's dtype (the convolution keeps its input for the backward).

The reference path is the definition written as linear algebra: a separable pass along one axis
is a banded matrix A with A[m, j] = w[p0 + j*up - m*down] (see resampling_matrix), applied block
by block so that only the band is multiplied and inserted zeros never are; 2-D (non-separable)
filters use a strided transposed convolution. Built from torch matmuls and convolutions, it
supports any order of autograd and is also the fast CPU path.
"""
import operator

import torch
import torch.nn.functional as F


def as_int(v, name, what="an int"):
    """v as a Python int: numpy and torch integers too (layer geometry is often numpy arithmetic);
    a float (2.0) is refused with the argument's name rather than silently truncated."""
    try:
        return operator.index(v)
    except TypeError:
        raise ValueError(f"{name} must be {what}, got {v!r}") from None


def _ints(v, name, lengths, what):
    """An integer, or a sequence (list, tuple, numpy array) of len in `lengths`, as a list of ints."""
    try:
        return [operator.index(v)]
    except TypeError:
        pass
    try:
        items = list(v)
    except TypeError:
        raise ValueError(f"{name} must be {what}, got {v!r}") from None
    try:
        if len(items) in lengths:
            return [operator.index(i) for i in items]
    except TypeError:
        pass
    raise ValueError(f"{name} must be {what}, got {v!r}")


def parse_scaling(up_or_down, name="up"):
    s = _ints(up_or_down, name, (2,), "an int or [x, y] of ints")
    sx, sy = s * 2 if len(s) == 1 else s
    if sx < 1 or sy < 1:
        raise ValueError(f"{name} factors must be >= 1, got {up_or_down!r}")
    return sx, sy


def parse_padding(padding):
    """int, [x, y] or [x0, x1, y0, y1] -> (x0, x1, y0, y1)."""
    p = _ints(padding, "padding", (2, 4), "an int, [x, y] or [x0, x1, y0, y1] of ints")
    if len(p) == 1:
        return p[0], p[0], p[0], p[0]
    if len(p) == 2:
        return p[0], p[0], p[1], p[1]
    return tuple(p)


def filter_size(f):
    """(width, height) of a filter; None is the 1x1 identity."""
    if f is None:
        return 1, 1
    return (f.shape[-1], f.shape[0]) if f.ndim == 2 else (f.shape[0], f.shape[0])


def _pad_or_crop(x, dim, before, after):
    """Pad (positive) or crop (negative) tensor x along dim: pads first, so that a crop on one side
    may take samples that the padding on the other side added (width 2, padding [4, -3]: 3 left)."""
    if before > 0 or after > 0:
        pad = [0, 0] * (x.ndim - 1 - dim % x.ndim) + [max(before, 0), max(after, 0)]
        x = F.pad(x, pad)
    if before < 0 or after < 0:
        start = max(-before, 0)
        x = x.narrow(dim, start, x.shape[dim] - start - max(-after, 0))
    return x


def _conv(x, w, stride=1):
    """Apply the same small filter bank w [O, 1, kh, kw] to every image of x [B, 1, H, W] as one
    depthwise convolution (groups=B): much faster on CPU than B images through a 1-channel conv."""
    b = x.shape[0]
    if b == 0:  # no images: groups=0 is refused, and the plain convolution gives the same empty result
        return F.conv2d(x, w, stride=stride)
    y = F.conv2d(x.reshape(1, b, x.shape[2], x.shape[3]), w.repeat(b, 1, 1, 1), stride=stride, groups=b)
    return y.reshape(b, w.shape[0], y.shape[2], y.shape[3])


def resampling_matrix(n, w, up=1, down=1, p0=0, p1=0):
    """The 1-D upfirdn as a matrix A [n_out, n], y = A @ x, read off the definition: with u the
    zero-stuffed, padded input (u[p0 + j*up] = x[j]) and z[i] = sum_k u[i + k] w[k] the
    correlation with kernel w, y[m] = z[m*down], so A[m, j] = w[p0 + j*up - m*down] (0 outside w)."""
    k = w.numel()
    n_out = (n * up + p0 + p1 - k) // down + 1
    taps = p0 + torch.arange(n, device=w.device) * up - torch.arange(n_out, device=w.device)[:, None] * down
    inside = (taps >= 0) & (taps < k)
    return w[taps.clamp(0, k - 1)] * inside.to(w.dtype)


def _band_blocks(n, n_out, k, up, down, p0, block):
    """Split A's rows into blocks of `block` outputs; yield (o0, o1, i0, i1): the input columns
    [i0, i1) that those rows touch (A is banded: output m reads about k/up inputs around m*down/up)."""
    for o0 in range(0, n_out, block):
        o1 = min(o0 + block, n_out)
        i0 = max(0, -(-(o0 * down - p0) // up))                   # ceil((o0*down - p0) / up)
        i1 = min(n, ((o1 - 1) * down - p0 + k - 1) // up + 1)
        yield o0, o1, i0, max(i0, i1)


def _band_plan(n, w, up, down, p0, p1):
    """The row blocks of resampling_matrix and their band sub-matrices: [(o0, o1, i0, i1, A_block)].
    Cached (filtered_lrelu runs the same plan on every group of channels) unless w needs a grad, or
    under torch.compile, which traces the plan into the graph (reading w's taps would break it)."""
    if w.requires_grad or torch.compiler.is_compiling():
        return _make_plan(n, w, up, down, p0, p1)
    key = (n, tuple(w.tolist()), w.dtype, str(w.device), up, down, p0, p1)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 256:
            _PLANS.clear()
        # Built as ordinary tensors even under torch.inference_mode(): a later call with autograd
        # (projection, training in the same notebook) saves them for the backward, which autograd
        # refuses for inference tensors.
        with torch.inference_mode(False):
            plan = _PLANS[key] = _make_plan(n, w.clone(), up, down, p0, p1)
    return plan


_PLANS = {}


def _make_plan(n, w, up, down, p0, p1):
    a = resampling_matrix(n, w, up, down, p0, p1)
    block = 16 * up if a.shape[0] > 24 * up else a.shape[0]
    if torch.compiler.is_compiling():  # a traced loop unrolls: fewer, larger blocks (<= 2x the band's work)
        block = max(block, 128 * up)
    return [(o0, o1, i0, i1, a[o0:o1, i0:i1].contiguous())
            for o0, o1, i0, i1 in _band_blocks(n, a.shape[0], w.numel(), up, down, p0, block)]


def _upfirdn_1d(x, w, up, down, p0, p1, axis):
    """One separable pass along `axis` (1 = y, 2 = x) of planes x [P, H, W].

    A banded matrix product, split into row blocks so that only the band is multiplied: each
    block is one GEMM on a view of x, which on a CPU runs far faster than a 1-D depthwise
    convolution of the same samples (and multiplies no inserted zeros)."""
    parts = []
    for o0, o1, i0, i1, a in _band_plan(x.shape[axis], w, up, down, p0, p1):
        if i1 == i0 and not x.requires_grad:  # rows that only see padding (a GEMM keeps the graph)
            shape = list(x.shape)
            shape[axis] = o1 - o0
            parts.append(x.new_zeros(shape))
        elif axis == 2:
            parts.append(x[:, :, i0:i1] @ a.t())
        else:
            parts.append(a @ x[:, i0:i1])
    return torch.cat(parts, axis) if len(parts) > 1 else parts[0]


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
    if f.ndim == 1:
        # float16/bfloat16 in and out, float32 taps and intermediate inside, as the CUDA kernel
        # computes (the matmuls keep only the band matrices for the backward, not a float32 x).
        y = x.reshape(n * c, h, w).float() if x.dtype in (torch.float16, torch.bfloat16) else x.reshape(n * c, h, w)
        f = f.to(y.dtype)
        # sqrt(|gain|) on each pass and the sign on one (gain ** 0.5 of a negative gain is complex)
        wy = (f if flip_filter else f.flip(0)) * abs(gain) ** 0.5
        wx = -wy if gain < 0 else wy
        y = _upfirdn_1d(y, wx, upx, downx, px0, px1, axis=2)
        y = _upfirdn_1d(y, wy, upy, downy, py0, py1, axis=1)
        return y.reshape(n, c, y.shape[1], y.shape[2]).to(x.dtype)
    f = f.to(x.dtype) * gain
    w_corr = f if flip_filter else f.flip([0, 1])
    y = _upfirdn2d_nonseparable(x.reshape(n * c, 1, h, w), w_corr, upx, upy, downx, downy, px0, px1, py0, py1)
    return y.reshape(n, c, y.shape[2], y.shape[3])
