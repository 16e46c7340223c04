"""Losses of StyleGAN2/3 training, one function per phase.

- Non-saturating logistic loss (Goodfellow et al. 2014; StyleGAN2 sec. 2):
  G minimises softplus(-D(G(z))); D minimises softplus(D(G(z))) + softplus(-D(x)).
- R1 (Mescheder et al. 2018), lazy (StyleGAN2 sec. 3.1): every `D_reg_interval` steps,
  gamma/2 * ||grad_x D(x)||^2, multiplied by the interval.
- Path-length regularisation (StyleGAN2 eq. 4), lazy every `G_reg_interval` steps:
  (||J_w^T y||_2 - a)^2 with y ~ N(0, I)/sqrt(H*W) and a the running mean of the lengths.
- Style mixing (StyleGAN 2019 sec. 3.1): a fraction of the images take the ws of a second
  latent from a random layer on; the fraction and the layer are drawn per image, as the paper
  says it (the official code draws one cutoff per round of batch-gpu images: the same on average).
- StyleGAN3-R blur (Karras et al. 2021, appendix "training configurations"): real and fake
  images are blurred with a Gaussian whose sigma fades linearly from 10 px to 0 over the first
  `blur_fade_kimg` (batch * 200 / 32: 200 kimg at batch 32). Deliberately a true Gaussian of
  standard deviation sigma; the official kernel exp2(-t^2 / sigma^2) has std sigma / sqrt(2 ln 2)
  (0.85 sigma), so this blur is a little wider at the same sigma.

Split invariance (exact gradient accumulation and multi-process equality). Every random
number that belongs to an image (z, the second z of style mixing, the mixing cutoff, the
fake's label, the augmentation parameters, the path-length noise y) is drawn once per step for
the whole global batch and then sliced (y from a seed of its own per image), so a sample
gets the same numbers whichever round or process handles it. Each loss is summed over its
slice and divided by the global batch, so summing gradients over rounds and processes gives
the gradient of the global mean. Minibatch standard deviation
in D is the one cross-sample coupling: D groups the samples of its input strided
(sample i with i + N/G, ...); `mbstd_order` reorders each round so that the groups are always
consecutive runs of G samples of the global batch, independent of how it is split (this needs
the group size to divide batch-gpu; config.check_batch enforces it).
Running statistics are updated once per step from the whole step, not per round: G's w_avg
and StyleGAN3's magnitude EMA by one extra no-grad forward of the first `stats_batch` (4)
images of the step's batch (`update_stats`), and the path-length mean from the lengths of all
rounds and ranks (`update_pl_mean`). What stays split-dependent: StyleGAN2's per-pixel noise
inputs, drawn by the network from torch's global generator, which is seeded per round from
(seed, step, phase, first image of the round); the same split (batch-gpu and round layout)
gives the same noise, a different split gives different (equally distributed) noise.

torch.compile (config 'compile'): G main and D main run G's mapping and synthesis and D
compiled (the kernels are custom ops, so each network is one graph); blur, augmentation and the
losses stay eager (sigma and p change every step and would recompile). R1, path length and the
statistics forward run the eager modules: compiled graphs have no double backward.
"""
import collections
import inspect
import math

import torch
import torch.nn.functional as F

from . import augment as aug
from .distributed import to_device


def mbstd_order(n, group, device=None):
    """Permutation `perm` so that D(x[perm]) groups consecutive samples: returns (perm, inverse),
    made on `device` (an index from the CPU would be copied to the GPU, a host sync, each call)."""
    g = min(group, n)
    i = torch.arange(n, device=device)
    pos = (i % g) * (n // g) + i // g  # position of sample i in D's input
    perm = torch.empty_like(pos)
    perm[pos] = i
    return perm, pos


def blur_sigma_at(cur_nimg, blur_sigma, blur_fade_kimg):
    """The blur's sigma after `cur_nimg` real images: `blur_sigma` fading linearly to 0 over the first
    `blur_fade_kimg` (StyleGAN3-R); a fade of 0 is no blur at all, as in the official training."""
    if blur_fade_kimg <= 0:
        return 0
    return max(1 - cur_nimg / (blur_fade_kimg * 1e3), 0) * blur_sigma


def path_length_batch(batch, pl_batch_shrink, world, rounds):
    """Images in the path-length phase: the batch divided by `pl_batch_shrink` (StyleGAN2's
    "lazy" regularisation on a smaller batch), rounded down to a multiple of `world` processes
    times `rounds` per process so that every round gets the same share, and at least one image
    per round."""
    k = world * rounds
    return max(batch // pl_batch_shrink // k * k, k)


def blur(img, sigma):
    """Separable Gaussian blur with zero padding (StyleGAN3's blur of D's inputs)."""
    if sigma <= 0:
        return img
    r = int(math.ceil(sigma * 3))
    t = torch.arange(-r, r + 1, device=img.device, dtype=img.dtype)
    f = torch.exp(-0.5 * (t / sigma) ** 2)
    f = f / f.sum()
    C = img.shape[1]
    img = F.conv2d(img, f.view(1, 1, 1, -1).repeat(C, 1, 1, 1), padding=(0, r), groups=C)
    return F.conv2d(img, f.view(1, 1, -1, 1).repeat(C, 1, 1, 1), padding=(r, 0), groups=C)


Nets = collections.namedtuple("Nets", "mapping synthesis D")


def compile_module(module, mode):
    """`module` under torch.compile (inductor, `mode`), sharing its parameters. Only the main
    phases run compiled: R1 and path length differentiate twice, which compiled graphs cannot."""
    return torch.compile(module, mode=mode)


def _accepts(fn, name):
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class Phases:
    """Runs G and D for the losses of one round (a slice of the global batch)."""

    def __init__(self, G, D, cfg, device):
        self.cfg, self.device = cfg, device
        self.pl_mean = torch.zeros([], device=device)
        self.map_ema = _accepts(G.mapping.forward, "update_emas")
        self.syn_ema = _accepts(G.synthesis.forward, "update_emas")
        # The networks as the main phases run them: eager, or compiled (same parameters).
        self.eager = Nets(G.mapping, G.synthesis, D)
        mode = cfg["compile"]
        self.fast = self.eager if mode == "none" else Nets(*(compile_module(m, mode) for m in self.eager))

    # --- networks -------------------------------------------------------------------------
    def run_G(self, z, c, z2, mix_u, cut_u, update_emas=False, nets=None):
        nets = nets or self.eager
        kw = dict(update_emas=update_emas) if self.map_ema else {}
        ws = nets.mapping(z, c, **kw)
        prob = self.cfg["style_mixing"]
        if prob > 0:
            num_ws = ws.shape[1]
            cutoff = (1 + torch.floor(cut_u * (num_ws - 1))).long().to(ws.device)  # in [1, num_ws)
            cutoff = torch.where(mix_u.to(ws.device) < prob, cutoff, torch.full_like(cutoff, num_ws))
            ws2 = nets.mapping(z2, c, **dict(kw, update_emas=False) if kw else {})
            layer = torch.arange(num_ws, device=ws.device)
            ws = torch.where((layer[None, :] >= cutoff[:, None])[:, :, None], ws2, ws)
        kw = dict(update_emas=update_emas) if self.syn_ema else {}
        img = nets.synthesis(ws, **kw)
        return img, ws

    def run_D(self, img, c, sigma, p, rnd, nets=None):
        img = blur(img, sigma)
        img = aug.augment(img, p, rnd)
        perm, pos = mbstd_order(img.shape[0], self.cfg["mbstd_group"], img.device)
        logits = (nets or self.eager).D(img[perm], c[perm] if c is not None and c.numel() else c)
        return logits[pos]

    # --- phases: each returns (loss to backward, stats dict of detached sums) --------------
    def G_main(self, r, sigma, p):
        img, _ = self.run_G(r["z"], r["c"], r["z2"], r["mix_u"], r["cut_u"], nets=self.fast)
        logits = self.run_D(img, r["c"], sigma, p, r["aug"], nets=self.fast)
        loss = F.softplus(-logits).sum()
        return loss, {"loss_G": loss.detach()}

    def G_pl(self, r, gain, pl_noise):
        img, ws = self.run_G(r["z"], r["c"], r["z2"], r["mix_u"], r["cut_u"])
        H, W = img.shape[2:]
        noise = pl_noise.to(img) / math.sqrt(H * W)
        grads, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        # The penalty uses the running mean a of previous steps; the caller updates a once per
        # step from all rounds and ranks (`update_pl_mean`), so the result does not depend on
        # how the batch is split.
        penalty = (lengths - self.pl_mean).square()
        loss = penalty.sum() * self.cfg["pl_weight"] * gain
        return loss, {"pl_penalty": penalty.detach().sum(), "_pl_len": lengths.detach().sum()}

    def update_pl_mean(self, lengths_sum, count):
        """a <- a + decay (mean length - a), from this rank's sum of `count` lengths (the same count
        on every rank: no count tensor copied to the GPU, a host sync at every path-length step)."""
        from .distributed import all_reduce_sum, world_size
        total = all_reduce_sum(lengths_sum.float().reshape(1).clone())[0]
        self.pl_mean.copy_(self.pl_mean.lerp(total / (count * world_size()), self.cfg["pl_decay"]))

    @torch.no_grad()
    def update_stats(self, r, n):
        """Update G's running statistics (w_avg, StyleGAN3's magnitude EMA) from the first n
        images of the step's global batch, once per step: the same on every rank and for every
        batch split (updating them per round would make the result depend on batch-gpu)."""
        self.run_G(to_device(r["z"][:n], self.device), to_device(r["c"][:n], self.device),
                   to_device(r["z2"][:n], self.device),
                   to_device(r["mix_u"][:n], self.device), to_device(r["cut_u"][:n], self.device),
                   update_emas=True)  # (each through to_device: a pageable copy waits for the GPU)

    def D_main(self, r, real, real_c, sigma, p):
        with torch.no_grad():
            fake, _ = self.run_G(r["z"], r["c"], r["z2"], r["mix_u"], r["cut_u"], nets=self.fast)
        fake_logits = self.run_D(fake, r["c"], sigma, p, r["aug"], nets=self.fast)
        real_logits = self.run_D(real, real_c, sigma, p, r["aug_real"], nets=self.fast)
        loss = F.softplus(fake_logits).sum() + F.softplus(-real_logits).sum()
        return loss, {"loss_D": loss.detach(), "real_sign": real_logits.detach().sign().sum(),
                      "real_score": real_logits.detach().sum(), "fake_score": fake_logits.detach().sum()}

    def D_r1(self, r, real, real_c, sigma, p, gain):
        real = real.detach().requires_grad_(True)
        logits = self.run_D(real, real_c, sigma, p, r["aug_real"])
        grads, = torch.autograd.grad(logits.sum(), real, create_graph=True)
        penalty = grads.square().sum([1, 2, 3])
        loss = penalty.sum() * (self.cfg["gamma"] / 2) * gain
        return loss, {"r1_penalty": penalty.detach().sum()}
