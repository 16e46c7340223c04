"""filtered_lrelu: StyleGAN3's alias-free nonlinearity (Karras et al. 2021, sec. 3.2).

    y = down_fd( clamp( lrelu( up_fu(x + b) ) * gain ) )

The pointwise nonlinearity creates high frequencies, so it runs at a temporarily higher sampling
rate (upsample by `up` with low-pass `fu`), and the result is low-pass filtered with `fd` before
returning to the output rate. `padding` applies to the upsampled signal. The upsampling pass
carries gain up**2 so that zero-stuffing keeps the signal's magnitude.
"""
import math

from .bias_act import add_bias
from .upfirdn2d import upfirdn2d_ref

import torch


def filtered_lrelu_ref(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2),
                       slope=0.2, clamp=None, flip_filter=False):
    x = add_bias(x, b)
    x = upfirdn2d_ref(x, fu, up=up, padding=padding, flip_filter=flip_filter, gain=up ** 2)
    x = torch.nn.functional.leaky_relu(x, slope) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d_ref(x, fd, down=down, flip_filter=flip_filter)
