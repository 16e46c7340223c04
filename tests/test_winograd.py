"""The Winograd F(4x4, 3x3) CPU fast path must be the same convolution as F.conv2d."""
import pytest
import torch
import torch.nn.functional as F

from sg3lib.networks import StyleGAN3Generator
from sg3lib.ops import winograd
from sg3lib.ops.winograd import conv3x3_winograd, winograd_applicable


@pytest.mark.parametrize("n,c,o,h,w,padding", [(2, 5, 7, 9, 12, 1), (1, 3, 4, 13, 13, 2), (2, 8, 6, 10, 7, 0),
                                               (1, 2, 3, 3, 3, 0), (3, 4, 4, 6, 5, 2),
                                               (1, 3, 2, 5, 17, 1), (2, 3, 4, 14, 3, 0)])
def test_equals_conv2d_in_float64(n, c, o, h, w, padding):
    g = torch.Generator().manual_seed(h * w + c)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    k = torch.randn(o, c, 3, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(conv3x3_winograd(x, k, padding), F.conv2d(x, k, padding=padding), rtol=1e-11, atol=1e-11)


def test_float32_error_is_close_to_direct_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 20, 20, generator=g)
    k = torch.randn(256, 256, 3, 3, generator=g) / (256 * 9) ** 0.5
    exact = F.conv2d(x.double(), k.double(), padding=2)
    err = (conv3x3_winograd(x, k, 2).double() - exact).abs().max() / exact.abs().max()
    assert err < 5e-5


def test_used_only_where_it_is_exact_enough_and_worth_it():
    x, k = torch.randn(1, 256, 8, 8), torch.randn(256, 256, 3, 3)
    with torch.no_grad():
        assert winograd_applicable(x, k)
        assert not winograd_applicable(x, k[:, :, :1, :1])               # 1x1
        assert not winograd_applicable(x, k[:, :, :1, :])                # 1x3
        assert not winograd_applicable(x[:, :128], k[:128, :128])        # fewer channels: direct is as fast
        assert not winograd_applicable(x.half(), k.half())               # reduced precision
        assert not winograd_applicable(x, k, stride=2)
        assert not winograd_applicable(x, torch.randn(512, 128, 3, 3), groups=2)  # grouped, however wide
        assert winograd_applicable(x.clone().requires_grad_(), k.clone().requires_grad_())  # no graph: no grad
    assert not winograd_applicable(x.clone().requires_grad_(), k)        # training keeps torch's conv
    assert not winograd_applicable(x, k.clone().requires_grad_())


def test_wide_generator_gives_the_same_image_with_and_without_it(monkeypatch):
    G = StyleGAN3Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3,
                           channel_base=8192, channel_max=256).eval()
    calls = []
    real = winograd.conv3x3_winograd
    monkeypatch.setattr("sg3lib.ops.conv.conv3x3_winograd", lambda *a: calls.append(1) or real(*a))
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = G(z, None, noise_mode="const")
    assert len(calls) == G.synthesis.num_layers          # every 3x3 layer took the fast path
    direct = G(z, None, noise_mode="const").detach()     # grad enabled: torch's convolution
    assert len(calls) == G.synthesis.num_layers
    torch.testing.assert_close(fast, direct, rtol=0, atol=1e-4)
