"""Generator and discriminator networks with the official StyleGAN2/3 constructor arguments,
attribute names and state-dict names, so official checkpoints and notebooks work unchanged.

    G = build_network('training.networks_stylegan3.Generator', init_kwargs)
    ws = G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=None)   # [N, G.num_ws, G.w_dim]
    img = G.synthesis(ws, noise_mode='const')                          # [N, C, H, W], about [-1, 1]
    img = G(z, c, truncation_psi=0.7, noise_mode='const')
    logits = D(img, c)                                                 # [N, 1]

Precision: layers of the num_fp16_res highest resolutions run in float16 on CUDA (with
conv_clamp), everything runs in float32 on the CPU; `force_fp32=True` (forward kwarg) turns
float16 off. `net.set_bf16(True)` (or `sg3lib.networks.set_bf16(net, True)`) runs those layers
in bfloat16 instead, on any device.
"""
import re

import torch

from .discriminator import Discriminator
from .layers import FullyConnectedLayer, MappingNetwork
from .stylegan2 import Generator as StyleGAN2Generator
from .stylegan3 import Generator as StyleGAN3Generator
from .layers import set_bf16
from .stylegan3 import layer_schedule

__all__ = ["build_network", "StyleGAN3Generator", "StyleGAN2Generator", "Discriminator",
           "MappingNetwork", "FullyConnectedLayer", "layer_schedule", "set_bf16", "SUPPORTED_CLASSES",
           "unwrapped"]

SUPPORTED_CLASSES = {
    "training.networks_stylegan3.Generator": StyleGAN3Generator,
    "training.networks_stylegan2.Generator": StyleGAN2Generator,
    "training.networks_stylegan2.Discriminator": Discriminator,
}
# StyleGAN2-ADA (PyTorch) pickles name the same networks training.networks.*
ALIASES = {
    "training.networks.Generator": StyleGAN2Generator,
    "training.networks.Discriminator": Discriminator,
}


def build_network(official_class, init_kwargs):
    """Build the sg3lib module for an official class name and its constructor kwargs.

    official_class: 'training.networks_stylegan3.Generator', 'training.networks_stylegan2.Generator'
    or 'training.networks_stylegan2.Discriminator' (short forms such as 'stylegan3.Generator' or
    'networks_stylegan3.Generator' work too). init_kwargs: the official constructor arguments
    (nested dicts such as mapping_kwargs / block_kwargs / epilogue_kwargs included; dict
    subclasses are fine). The StyleGAN3 discriminator is the StyleGAN2 one. StyleGAN2-ADA's
    'training.networks.Generator' / '.Discriminator' (nested synthesis_kwargs) are accepted too.
    """
    name = str(official_class)
    cls = SUPPORTED_CLASSES.get(name) or ALIASES.get(name)
    if cls is None:
        for full, c in SUPPORTED_CLASSES.items():
            if full.endswith("." + name) or full.endswith("." + name.replace("networks_", "")) \
                    or full.replace("networks_", "").endswith("." + name):
                cls = c
                break
    if cls is None:
        raise ValueError(f"unsupported network class {official_class!r}; supported: "
                         + ", ".join(SUPPORTED_CLASSES))
    return cls(**_to_dict(init_kwargs))


def _to_dict(obj):
    if isinstance(obj, dict):
        return {str(k): _to_dict(v) for k, v in obj.items()}
    return obj


def unwrapped(module):
    """The module inside torch.compile's OptimizedModule and DistributedDataParallel, which keep it
    as `_orig_mod` / `module` (their weights are named `_orig_mod.*` / `module.*`, and their class is
    not the network's): what is saved and exported."""
    while True:
        inner = module._modules.get("_orig_mod") if type(module).__name__ == "OptimizedModule" else None
        if inner is None and isinstance(module, torch.nn.parallel.DistributedDataParallel):
            inner = module.module
        if inner is None:
            return module
        module = inner


def plain_state_name(name):
    """A state-dict name without the `_orig_mod.` of a compiled sub-module (G.synthesis =
    torch.compile(G.synthesis) names its weights synthesis._orig_mod.*)."""
    return re.sub(r"(^|\.)_orig_mod\.", r"\1", name)
