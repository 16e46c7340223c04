"""Tiny generators for the exploration tests (imported by the other test_explore* and widget tests).

make_G builds a real sg3lib StyleGAN3-T (or StyleGAN2) with sg3lib.networks, randomly initialised
and perturbed so that seeds give visibly different images: milliseconds per 16 px image on a CPU.
"""
import torch

from sg3lib.explore import tiny_generator


def make_G(arch="sg3", c_dim=0, resolution=16, seed=0, img_channels=3):
    return tiny_generator(resolution=resolution, seed=seed, c_dim=c_dim, arch=arch, img_channels=img_channels)


def test_make_G_has_the_official_interface():
    G = make_G()
    ws = G.mapping(torch.randn(2, G.z_dim), torch.zeros(2, 0))
    assert ws.shape == (2, G.num_ws, G.w_dim)
    img = G.synthesis(ws, noise_mode="const")
    assert img.shape == (2, 3, 16, 16)
    assert G.synthesis.input.transform.shape == (3, 3)
    assert img.std(dim=0).mean() > 0.05  # seeds differ visibly (the tests rely on it)
