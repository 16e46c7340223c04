"""Building blocks shared by the generators and the discriminator.

Parameters are stored unscaled (N(0, 1) init) and scaled at run time by He's constant
(equalized learning rate, Karras et al. 2018), so every layer learns at the same speed.
"""
import math

import numpy as np
import torch
from torch import nn

from .. import ops
from ..filters import setup_filter
from ..ops.bias_act import ACTIVATIONS
from ..ops.conv import conv2d_resample


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale each vector to unit root-mean-square (StyleGAN's pixel norm of z and the c embedding)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def compute_dtype(use_fp16, x, force_fp32=False, bf16=False):
    """The dtype a layer computes in: reduced precision only on the layers marked use_fp16.

    float16 on CUDA (the paper's mixed precision); in bf16 mode bfloat16 on any device; float32
    otherwise (the CPU default, which is what the reference fixtures are)."""
    if force_fp32 or not use_fp16:
        return torch.float32
    if bf16:
        return torch.bfloat16
    return torch.float16 if x.device.type == "cuda" else torch.float32


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalized learning rate and an optional fused activation."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1,
                 weight_init=1, bias_init=0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        bias_init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
        self.bias = nn.Parameter(torch.from_numpy(bias_init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return x.matmul(w.t()) if b is None else torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with equalized learning rate, optional FIR up/downsampling, fused bias/act/clamp."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1,
                 down=1, resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False,
                 trainable=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = 1.0 if activation == "linear" else _def_gain(activation)
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        b = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = None if b is None else nn.Parameter(b)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", b)

    def forward(self, x, gain=1):
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        x = conv2d_resample(x, w, f=self.resample_filter.to(x.dtype), up=self.up, down=self.down, padding=self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


def _def_gain(act):
    """bias_act's default gain for `act` (He init for the rectifiers and swish: sqrt(2)): one table."""
    spec = ACTIVATIONS.get(act)
    return spec.def_gain if spec is not None else 1.0  # (an unknown name fails in bias_act, saying so)


class MappingNetwork(nn.Module):
    """z (and class label c) -> w, broadcast to num_ws copies, with the truncation trick.

    z and the embedded c are each normalised to unit RMS, concatenated and passed through
    num_layers leaky-ReLU dense layers at lr_multiplier 0.01. w_avg tracks the mean w during
    training (EMA with w_avg_beta); truncation lerps towards it: w' = w_avg + psi (w - w_avg)
    on the first truncation_cutoff ws (all when None). With num_ws=None (the discriminator's
    label embedding) it returns a single vector and keeps no w_avg.
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None,
                 layer_features=None, activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1],
                                                          activation=activation, lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        parts = []
        if self.z_dim:
            _check_shape(z, [None, self.z_dim], "z")
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim:
            _check_shape(c, [None, self.c_dim], "c")
            if self.z_dim and len(c) != len(z):
                raise ValueError(f"c has {len(c)} rows but z has {len(z)}: give one label per latent")
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None and x.shape[0] > 0:  # (no samples: no mean)
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs w_avg, which this mapping does not track (w_avg_beta=None)")
            cut = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            x = x.clone()
            x[:, :cut] = self.w_avg.lerp(x[:, :cut], truncation_psi)
        return x

    def extra_repr(self):
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


def _check_shape(t, shape, name):
    want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
    if t is None:
        raise ValueError(f"{name} is required (expected shape {want}), got None")
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")


class GeneratorBase(nn.Module):
    """G(z, c) = synthesis(mapping(z, c)) with the official constructor: (z_dim, c_dim, w_dim,
    img_resolution, img_channels, mapping_kwargs, **synthesis_kwargs). Subclasses name their
    synthesis network and their mapping network's default depth."""

    synthesis_class = None
    mapping_layers = 8

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None,
                 **synthesis_kwargs):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        # StyleGAN2-ADA pickles nest these as synthesis_kwargs={...}; StyleGAN3's pass them flat.
        synthesis_kwargs = {**dict(synthesis_kwargs.pop("synthesis_kwargs", None) or {}), **synthesis_kwargs}
        self.init_kwargs = jsonable(dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                         img_channels=img_channels, mapping_kwargs=mapping_kwargs, **synthesis_kwargs))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = self.synthesis_class(w_dim=w_dim, img_resolution=img_resolution,
                                              img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        mapping_kwargs.setdefault("num_layers", self.mapping_layers)
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

    def set_bf16(self, enabled=True):
        """Run the num_fp16_res highest-resolution layers in bfloat16 (any device) instead of
        float16-on-CUDA / float32-on-CPU. Returns self."""
        return set_bf16(self, enabled)


def set_bf16(module, enabled=True):
    """Switch every layer of `module` that has a reduced-precision mode to bfloat16 (or back)."""
    for m in module.modules():
        if hasattr(m, "bf16"):
            m.bf16 = bool(enabled)
    return module


def jsonable(obj, max_nodes=None):
    """A JSON-able deep copy: dict subclasses (EasyDict) become dicts, tuples lists, numpy
    scalars and arrays numbers and lists. `max_nodes`: a ValueError past that many objects (for
    data read from a file: an object referred to twice is copied twice, so 20 levels of [x, x]
    would be 2**20 copies)."""
    left = [math.inf if max_nodes is None else max_nodes]

    def copy(o):
        left[0] -= 1
        if left[0] < 0:
            raise ValueError(f"more than {max_nodes} objects")
        if isinstance(o, dict):
            return {str(k): copy(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [copy(v) for v in o]
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return o
    return copy(obj)
