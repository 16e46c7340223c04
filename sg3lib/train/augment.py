"""ADA: adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with limited data").

Every image shown to D (real or fake) passes through the same random, differentiable pipeline;
each transform is applied with probability p, so a fraction of about (1 - p)^k of the images
(k transforms) reach D as they are. Real and fake images are augmented alike, so the augmentations
do not leak into the generated images as long as p stays below ~0.8 (paper sec. 2). p is tuned during training towards a target of the overfitting heuristic
r_t = E[sign(D(real))] (paper eq. 1 and sec. 3): see `AdaController`.

The pipeline here is 'bgc' of the paper (its recommended one):
  pixel blitting: x-flip, 90-degree rotations, integer translation;
  geometric: isotropic scale, pre-rotation, anisotropic scale, post-rotation, fractional
             translation (rotations use p_rot = 1 - sqrt(1 - p) so that some rotation
             happens with probability p);
  colour: brightness, contrast, luma flip, hue rotation, saturation (on RGB; an L image gets
          those of its (l, l, l) RGB image averaged back, so luma flip inverts it; channels
          past the colour ones, such as alpha, only move with the geometry).
All geometric steps are composed into one affine matrix per image. An image whose matrix only
moves whole pixels (flips, quarter turns, integer translations: the paper's pixel blitting, or
no geometric step at all) is copied exactly. Any other is resampled as the paper does to keep
aliasing out: 2x upsampling with the Symlet-6 wavelet's low-pass filter, bilinear resampling at
the doubled resolution, 2x downsampling with the same filter. The image is first reflect-padded
as far as the batch's transforms read (at most its size - 1 a side, as the paper), so the borders
mirror the image itself and the orthonormal filter makes downsampling undo upsampling exactly,
up to the borders (the padding costs memory: about 0.3-0.4 of the size a side). Every step
is linear in the image with constant weights (gather, convolutions), so it is differentiable
twice: lazy R1 takes the gradient of D(augment(real)) with respect to the real image.

Randomness: `draw(n, generator)` makes every random number one image needs, for a whole
global batch at once; `augment(x, p, rnd)` takes a row slice of it. The result is therefore
the same however the batch is split into rounds or processes.
"""
import math

import torch
import torch.nn.functional as F

from .distributed import to_device

_U_KEYS = ("xflip", "xflip_bit", "rot90", "rot90_k", "itrans", "itx", "ity", "iso", "prerot",
           "prerot_a", "aniso", "postrot", "postrot_a", "ftrans", "bright", "contrast", "lumaflip",
           "lumaflip_bit", "hue", "hue_a", "sat")
_N_KEYS = ("iso_s", "aniso_s", "ftx", "fty", "bright_b", "contrast_c", "sat_s")


def draw(n, generator=None):
    """All random numbers for `n` images: dict of float32 CPU tensors of shape [n]."""
    u = torch.rand([n, len(_U_KEYS)], generator=generator)
    g = torch.randn([n, len(_N_KEYS)], generator=generator)
    out = {k: u[:, i] for i, k in enumerate(_U_KEYS)}
    out.update({k: g[:, i] for i, k in enumerate(_N_KEYS)})
    return out


def slice_rnd(rnd, start, stop):
    return {k: v[start:stop] for k, v in rnd.items()}


def _mat(rows, n):
    """Stack per-image 3x3 matrices from nested lists of [n] tensors or scalars."""
    return torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float32).expand(n)
                                     for v in r], -1) for r in rows], -2)


def _rotation(a):
    c, s, z, o = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return _mat([[c, -s, z], [s, c, z], [z, z, o]], a.numel())


def _scale(sx, sy):
    z, o = torch.zeros_like(sx), torch.ones_like(sx)
    return _mat([[sx, z, z], [z, sy, z], [z, z, o]], sx.numel())


def _translate(tx, ty):
    z, o = torch.zeros_like(tx), torch.ones_like(tx)
    return _mat([[o, z, tx], [z, o, ty], [z, z, o]], tx.numel())


def geometric_matrix(rnd, p, size):
    """Per-image 3x3 matrix mapping output pixel coordinates (centred) to input coordinates."""
    n = rnd["xflip"].numel()
    on = lambda key, prob=p: (rnd[key] < prob).float()  # noqa: E731  (gate of one transform)
    p_rot = 1 - math.sqrt(max(1 - p, 0.0))
    M = torch.eye(3).expand(n, 3, 3)
    flip = 1 - 2 * on("xflip") * (rnd["xflip_bit"] < 0.5).float()
    M = M @ _scale(flip, torch.ones(n))
    M = M @ _rotation(on("rot90") * torch.floor(rnd["rot90_k"] * 4) * (math.pi / 2))
    t = on("itrans")
    M = M @ _translate(torch.round((rnd["itx"] * 0.25 - 0.125) * size) * t,
                       torch.round((rnd["ity"] * 0.25 - 0.125) * size) * t)
    s = torch.exp2(rnd["iso_s"] * 0.2 * on("iso"))
    M = M @ _scale(s, s)
    M = M @ _rotation((rnd["prerot_a"] * 2 - 1) * math.pi * on("prerot", p_rot))
    s = torch.exp2(rnd["aniso_s"] * 0.2 * on("aniso"))
    M = M @ _scale(s, 1 / s)
    M = M @ _rotation((rnd["postrot_a"] * 2 - 1) * math.pi * on("postrot", p_rot))
    t = on("ftrans")
    M = M @ _translate(rnd["ftx"] * 0.125 * size * t, rnd["fty"] * 0.125 * size * t)
    return M


def _reflect(i, n):
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i > n - 1, period - i, i)


def resample(x, M, size=None, whole=False):
    """Bilinear resampling of x [N,C,H,W] at M @ (output pixel), reflect padding. The output grid
    (`size` (h, w), default x's) has x's centre. `whole`: every position is a pixel centre (pixel
    blitting), so it is rounded onto it and the copy is exact. Twice differentiable."""
    N, C, H, W = x.shape
    Ho, Wo = size or (H, W)
    dev = x.device
    ys, xs = torch.meshgrid(torch.arange(Ho, device=dev, dtype=torch.float32),
                            torch.arange(Wo, device=dev, dtype=torch.float32), indexing="ij")
    pts = torch.stack([xs.flatten() - (Wo - 1) / 2, ys.flatten() - (Ho - 1) / 2, torch.ones(Ho * Wo, device=dev)])
    src = to_device(M, dev) @ pts  # [N, 3, HoWo]
    sx, sy = src[:, 0] + (W - 1) / 2, src[:, 1] + (H - 1) / 2
    if whole:  # cos(pi/2) is -4e-8 in float32: off the centre by a hair, which bilinear would blend
        sx, sy = sx.round(), sy.round()
    x0, y0 = torch.floor(sx), torch.floor(sy)
    wx, wy = (sx - x0).unsqueeze(1).to(x.dtype), (sy - y0).unsqueeze(1).to(x.dtype)
    flat = x.reshape(N, C, H * W)

    def tap(iy, ix):
        idx = (_reflect(iy, H) * W + _reflect(ix, W)).long().unsqueeze(1).expand(N, C, Ho * Wo)
        return flat.gather(2, idx)

    out = (tap(y0, x0) * (1 - wx) * (1 - wy) + tap(y0, x0 + 1) * wx * (1 - wy)
           + tap(y0 + 1, x0) * (1 - wx) * wy + tap(y0 + 1, x0 + 1) * wx * wy)
    return out.reshape(N, C, Ho, Wo)


# Symlet-6 low-pass decomposition filter (Daubechies' least-asymmetric wavelet with 6 vanishing
# moments; the values of the standard tables): sum sqrt(2), orthonormal under even shifts.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)
_TAPS = len(SYM6)
_SHIFT = _TAPS // 2 - 1  # fine sample 2i + 1/2 (between 2i and 2i+1) is the filter's centre: coarse pixel i
# ...were Symlet-6 symmetric. It is not: its centre of mass (where _up2 puts a smooth signal's coarse pixel
# i, and where _down2 reads it back from) is 0.402 fine samples before 2i + 1/2. A shift cancels that on
# the way down; a flip or rotation in between turns it instead, by (I - L) times it.
_DELAY = sum(k * v for k, v in enumerate(SYM6)) / sum(SYM6) - (_SHIFT + 0.5)  # in fine samples: -0.402


def _reflect_pad(x, left, right, top=0, bottom=0):
    """F.pad(x, (left, right, top, bottom), mode='reflect') as index gathers, the same values: the
    CUDA backward of reflect padding has no deterministic kernel, so with --deterministic on a GPU
    training failed at the first augmented step (index_select's backward is deterministic there)."""
    H, W = x.shape[-2:]
    if left or right:
        x = x.index_select(-1, _reflect(torch.arange(-left, W + right, device=x.device), W))
    if top or bottom:
        x = x.index_select(-2, _reflect(torch.arange(-top, H + bottom, device=x.device), H))
    return x


def _along_last(x, fn):
    """Apply a 1-D op on the last axis of x [N,C,H,W] to rows, then (transposed) to columns."""
    x = fn(x)
    return fn(x.transpose(2, 3)).transpose(2, 3)


def _up2(x, h):
    """2x upsampling along the last axis: y[j] = sqrt(2) * sum_i x[i] h[j - 2i + SHIFT]."""
    N, C, H, W = x.shape
    pad = (_TAPS - _SHIFT) // 2  # coarse pixels each side that the first/last fine samples reach
    xp = _reflect_pad(x.reshape(N * C, H, W), pad, pad).reshape(N * C * H, 1, W + 2 * pad)
    u = F.conv_transpose1d(xp, (h * math.sqrt(2)).view(1, 1, -1), stride=2)  # u[m] = sum x[i] w[m - 2i]
    start = _SHIFT + 2 * pad
    return u[..., start:start + 2 * W].reshape(N, C, H, 2 * W)


def _down2(y, h):
    """2x downsampling along the last axis, the adjoint of _up2: x[i] = sum_j y[j] h[j - 2i + SHIFT] / sqrt(2)."""
    N, C, H, W = y.shape
    yp = _reflect_pad(y.reshape(N * C, H, W), _SHIFT, _TAPS - 2 - _SHIFT)
    out = F.conv1d(yp.reshape(N * C * H, 1, -1), (h / math.sqrt(2)).view(1, 1, -1), stride=2)
    return out.reshape(N, C, H, W // 2)


_REACH = 3  # pixels the filters reach past a sample: _down2 reads 5-6 fine samples a side, _up2's come from 3


def _margin(M, H, W):
    """Reflect padding (x, y) in pixels so that the resampling of the output and its filters'
    reach reads inside the padded image: how far M takes the output's corners past the image,
    plus the filters and the bilinear taps; at most the image size - 1 (torch's reflect limit,
    past which resample() reflects the upsampled image)."""
    cx, cy = (W - 1) / 2 + _REACH, (H - 1) / 2 + _REACH  # the output grid with _down2's reach
    corners = torch.tensor([[-cx, -cy, 1.0], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]]).T
    src = (M.detach().cpu().float() @ corners)[:, :2].abs().amax((0, 2))  # [2]: furthest x, y from the centre
    need = (src - torch.tensor([(W - 1) / 2, (H - 1) / 2])).clamp(min=0) + _REACH + 1
    return min(math.ceil(need[0].item()), W - 1), min(math.ceil(need[1].item()), H - 1)


def resample_antialiased(x, M):
    """resample() through the doubled resolution with Symlet-6 filtering (ADA app. B): the
    fractional steps of M (scales, free rotations, sub-pixel shifts) alias far less. The image is
    reflect-padded first as far as the transform reads, so the borders mirror the image itself."""
    N, C, H, W = x.shape
    h = to_device(torch.tensor(SYM6, dtype=x.dtype), x.device)
    M = M.clone()  # turned about the filters' centre, where the doubled image is (see _DELAY)
    M[:, :2, 2] += (torch.eye(2, dtype=M.dtype, device=M.device) - M[:, :2, :2]) @ M.new_full([2], _DELAY / 2)
    mx, my = _margin(M, H, W)
    xp = _reflect_pad(x, mx, mx, my, my)  # symmetric: the centre stays where it was
    M2 = M.clone()
    M2[:, :2, 2] *= 2  # the same map in the doubled grid's (centred) pixel units
    size = (2 * (H + 2 * _REACH), 2 * (W + 2 * _REACH))  # the output and what _down2 reads around it
    fine = resample(_along_last(xp, lambda t: _up2(t, h)), M2, size)
    out = _along_last(fine, lambda t: _down2(t, h))
    return out[..., _REACH:_REACH + H, _REACH:_REACH + W]


def _moves_whole_pixels(M, H, W):
    """Per image: does M map every pixel centre onto a pixel centre (pixel blitting only)?"""
    lin, t = M[:, :2, :2], M[:, :2, 2]
    centre = torch.tensor([(W - 1) / 2, (H - 1) / 2])
    # Integer linear part, and the image's corner pixel (0, 0) lands on integer coordinates.
    corner = (lin @ -centre + t) + centre
    return ((lin - lin.round()).abs().amax((1, 2)) < 1e-6) & ((corner - corner.round()).abs().amax(1) < 1e-4)


def transform(x, M):
    """Apply per-image matrices M [N,3,3] to x: exact copies for pixel blitting, else resample_antialiased."""
    N, _, H, W = x.shape
    exact = _moves_whole_pixels(M, H, W)
    if bool(exact.all()):
        return resample(x, M, whole=True)
    if not bool(exact.any()):
        return resample_antialiased(x, M)
    i, j = exact.nonzero()[:, 0], (~exact).nonzero()[:, 0]  # on the CPU, as M
    out = torch.cat([resample(x[to_device(i, x.device)], M[i], whole=True),
                     resample_antialiased(x[to_device(j, x.device)], M[j])])
    return out[to_device(torch.argsort(torch.cat([i, j])), x.device)]  # back to the batch's order


def colour_matrix(rnd, p):
    """Per-image 4x4 matrix acting on homogeneous RGB (ADA appendix: colour transformations)."""
    n = rnd["bright"].numel()
    on = lambda key: (rnd[key] < p).float()  # noqa: E731
    I4 = torch.eye(4).expand(n, 4, 4)
    v = torch.tensor([1, 1, 1, 0], dtype=torch.float32) / math.sqrt(3)  # luma axis
    vv = torch.outer(v, v).expand(n, 4, 4)
    b = rnd["bright_b"] * 0.2 * on("bright")
    B = I4.clone()
    B[:, :3, 3] = b.unsqueeze(1)
    c = torch.exp2(rnd["contrast_c"] * 0.5 * on("contrast"))
    Cm = torch.diag_embed(torch.stack([c, c, c, torch.ones(n)], -1))
    flip = on("lumaflip") * (rnd["lumaflip_bit"] < 0.5).float()
    L = I4 - 2 * vv * flip.view(n, 1, 1)
    theta = (rnd["hue_a"] * 2 - 1) * math.pi * on("hue")
    # Rotation about the luma axis (Rodrigues): cos I + sin [v]x + (1 - cos) v v^T on RGB.
    k = torch.zeros(4, 4)
    k[0, 1], k[0, 2], k[1, 0], k[1, 2], k[2, 0], k[2, 1] = -v[2], v[1], v[2], -v[0], -v[1], v[0]
    ct, st = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
    I3 = torch.diag(torch.tensor([1.0, 1, 1, 0]))
    Hm = ct * I3 + st * k + (1 - ct) * vv
    Hm = Hm + torch.diag(torch.tensor([0.0, 0, 0, 1]))
    s = torch.exp2(rnd["sat_s"] * 1.0 * on("sat")).view(n, 1, 1)
    S = vv + (I4 - vv) * s
    S[:, 3, 3] = 1
    return S @ Hm @ L @ Cm @ B


def augment(x, p, rnd):
    """Augment images x [N,C,H,W] in [-1,1] with probability p per transform; rnd from draw()."""
    if p <= 0:
        return x
    N, C, H, W = x.shape
    x = transform(x, geometric_matrix(rnd, p, W))
    M = to_device(colour_matrix(rnd, p).to(x.dtype), x.device)
    k = 3 if C >= 3 else 1  # colour channels: RGB or L; any further ones (alpha) move with the geometry only
    if k == 3:
        rgb = torch.einsum("nij,njhw->nihw", M[:, :3, :3], x[:, :3]) + M[:, :3, 3].reshape(N, 3, 1, 1)
    else:  # L: the colour matrix on (l, l, l), averaged back: brightness, contrast and luma flip
        m = M[:, :3].mean(dim=1)  # [N, 4]; hue and saturation leave grey unchanged
        rgb = x[:, :1] * m[:, :3].sum(dim=1).view(N, 1, 1, 1) + m[:, 3].view(N, 1, 1, 1)
    return rgb if C == k else torch.cat([rgb, x[:, k:]], dim=1)


class AdaController:
    """Adjusts p towards the target of r_t = E[sign(D(real))] (ADA sec. 3).

    Every `interval` steps: p += sign(r_t - target) * (images seen) / (speed_kimg * 1000)
    (unchanged when r_t is exactly at the target),
    so p can go from 0 to 1 in `speed_kimg` thousand images. The running sums are part of the
    training state so that a resumed run adjusts p exactly as an uninterrupted one.
    """

    def __init__(self, p=0.0, target=0.6, interval=4, speed_kimg=500, enabled=True):
        self.p, self.target, self.interval, self.speed = float(p), target, interval, speed_kimg
        self.enabled = enabled
        self.sign_sum, self.count = 0.0, 0.0
        self.rt = None

    def accumulate(self, real_logits_sign_sum, n):
        """Add one step's sum of sign(D(real)) (a number, or a tensor left on its device: no host
        sync until update() reads it, every `interval` steps) over n images. A controller that does not
        adapt sums nothing: it never resets its sums, so an ADA run continued from it took its first
        r_t over the whole earlier run."""
        if not self.enabled:
            return
        self.sign_sum = self.sign_sum + real_logits_sign_sum
        self.count += float(n)

    def update(self, step, batch):
        """Call after step `step` (0-based) with global batch size; returns the new p."""
        if not self.enabled or (step + 1) % self.interval or self.count == 0:
            return self.p
        self.rt = float(self.sign_sum) / self.count  # sums of +-1: exact in float32 up to 2**24
        # ADA sec. 3: p moves by sign(r_t - target) steps; sign(0) = 0 (at the target p stays).
        sign = (self.rt > self.target) - (self.rt < self.target)
        adjust = sign * batch * self.interval / (self.speed * 1000)
        self.p = min(max(self.p + adjust, 0.0), 1.0)
        self.sign_sum, self.count = 0.0, 0.0
        return self.p

    def state_dict(self):
        # rt too: the stats of the ticks before its next update report it, as an uninterrupted run's do.
        return {"p": self.p, "sign_sum": float(self.sign_sum), "count": self.count, "rt": self.rt}

    def load_state_dict(self, s):
        """Restore the running sums; p too, when adapting (a fixed or no augmentation keeps its own p,
        even continuing a run that adapted it)."""
        self.sign_sum, self.count = float(s["sign_sum"]), float(s["count"])
        if self.enabled:
            self.p = float(s["p"])
            self.rt = s.get("rt")  # absent in older snapshots; a fixed p has no r_t of its own to report
