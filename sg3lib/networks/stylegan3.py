"""StyleGAN3 generator (Karras et al. 2021, "Alias-Free Generative Adversarial Networks").

Configs T (3x3 convolutions, separable filters) and R (1x1 convolutions, radial down filters).
The synthesis network treats every feature map as a band-limited continuous signal: it starts
from Fourier features (sec. 3.1), and each layer is modulated conv -> upsample -> leaky ReLU ->
downsample (filtered_lrelu, sec. 3.2) with low-pass filters that follow the layer schedule of
appendix F (cutoffs grow geometrically; the last layers are critically sampled).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..filters import design_lowpass_filter
from ..ops.conv import modulated_conv2d
from .layers import FullyConnectedLayer, GeneratorBase, compute_dtype


def layer_schedule(img_resolution, img_channels, channel_base=32768, channel_max=512, num_layers=14,
                   num_critical=2, first_cutoff=2, first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3,
                   margin_size=10, num_fp16_res=4):
    """Per-layer cutoff f_c, stopband f_t, sampling rate s, half-width f_h, size and channels.

    Appendix F: f_c and f_t grow geometrically from the first layer to layer N - num_critical and
    stay at the output's Nyquist (f_c = res/2) after it; s is the smallest power of two >= 2 f_t
    (capped at res), f_h = max(f_t, s/2) - f_c, each map carries a margin of margin_size pixels
    (none on the last two layers) and channels are inversely proportional to f_c.
    Returns a dict of numpy arrays with num_layers + 1 entries (the last is ToRGB).
    """
    if num_layers <= num_critical:  # else the exponents divide by zero (a NaN size deep in __init__)
        raise ValueError(f"num_layers={num_layers}: a StyleGAN3 needs more synthesis layers than its "
                         f"num_critical={num_critical} critically sampled ones (the official default is 14)")
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    use_fp16 = sampling_rates * (2 ** num_fp16_res) > img_resolution
    critical = np.arange(num_layers + 1) >= num_layers - num_critical
    return dict(cutoffs=cutoffs, stopbands=stopbands, sampling_rates=sampling_rates,
                half_widths=half_widths, sizes=sizes, channels=channels, use_fp16=use_fp16,
                is_critically_sampled=critical)


class SynthesisInput(nn.Module):
    """Fourier features (sec. 3.1): sinusoids with random frequencies inside a disc of radius
    `bandwidth`, translated and rotated per sample by an affine map of w, and by the user's
    `transform` (3x3, maps output coordinates to input coordinates; identity by default)."""

    def __init__(self, w_dim, channels, size, sampling_rate, bandwidth):
        super().__init__()
        self.w_dim, self.channels = w_dim, channels
        self.size = [int(s) for s in np.broadcast_to(np.asarray(size), [2])]
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        # (floats, not numpy scalars: torch.compile would make those float64 graph inputs)
        # Frequencies: random directions, radii drawn so that their density falls off smoothly.
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        # Starts as the identity rotation (cos 1, sin 0) and no translation.
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w):
        n = w.shape[0]
        t = self.affine(w)  # [N, 4] = (cos, sin, tx, ty) up to scale
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rot = torch.eye(3, device=w.device).repeat(n, 1, 1)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        tra = torch.eye(3, device=w.device).repeat(n, 1, 1)
        tra[:, 0, 2], tra[:, 1, 2] = -t[:, 2], -t[:, 3]
        m = rot @ tra @ self.transform.unsqueeze(0)  # [N, 3, 3]
        # Transforming coordinates by m: sin(2 pi (f . (A p + b) + phi)) = sin(2 pi ((A^T f) . p + f . b + phi)).
        freqs = self.freqs.unsqueeze(0)  # [1, C, 2]
        phases = self.phases.unsqueeze(0) + (freqs @ m[:, :2, 2:]).squeeze(2)
        freqs = freqs @ m[:, :2, :2]
        # Fade out frequencies that the transform pushed towards Nyquist (no aliasing).
        amps = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # Sample positions: pixel centres of a size[0] x size[1] grid, spaced 1/sampling_rate.
        width, height = self.size  # Python ints (shapes stay static under torch.compile)
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * width / self.sampling_rate
        theta[1, 1] = 0.5 * height / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, height, width], align_corners=False)
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N, H, W, C]
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (2 * math.pi))
        x = x * amps.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / math.sqrt(self.channels)).t()  # trainable channel mix
        return x.permute(0, 3, 1, 2)

    def extra_repr(self):
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={list(self.size)}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


class SynthesisLayer(nn.Module):
    """Modulated conv, then filtered leaky ReLU at a temporarily doubled rate (sec. 3.2).

    The input is normalised by a running estimate of its magnitude (magnitude_ema) instead of
    per-sample normalisation. ToRGB (is_torgb) is a 1x1 modulated conv without demodulation."""

    def __init__(self, w_dim, is_torgb, is_critically_sampled, use_fp16, in_channels, out_channels,
                 in_size, out_size, in_sampling_rate, out_sampling_rate, in_cutoff, out_cutoff,
                 in_half_width, out_half_width, conv_kernel=3, filter_size=6, lrelu_upsampling=2,
                 use_radial_filters=False, conv_clamp=256, magnitude_ema_beta=0.999):
        super().__init__()
        self.w_dim, self.is_torgb = w_dim, is_torgb
        self.is_critically_sampled, self.use_fp16 = is_critically_sampled, use_fp16
        self.bf16 = False
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate, self.out_sampling_rate = in_sampling_rate, out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff, self.out_cutoff = in_cutoff, out_cutoff
        self.in_half_width, self.out_half_width = in_half_width, out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp, self.magnitude_ema_beta = conv_clamp, magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        # Filters (appendix C): upsample with cutoff f_c,in; downsample with f_c,out.
        self.up_factor = int(round(self.tmp_sampling_rate / in_sampling_rate))
        assert in_sampling_rate * self.up_factor == self.tmp_sampling_rate
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(
            self.up_taps, in_cutoff, in_half_width * 2, self.tmp_sampling_rate))
        self.down_factor = int(round(self.tmp_sampling_rate / out_sampling_rate))
        assert out_sampling_rate * self.down_factor == self.tmp_sampling_rate
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("down_filter", design_lowpass_filter(
            self.down_taps, out_cutoff, out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial))

        # Padding of the upsampled signal so that the output has exactly out_size samples.
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    def forward(self, x, w, noise_mode="random", force_fp32=False, update_emas=False):
        del noise_mode  # StyleGAN3 has no noise inputs; accepted for API compatibility
        styles = self.affine(w)
        if update_emas and x.shape[0] > 0:  # an empty batch has no magnitude (its mean is NaN)
            with torch.autograd.no_grad():
                cur = x.detach().float().square().mean()
                self.magnitude_ema.copy_(cur.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel ** 2))
        dtype = compute_dtype(self.use_fp16, x, force_fp32, self.bf16)
        x = modulated_conv2d(x.to(dtype), self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=self.magnitude_ema.rsqrt())
        gain, slope = (1, 1) if self.is_torgb else (math.sqrt(2), 0.2)
        # The filters stay float32 whatever x's dtype, as the official network hands them to its
        # kernel (whose taps are float32): rounded to bfloat16 they cost 4x the image error.
        x = ops.filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(x.dtype),
                               up=self.up_factor, down=self.down_factor, padding=self.padding, gain=gain,
                               slope=slope, clamp=self.conv_clamp)
        return x

    def extra_repr(self):
        return (f"w_dim={self.w_dim}, is_torgb={self.is_torgb}, is_critically_sampled={self.is_critically_sampled}, "
                f"use_fp16={self.use_fp16}, in={self.in_channels}x{list(self.in_size)}@{self.in_sampling_rate:g}, "
                f"out={self.out_channels}x{list(self.out_size)}@{self.out_sampling_rate:g}, "
                f"cutoff={self.in_cutoff:g}->{self.out_cutoff:g}, up={self.up_factor}, down={self.down_factor}")


class SynthesisNetwork(nn.Module):
    """w [N, num_ws, w_dim] -> image [N, img_channels, res, res]. num_ws = num_layers + 2:
    ws[:, 0] drives the Fourier input, ws[:, 1 + i] drives layer i (the last one is ToRGB)."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512,
                 num_layers=14, num_critical=2, first_cutoff=2, first_stopband=2 ** 2.1,
                 last_stopband_rel=2 ** 0.3, margin_size=10, output_scale=0.25, num_fp16_res=4,
                 **layer_kwargs):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = num_layers + 2
        self.num_layers, self.num_critical = num_layers, num_critical
        self.margin_size, self.output_scale, self.num_fp16_res = margin_size, output_scale, num_fp16_res
        s = layer_schedule(img_resolution, img_channels, channel_base, channel_max, num_layers, num_critical,
                           first_cutoff, first_stopband, last_stopband_rel, margin_size, num_fp16_res)
        self.schedule = s
        self.input = SynthesisInput(w_dim, int(s["channels"][0]), int(s["sizes"][0]),
                                    s["sampling_rates"][0], s["cutoffs"][0])
        self.layer_names = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim, is_torgb=(idx == num_layers),
                is_critically_sampled=bool(s["is_critically_sampled"][idx]), use_fp16=bool(s["use_fp16"][idx]),
                in_channels=int(s["channels"][prev]), out_channels=int(s["channels"][idx]),
                in_size=int(s["sizes"][prev]), out_size=int(s["sizes"][idx]),
                in_sampling_rate=int(s["sampling_rates"][prev]), out_sampling_rate=int(s["sampling_rates"][idx]),
                in_cutoff=s["cutoffs"][prev], out_cutoff=s["cutoffs"][idx],
                in_half_width=s["half_widths"][prev], out_half_width=s["half_widths"][idx], **layer_kwargs)
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws, noise_mode="random", force_fp32=False, update_emas=False):
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.float().unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, noise_mode=noise_mode, force_fp32=force_fp32, update_emas=update_emas)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.float()

    def extra_repr(self):
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"


class Generator(GeneratorBase):
    """StyleGAN3 generator: G(z, c) = synthesis(mapping(z, c)). Constructor arguments as the
    official training.networks_stylegan3.Generator (mapping_kwargs, then synthesis/layer kwargs
    such as channel_base, conv_kernel=1 and use_radial_filters=True for config R)."""

    official_class = "training.networks_stylegan3.Generator"
    synthesis_class = SynthesisNetwork
    mapping_layers = 2
