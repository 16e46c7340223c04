"""benchmarks/bench_memory.py: the meta-device run counts what the GPU path saves."""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_memory  # noqa: E402

from sg3lib.networks import build_network  # noqa: E402
from sg3lib.train.config import make_config, network_kwargs  # noqa: E402


def test_saved_masks_match_the_layer_geometry():
    """The filtered_lrelu masks G main keeps are batch x channels x th x ceil(tw / 4) bytes per layer,
    th and tw from each layer's own sizes, padding and filter taps; and the other phases save too."""
    batch = 4
    phases, fixed, (n_g, n_d) = bench_memory.profile("stylegan3-t", 32, batch)
    (g_class, g_kwargs), _ = network_kwargs(make_config(32, cfg="stylegan3-t", precision="fp16"))
    G = build_network(g_class, g_kwargs)
    expected = 0
    for name in G.synthesis.layer_names:
        layer = getattr(G.synthesis, name)
        conv_out = int(layer.in_size[0]) + layer.conv_kernel - 1
        side = conv_out * layer.up_factor + layer.padding[0] + layer.padding[1] - layer.up_taps + 1
        expected += batch * layer.out_channels * side * math.ceil(side / 4)
    masks = sum(n for n, _, dtype in phases["G main"].seen.values() if dtype == torch.uint8)
    assert masks == expected
    assert all(p.total > 0 for p in phases.values())
    assert n_g == sum(p.numel() for p in G.parameters()) and fixed > 16 * n_g
    # reduced precision where StyleGAN marks it: some saved tensors are float16
    assert any(dtype == torch.float16 for _, _, dtype in phases["G main"].seen.values())
