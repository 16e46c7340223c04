"""ResNet discriminator (StyleGAN2 fig. 7c) with minibatch standard deviation (Karras et al. 2018),
conditioned by projection onto an embedding of c (Miyato & Koyama 2018) as in StyleGAN2-ADA.
Also the discriminator StyleGAN3 trains with. The other architectures of StyleGAN2 fig. 7 load too:
'orig' (plain conv stack; StyleGAN2-ADA's CIFAR-10 config) and 'skip' (the image, downsampled,
enters every resolution through its own fromRGB)."""
import math

import torch
from torch import nn

from .. import ops
from ..filters import setup_filter
from .layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork, compute_dtype, jsonable, set_bf16


ARCHITECTURES = ("orig", "skip", "resnet")


def _check_architecture(architecture):
    if architecture not in ARCHITECTURES:
        raise ValueError(f"discriminator architecture must be one of {ARCHITECTURES}, got {architecture!r}")


def downsample2d(x, f, down=2):
    """Downsample by `down` with FIR filter f (blur, then keep every down-th sample)."""
    fw = f.shape[-1]
    p0, p1 = (fw - down + 1) // 2, (fw - down) // 2
    return ops.upfirdn2d(x, f, down=down, padding=[p0, p1, p0, p1])


class DiscriminatorBlock(nn.Module):
    """(fromRGB) -> conv0 -> downsampling conv1. 'resnet': plus a downsampling 1x1 skip, both
    branches scaled by sqrt(1/2) so the sum keeps unit variance; fromRGB at the top resolution
    only ('orig' too). 'skip': a fromRGB at every resolution, added to the features, and the
    image downsampled for the next block."""

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 architecture="resnet", activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None,
                 use_fp16=False, fp16_channels_last=False, freeze_layers=0):
        super().__init__()
        _check_architecture(architecture)
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.first_layer_idx, self.architecture = first_layer_idx, architecture
        self.use_fp16, self.bf16 = use_fp16, False
        self.channels_last = use_fp16 and fp16_channels_last  # unused here; an exported block's official forward reads it
        # as its layers and G's blocks store it: 8 or more taps stay 1-D (separable), as official states hold them
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_layers = 0

        def trainable():  # layers below freeze_layers are stored as buffers (frozen for fine-tuning)
            t = first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return t

        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=trainable(), conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=trainable(), conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=trainable(), resample_filter=resample_filter, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=trainable(), resample_filter=resample_filter)

    def forward(self, x, img, force_fp32=False):
        dtype = compute_dtype(self.use_fp16, x if x is not None else img, force_fp32, self.bf16)
        x = None if x is None else x.to(dtype)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype)
            y = self.fromrgb(img)
            x = y if x is None else x + y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture != "resnet":
            return self.conv1(self.conv0(x)), img
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x, img


class MinibatchStdLayer(nn.Module):
    """Appends the std of each feature over groups of group_size samples, averaged over features and
    pixels, as num_channels extra feature maps. Sample i belongs to group i % (N / G)."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        if n == 0:  # no samples, no groups
            return torch.cat([x, x.new_zeros([0, self.num_channels, h, w])], dim=1)
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g:
            raise ValueError(f"batch size {n} must be divisible by the minibatch-std group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w).float()
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n/G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4: ('skip': fromRGB of the 4x4 image added), minibatch std, conv, dense, output (a logit,
    or a cmap_dim projection onto the label embedding)."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet", mbstd_group_size=4,
                 mbstd_num_channels=1, activation="lrelu", conv_clamp=None):
        super().__init__()
        _check_architecture(architecture)
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.architecture = architecture
        if mbstd_num_channels > 0 and in_channels % mbstd_num_channels:
            raise ValueError(f"mbstd_num_channels={mbstd_num_channels} must divide the {in_channels} "
                             "channels of the discriminator's 4x4 features")
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        x = x.float()
        if self.architecture == "skip":
            x = x + self.fromrgb(img.float())
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim > 0:  # projection discriminator: <out, embed(c)> / sqrt(dim)
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """D(img, c) -> logits [N, 1], official constructor (training.networks_stylegan2.Discriminator)."""

    official_class = "training.networks_stylegan2.Discriminator"

    def __init__(self, c_dim, img_resolution, img_channels, architecture="resnet", channel_base=32768,
                 channel_max=512, num_fp16_res=4, conv_clamp=256, cmap_dim=None, block_kwargs=None,
                 mapping_kwargs=None, epilogue_kwargs=None):
        super().__init__()
        block_kwargs, mapping_kwargs, epilogue_kwargs = (dict(k or {}) for k in (block_kwargs, mapping_kwargs,
                                                                                 epilogue_kwargs))
        self.init_kwargs = jsonable(dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                                       architecture=architecture, channel_base=channel_base, channel_max=channel_max,
                                       num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                                       block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs,
                                       epilogue_kwargs=epilogue_kwargs))
        log2 = int(math.log2(img_resolution))
        if img_resolution != 2 ** log2 or img_resolution < 8:
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        cmap_dim = (channels[4] if cmap_dim is None else cmap_dim) if c_dim else 0
        self.cmap_dim = cmap_dim
        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res], channels[res // 2],
                                       resolution=res, first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution),
                                       **block_kwargs, **common)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def forward(self, img, c=None, update_emas=False, force_fp32=False):
        if img.ndim != 4 or tuple(img.shape[1:]) != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(f"img must have shape [N, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}], got {list(img.shape)}")
        if self.c_dim and c is not None and c.ndim >= 1 and len(c) != len(img):
            # (one row would broadcast to every image: a label given for the wrong batch scores silently)
            raise ValueError(f"c has {len(c)} rows but img has {len(img)}: give one label per image")
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.c_dim else None
        return self.b4(x, img, cmap)

    def set_bf16(self, enabled=True):
        """Run the num_fp16_res highest-resolution blocks in bfloat16 (any device). Returns self."""
        return set_bf16(self, enabled)
