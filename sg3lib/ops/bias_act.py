"""bias_act: add a per-channel bias, apply an activation, scale by a gain, clamp.

    y = clamp(act(x + b) * gain, -clamp, clamp)

The gains keep activations' second moment near 1 (StyleGAN2, sec. B: sqrt(2) after ReLU-like
units). The reference is plain torch, so autograd gives any order of derivative (R1 needs two).
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    func: Callable  # (x, alpha) -> y
    def_alpha: float
    def_gain: float


ACTIVATIONS = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def resolve(act, alpha, gain, clamp):
    """Fill in an activation's defaults: returns (activation, alpha, gain, clamp or None)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = None if clamp is None or clamp < 0 else float(clamp)
    return spec, alpha, gain, clamp


def add_bias(x, b, dim=1):
    if b is None:
        return x
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim {dim} is out of range for x of shape {tuple(x.shape)}")
    if b.ndim != 1 or b.shape[0] != x.shape[dim]:
        raise ValueError(f"bias of shape {tuple(b.shape)} does not match dim {dim} of x {tuple(x.shape)}")
    shape = [1] * x.ndim
    shape[dim] = -1
    return x + b.to(x.dtype).reshape(shape)


def bias_act_ref(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    spec, alpha, gain, clamp = resolve(act, alpha, gain, clamp)
    x = spec.func(add_bias(x, b, dim), alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x
