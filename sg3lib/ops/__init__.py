"""Numerical primitives of StyleGAN2/3, each with two implementations:

- 'ref':  pure PyTorch, the truth and the CPU path (fast on CPU too: polyphase, separable);
- 'cuda': a compiled kernel from kernels/, built on first use, checked against 'ref'.

`impl=None` picks 'cuda' when the tensor is on a GPU and the kernel is available, else 'ref'.
`report()` says which path each op takes on this machine and why.
"""
import math

import torch

from .bias_act import bias_act_ref
from .filtered_lrelu import check_args as check_filtered_lrelu_args, filtered_lrelu_ref
from .upfirdn2d import parse_padding, parse_scaling, upfirdn2d_ref

__all__ = ["upfirdn2d", "filtered_lrelu", "bias_act", "report"]


def _use_cuda(x, impl):
    if impl not in (None, "ref", "cuda"):
        raise ValueError(f"impl must be None, 'ref' or 'cuda', got {impl!r}")
    if not isinstance(x, torch.Tensor):  # (x.is_cuda below: an AttributeError for a numpy array)
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__} (torch.from_numpy converts an array)")
    if impl == "ref" or (impl is None and not x.is_cuda):
        return None
    if not x.is_cuda:
        raise RuntimeError("impl='cuda' needs a tensor on a CUDA device; this one is on the CPU")
    from . import _cuda
    ok, reason = _cuda.available()
    if ok:
        return _cuda
    if impl == "cuda":
        raise RuntimeError(f"impl='cuda' requested but the CUDA kernel cannot be used: {reason}")
    return None


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample by inserting zeros, pad, convolve with FIR filter f, downsample. See upfirdn2d.py."""
    cuda = _use_cuda(x, impl)
    if cuda is None:
        return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    return cuda.upfirdn2d(x, f, parse_scaling(up, "up"), parse_scaling(down, "down"),
                          parse_padding(padding), bool(flip_filter), float(gain))


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2),
                   slope=0.2, clamp=None, flip_filter=False, impl=None):
    """Bias, upsample with fu, leaky ReLU times gain, clamp, downsample with fd (StyleGAN3 sec. 3.2)."""
    up, down = check_filtered_lrelu_args(x, up, down)
    cuda = _use_cuda(x, impl)
    if cuda is None:
        return filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
    return cuda.filtered_lrelu(x, fu, fd, b, up, down, parse_padding(padding), float(gain),
                               float(slope), None if clamp is None else float(clamp), bool(flip_filter))


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl=None):
    """Bias, activation, gain and clamp in one op. See bias_act.py for the activations."""
    cuda = _use_cuda(x, impl)
    if cuda is None:
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    from .bias_act import resolve
    _, alpha, gain, clamp = resolve(act, alpha, gain, clamp)
    return cuda.bias_act(x, b, dim, act, alpha, gain, clamp)


def report():
    """Which implementation each op uses here, and why (a few lines of text)."""
    try:
        from . import _cuda
        return _cuda.report()
    except ImportError as e:  # the loader itself is missing: a broken install
        return f"all ops: reference (CUDA loader unavailable: {e})"
