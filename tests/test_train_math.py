"""The training losses against the papers' formulas, computed here by hand (StyleGAN2 sec. 2-3,
ADA sec. 3, StyleGAN3 appendix): R1 with lazy gain, path length with the sqrt(H*W) noise scale,
the non-saturating logistic losses, style mixing's crossover, ADA's speed and EMA's half-life."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sg3lib.networks import build_network
from sg3lib.train import augment as aug
from sg3lib.train import config as C
from sg3lib.train.ema import ema_beta
from sg3lib.train.loop import draw_step, slice_step
from sg3lib.train.loss import Phases, blur


def _phases(**opts):
    """Tiny StyleGAN3-T G and D at 16 px (no noise inputs: every forward is deterministic)."""
    torch.manual_seed(0)
    c = C.make_config(16, **dict(dict(cfg="stylegan3-t", batch=4, cbase=256, cmax=16, z_dim=8, w_dim=8,
                                      precision="fp32", gamma=3.0), **opts))
    (gc, gk), (dc, dk) = C.network_kwargs(c)
    G, D = build_network(gc, gk), build_network(dc, dk)
    r = slice_step(draw_step(c, 0, "Gmain", 4, 8, None, "cpu"), 0, 4, "cpu")
    return Phases(G, D, c, "cpu"), G, D, r


def test_r1_is_gamma_half_squared_gradient_norm_times_the_interval():
    ph, G, D, r = _phases()
    real = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    loss, st = ph.D_r1(r, real, torch.zeros(4, 0), 1.5, 0.5, 16)
    x = real.clone().requires_grad_(True)
    g, = torch.autograd.grad(D(aug.augment(blur(x, 1.5), 0.5, r["aug_real"])).sum(), x)
    torch.testing.assert_close(loss, g.square().sum() * (3.0 / 2) * 16)
    torch.testing.assert_close(st["r1_penalty"], g.square().sum())


def test_path_length_uses_noise_over_sqrt_hw_and_the_running_mean():
    ph, G, D, r = _phases(pl_weight=2.0)
    ph.pl_mean.fill_(0.3)
    y = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    loss, st = ph.G_pl(r, 4, y)
    # By hand: ||J_w^T y|| with y ~ N(0, I) / sqrt(H * W), the squared norm averaged over the ws.
    ws = G.mapping(r["z"], r["c"]).detach().requires_grad_(True)
    jty, = torch.autograd.grad((G.synthesis(ws) * y / 16).sum(), ws)
    lengths = jty.square().sum(2).mean(1).sqrt()
    torch.testing.assert_close(st["_pl_len"], lengths.sum())
    torch.testing.assert_close(loss, (lengths - 0.3).square().sum() * 2.0 * 4)
    ph.update_pl_mean(lengths.sum(), 4)  # a <- a + decay (mean length - a)
    torch.testing.assert_close(ph.pl_mean, torch.tensor(0.3 + 0.01 * (lengths.mean().item() - 0.3)))


def test_non_saturating_logistic_losses():
    ph, G, D, r = _phases()
    real = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fake = G.synthesis(G.mapping(r["z"], r["c"]))
        d_fake = D(aug.augment(fake, 0.4, r["aug"]))
        d_real = D(aug.augment(real, 0.4, r["aug_real"]))
        g_loss, _ = ph.G_main(r, 0.0, 0.4)
        d_loss, st = ph.D_main(r, real, torch.zeros(4, 0), 0.0, 0.4)
    torch.testing.assert_close(g_loss, F.softplus(-d_fake).sum())
    torch.testing.assert_close(d_loss, F.softplus(d_fake).sum() + F.softplus(-d_real).sum())
    assert st["real_sign"] == d_real.sign().sum()
    torch.testing.assert_close(st["real_score"], d_real.sum())
    torch.testing.assert_close(st["fake_score"], d_fake.sum())


def test_d_returns_each_images_logit_in_the_order_given():
    """With minibatch-stddev groups of 2, D sees the batch reordered (its groups are consecutive
    images); each logit comes back to its own image: a batch's logits are those of its halves."""
    ph, G, D, r = _phases(mbstd_group=2)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    c = torch.zeros(4, 0)
    with torch.no_grad():
        whole = ph.run_D(x, c, 0.0, 0.0, r["aug"])
        halves = torch.cat([ph.run_D(x[:2], c[:2], 0.0, 0.0, r["aug"]), ph.run_D(x[2:], c[2:], 0.0, 0.0, r["aug"])])
    assert not torch.allclose(halves[1], halves[2])  # a swap would show
    torch.testing.assert_close(whole, halves)


def test_only_the_first_latent_moves_w_avg_under_style_mixing():
    """w_avg is the mean of the mapping of z; the second latent of style mixing leaves it alone."""
    ph, G, D, r = _phases(style_mixing=1.0)
    alone, before = copy.deepcopy(G.mapping), G.mapping.w_avg.clone()
    with torch.no_grad():
        ph.run_G(r["z"], r["c"], r["z2"], torch.zeros(4), torch.full([4], 0.5), update_emas=True)
        alone(r["z"], r["c"], update_emas=True)
    assert not torch.equal(G.mapping.w_avg, before)  # it moved
    torch.testing.assert_close(G.mapping.w_avg, alone.w_avg)


def test_style_mixing_takes_the_second_ws_from_a_random_layer_on():
    ph, G, D, r = _phases(style_mixing=0.5)
    r["mix_u"] = torch.tensor([0.1, 0.9, 0.2, 0.7])  # images 0 and 2 mix
    r["cut_u"] = torch.tensor([0.0, 0.5, 0.999, 0.5])
    _, ws = ph.run_G(r["z"], r["c"], r["z2"], r["mix_u"], r["cut_u"])
    w1, w2 = G.mapping(r["z"], r["c"]), G.mapping(r["z2"], r["c"])
    n = ws.shape[1]
    for i, cut in ((0, 1), (1, n), (2, n - 1), (3, n)):  # cutoff 1 + floor(u (num_ws - 1)), in [1, num_ws)
        torch.testing.assert_close(ws[i, :cut], w1[i, :cut])
        torch.testing.assert_close(ws[i, cut:], w2[i, cut:])


def test_ada_goes_from_0_to_1_in_ada_kimg_and_ema_halves_in_ema_kimg():
    ada = aug.AdaController(0.0, 0.6, 4, 500)
    step = 0
    while ada.p < 1:
        ada.accumulate(32.0, 32)  # r_t = 1, above the target
        ada.update(step, 32)
        step += 1
    assert step * 32 == pytest.approx(500_000, abs=4 * 32)  # one adjustment: 4 steps of 32
    beta = ema_beta(10 ** 9, 32, 10, 0.05)
    assert 32 * math.log(0.5) / math.log(beta) == pytest.approx(10_000)  # half-life ema_kimg
    assert ema_beta(20_000, 32, 10, 0.05) == pytest.approx(0.5 ** (32 / 1000))  # ramp-up: 0.05 * seen


def test_blur_is_a_gaussian_of_sigma_cut_at_3_sigma_with_zero_padding():
    """StyleGAN3-R's blur of D's inputs, summed by hand: each pixel the Gaussian-weighted mean of its
    neighbours within ceil(3 sigma), weights exp(-d^2 / 2 sigma^2) normalised, outside the image 0."""
    sigma = 1.3
    x = torch.randn(2, 3, 7, 11, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    r = math.ceil(3 * sigma)
    w = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-r, r + 1)]
    w = [v / sum(w) for v in w]
    H, W = x.shape[2:]
    padded = F.pad(x, [r, r, r, r])  # zeros outside the image
    want = sum(w[dy + r] * w[dx + r] * padded[:, :, r + dy:r + dy + H, r + dx:r + dx + W]
               for dy in range(-r, r + 1) for dx in range(-r, r + 1))
    torch.testing.assert_close(blur(x, sigma), want)


def test_without_style_mixing_the_mapping_runs_once():
    """style_mixing 0 (a transfer, or a config without mixing): no second latent through the mapping."""
    ph, G, D, r = _phases(style_mixing=0.0)
    calls = []
    G.mapping.register_forward_hook(lambda *a: calls.append(1))
    _, ws = ph.run_G(r["z"], r["c"], r["z2"], torch.zeros(4), torch.full([4], 0.5))
    assert len(calls) == 1
    torch.testing.assert_close(ws, G.mapping(r["z"], r["c"]))


def test_a_conditional_d_sees_each_image_with_its_own_label():
    """D's input is reordered for its minibatch-stddev groups; the labels go with their images."""
    ph, G, D, r = _phases(mbstd_group=2, c_dim=3)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    c = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        whole = ph.run_D(x, c, 0.0, 0.0, r["aug"])
        halves = torch.cat([ph.run_D(x[:2], c[:2], 0.0, 0.0, r["aug"]), ph.run_D(x[2:], c[2:], 0.0, 0.0, r["aug"])])
        relabelled = ph.run_D(x, c[[1, 0, 0, 2]], 0.0, 0.0, r["aug"])
    torch.testing.assert_close(whole, halves)
    assert not torch.allclose(whole, relabelled)  # the label matters to this D


def test_update_stats_runs_the_first_n_images_with_their_mixing_and_moves_the_averages():
    """Once per step, G's running statistics (w_avg, StyleGAN3's input magnitude EMAs) move by the
    first n images as G_main makes them: z through the mapping, the second latent from the cutoff on."""
    ph, G, D, r = _phases(style_mixing=1.0)
    r["cut_u"] = torch.tensor([0.0, 0.5, 0.999, 0.5])
    by_hand = copy.deepcopy(G)
    before = {name: b.clone() for name, b in G.named_buffers()}
    ph.update_stats(r, 2)
    with torch.no_grad():
        ws = by_hand.mapping(r["z"][:2], r["c"][:2], update_emas=True)
        ws2 = by_hand.mapping(r["z2"][:2], r["c"][:2])
        n = ws.shape[1]
        for i, cut in ((0, 1), (1, 1 + math.floor(0.5 * (n - 1)))):
            ws[i, cut:] = ws2[i, cut:]
        by_hand.synthesis(ws, update_emas=True)
    moved = [name for name, b in G.named_buffers() if not torch.equal(b, before[name])]
    assert "mapping.w_avg" in moved and any(name.startswith("synthesis.") for name in moved), moved
    for (name, b), want in zip(G.named_buffers(), by_hand.buffers()):
        # compared by how far each moved: an EMA of decay 0.999 moves by ~1e-4 a step
        torch.testing.assert_close(b - before[name], want - before[name], rtol=1e-3, atol=1e-10, msg=name)


def test_d_scores_each_image_with_its_consecutive_group_and_returns_them_in_input_order():
    """run_D reorders the batch so that D's strided minibatch-std groups are consecutive runs of the
    global batch, then puts the scores back: with 6 images in groups of 2 (a reordering that is not
    its own inverse) image i's score is D's score of it beside its pair alone."""
    ph, G, D, _ = _phases(batch=6, mbstd_group=2)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = ph.run_D(x, torch.zeros(6, 0), 0, 0, None)
        want = torch.cat([D(x[k:k + 2]) for k in range(0, 6, 2)])
    torch.testing.assert_close(got, want)


def test_path_length_mean_averages_the_lengths_of_every_rank(monkeypatch):
    """Two ranks of 4 lengths each: the summed lengths over 8, not over one rank's 4."""
    from sg3lib.train import distributed
    ph, G, D, r = _phases(pl_weight=2.0)
    ph.pl_mean.fill_(0.3)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda t: t + torch.tensor([5.0]))  # the other rank: 5
    ph.update_pl_mean(torch.tensor(3.0), 4)
    torch.testing.assert_close(ph.pl_mean, torch.tensor(0.3 + 0.01 * ((3.0 + 5.0) / 8 - 0.3)))
