"""Latents: seeds, class labels, truncation, interpolation and paths through latent space.

Conventions match the official tools so that a seed shows the same image here and there:
z = np.random.RandomState(seed).randn(z_dim); truncation w' = w_centre + psi * (w - w_centre)
on the first `cutoff` layers (StyleGAN2 paper, sec. "truncation trick"; StyleGAN 2019 eq. 3).

Paths return ws of shape [frames, num_ws, w_dim], ready for `generate.synthesize`.
Periodic paths (walks, loops) are functions of a phase t in [0, 1): frame i sits at t = i/n,
so frame n (t = 1) is frame 0 again and a looped video has no seam.
"""
import math
import numbers
import weakref

import numpy as np
import torch

__all__ = [
    "seed_to_z", "seeds_to_z", "parse_seeds", "class_labels", "class_center", "map_z", "truncate",
    "lerp", "slerp", "interpolate", "default_method", "layer_ranges", "layer_range", "smooth_wrap",
    "keyframe_path", "random_walk", "circular_loop", "style_mix_walk", "make_transform",
    "transform_sweep", "is_stylegan3",
]


# ----------------------------------------------------------------------------- seeds and labels

def seed_to_z(seed, z_dim):
    """The official tools' latent for a seed: RandomState(seed).randn(z_dim), float64 numpy."""
    return np.random.RandomState(checked_seed(seed)).randn(z_dim)


def checked_seed(seed):
    """`seed` as an int, or a ValueError naming it: seeds are whole numbers in [0, 2**32)."""
    if not _is_whole(seed):  # 1.5 and "1" were silently seed 1
        raise ValueError(f"seed {seed!r} is not a whole number: seeds are integers in [0, 2**32)")
    if not 0 <= int(seed) < 2 ** 32:
        raise ValueError(f"seed {seed} is out of range: seeds are integers in [0, 2**32)")
    return int(seed)


def seeds_to_z(seeds, z_dim, device="cpu"):
    """Stack the latents of several seeds ('0-3,7', one seed, a list, range or array) into a float32
    tensor [len(seeds), z_dim]."""
    if isinstance(seeds, (str, bytes, numbers.Integral)) or getattr(seeds, "ndim", None) == 0:
        seeds = parse_seeds(seeds)  # (a list keeps its own check: a seed '1' in it is refused)
    seeds = list(seeds.tolist() if hasattr(seeds, "tolist") else seeds)
    z = np.stack([seed_to_z(s, z_dim) for s in seeds]) if len(seeds) else np.zeros([0, z_dim])
    return torch.from_numpy(z).to(device=device, dtype=torch.float32)


MAX_SEEDS = 10_000_000  # in one text: 50k (an FID set) is usual; a list of ten million takes ~400 MB


def parse_seeds(text):
    """'0-3,7,10' -> [0, 1, 2, 3, 7, 10]; a number, list, range or numpy/torch array of whole
    numbers passes through as a list. Ranges include both ends."""
    if isinstance(text, numbers.Integral) or getattr(text, "ndim", None) == 0:
        text = [text]  # one seed (also a 0-d array)
    if not isinstance(text, (str, bytes)) and hasattr(text, "__iter__"):
        return [_whole_seed(s) for s in (text.tolist() if hasattr(text, "tolist") else text)]
    seeds = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:  # 'lo-hi' (inclusive) or one seed
            lo, hi = (int(v) for v in part.split("-", 1)) if "-" in part[1:] else (int(part),) * 2
        except ValueError:
            raise ValueError(f"cannot read seeds {text!r}: write them like '0-3,7,10'") from None
        for s in (lo, hi):  # before the range is listed: '0-10000000000' would fill the memory first
            if not 0 <= s < 2 ** 32:
                raise ValueError(f"seed {s} is out of range: seeds are integers in [0, 2**32)")
        if hi < lo:
            raise ValueError(f"seed range {part!r} runs backwards: write the smaller seed first, like '{hi}-{lo}'")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:  # a list of 2**32 seeds takes over 100 GB
            raise ValueError(f"seeds {text!r} are {len(seeds) + hi - lo + 1} seeds, more than {MAX_SEEDS}: "
                             "generate them in parts, e.g. '0-999999' then '1000000-1999999'")
        seeds.extend(range(lo, hi + 1))
    return seeds


def _whole_seed(s):
    """A seed from a list: a whole number (1.5 was silently seed 1)."""
    try:
        ok = not isinstance(s, bool) and (int(s) == s or isinstance(s, str) and str(int(s)) == s.strip())
    except (TypeError, ValueError, OverflowError):  # 'x', nan, inf
        ok = False
    if not ok:
        raise ValueError(f"seed {s!r} is not a whole number: seeds are integers in [0, 2**32)")
    return int(s)


def class_labels(G, class_idx, n=1, device=None):
    """One-hot labels [n, c_dim] (an empty [n, 0] tensor for unconditional networks)."""
    device = device or _device(G)
    c = torch.zeros([n, G.c_dim], device=device)
    if G.c_dim == 0:
        if class_idx not in (None, 0):
            raise ValueError(f"class_idx={class_idx} given but this network is unconditional (c_dim=0)")
        return c
    if class_idx is None:
        raise ValueError(f"this network is conditional (c_dim={G.c_dim}): pass class_idx in 0..{G.c_dim - 1}")
    if not _is_whole(class_idx):  # 1.5 was silently class 1
        raise ValueError(f"class_idx={class_idx!r} is not a whole number: this network has classes 0..{G.c_dim - 1}")
    if not 0 <= int(class_idx) < G.c_dim:
        raise ValueError(f"class_idx={class_idx} is out of range: this network has classes 0..{G.c_dim - 1}")
    c[:, int(class_idx)] = 1
    return c


def _is_whole(v):
    try:
        return not isinstance(v, (bool, str)) and int(v) == v
    except (TypeError, ValueError, OverflowError):  # None, nan, inf
        return False


def _is_finite(v):
    try:
        return not isinstance(v, (bool, str, bytes)) and math.isfinite(v)
    except (TypeError, ValueError):  # None, a list, a tensor of several numbers
        return False


def _frames(n_frames):
    """A path's frame count: a whole number of at least 1 (0 with endpoint gave a NaN loop, phase 0/0;
    2.5 drew frames at phases that did not close the loop)."""
    if not _is_whole(n_frames) or n_frames < 1:
        raise ValueError(f"n_frames={n_frames!r}: the number of frames, a whole number of at least 1")
    return int(n_frames)


def _device(G):
    for t in G.parameters():
        return t.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------- truncation

_centres = weakref.WeakKeyDictionary()  # G -> (weights' version, {(class_idx, n, seed): w centre}); freed with G


@torch.no_grad()
def class_center(G, class_idx, n=1000, seed=0):
    """Mean mapping output for one class over n random z: the truncation centre for that class.

    The official w_avg is one centre for all classes, so psi -> 0 pulls every class to the same
    image; truncating towards the class's own mean keeps the class (cached per network)."""
    key = (int(class_idx), int(n), int(seed))
    version = tuple(p._version for p in G.mapping.parameters())  # new weights (load_state_dict): new means
    if _centres.get(G, (None,))[0] != version:
        _centres[G] = (version, {})
    cache = _centres[G][1]
    if key not in cache:
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn([n, G.z_dim], generator=gen).to(_device(G))
        c = class_labels(G, class_idx, n)
        ws = torch.cat([G.mapping(z[i:i + 256], c[i:i + 256], truncation_psi=1) for i in range(0, n, 256)])
        cache[key] = ws.mean(dim=0)  # [num_ws, w_dim]
    return cache[key]


def truncate(ws, centre, psi=1.0, cutoff=None):
    """w' = centre + psi * (w - centre) on layers [0, cutoff) (all layers when cutoff is None)."""
    if psi == 1:
        return ws
    ws = ws.clone()
    cutoff = ws.shape[1] if cutoff is None else int(cutoff)
    c = centre if centre.ndim == 1 else centre[:cutoff]  # one centre, or one per layer
    # lerp, as the official mapping computes it (c + psi (w - c) differs by an ulp: now and then a pixel)
    ws[:, :cutoff] = c.to(ws.dtype).expand_as(ws[:, :cutoff]).lerp(ws[:, :cutoff], psi)
    return ws


@torch.no_grad()
def map_z(G, z, class_idx=None, psi=1.0, cutoff=None, centre="global"):
    """z [N, z_dim] -> ws [N, num_ws, w_dim], truncated towards `centre`:
    'global' (the network's w_avg, exactly as the official mapping does), 'class' (the class's own
    mean, see class_center) or a tensor [w_dim] / [num_ws, w_dim]."""
    psi, cutoff = _truncation_args(psi, cutoff)
    if isinstance(centre, str) and centre not in ("global", "class"):  # also when psi is 1
        raise ValueError(f"centre={centre!r}: use 'global', 'class' or a tensor")
    z = torch.as_tensor(z, dtype=torch.float32).to(_device(G))
    c = class_labels(G, class_idx, len(z))
    ws = G.mapping(z, c, truncation_psi=1)
    if psi == 1:
        return ws
    return truncate(ws, _centre_of(G, class_idx, centre).to(ws.device), psi, cutoff)


def _centre_of(G, class_idx, centre):
    """The truncation centre `centre` stands for: w_avg, the class's mean, or the tensor given."""
    if isinstance(centre, str):
        return class_center(G, class_idx) if centre == "class" and G.c_dim else G.mapping.w_avg
    return torch.as_tensor(centre)


def _truncation_args(psi, cutoff):
    """psi a finite number (nan gave black images), cutoff None or a whole number of at least 0 (a
    negative one sliced from the end, 2.5 became 2); a cutoff past the last layer truncates them all."""
    if torch.is_tensor(psi) and psi.numel() == 1 and psi.dtype != torch.bool:  # one number, as numpy's are
        psi = psi.item()
    if isinstance(psi, bool) or not isinstance(psi, numbers.Real) or not math.isfinite(psi):
        raise ValueError(f"psi={psi!r}: the truncation strength, a finite number (1: none, 0: the centre)")
    if cutoff is not None and (not _is_whole(cutoff) or cutoff < 0):
        raise ValueError(f"cutoff={cutoff!r}: the number of layers truncated from the first, a whole number "
                         "of at least 0 (None: all)")
    return float(psi), None if cutoff is None else int(cutoff)


# ----------------------------------------------------------------------------- interpolation

def lerp(a, b, t):
    """Straight line a + t (b - a); t is a float or a tensor broadcast against a's batch."""
    t = _as_t(t, a)
    return a + t * (b - a)


def slerp(a, b, t, eps=1e-7):
    """Spherical interpolation along the last dimension (Shoemake 1985): follows the great
    circle between a and b, so equal-norm endpoints keep that norm all the way. Norms that
    differ are interpolated linearly. Falls back to lerp for parallel vectors, and for exactly
    opposite ones (no great circle is the one between them: the middle is then 0)."""
    t = _as_t(t, a)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(eps), b / nb.clamp_min(eps)
    # The angle from the chords (accurate near 0 and pi; acos of the dot product is not: in float32,
    # vectors 1e-5 rad from opposite were taken as opposite and their middle came out near 0)
    omega = 2 * torch.atan2((ua - ub).norm(dim=-1, keepdim=True), (ua + ub).norm(dim=-1, keepdim=True))
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    so_ = torch.where(safe, so, torch.ones_like(so))
    u = torch.where(safe, (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so_, lerp(ua, ub, t))
    return u * lerp(na, nb, t)


def _as_t(t, a):
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    while t.ndim < a.ndim:
        t = t[..., None]
    return t


def default_method(space):
    """The interpolation the StyleGAN papers use in each space: slerp in Z (the latents are
    Gaussian, so their norms concentrate near sqrt(z_dim)), lerp in W (not normalised: ws lie
    around w_avg, not on a sphere). StyleGAN 2019, appendix on perceptual path length."""
    if space not in ("z", "w"):
        raise ValueError(f"space={space!r}: use 'z' or 'w'")
    return "slerp" if space == "z" else "lerp"


def interpolate(a, b, t, method="slerp"):
    """lerp or slerp by name."""
    if method not in ("lerp", "slerp"):
        raise ValueError(f"method={method!r}: use 'lerp' or 'slerp'")
    return lerp(a, b, t) if method == "lerp" else slerp(a, b, t)


def _ease(t, easing):
    if easing == "linear":
        return t
    if easing == "smooth":  # smoothstep: zero velocity at each key frame
        return t * t * (3 - 2 * t)
    raise ValueError(f"easing={easing!r}: use 'linear' or 'smooth'")


# ----------------------------------------------------------------------------- layer ranges

def layer_ranges(num_ws):
    """Coarse / middle / fine ws ranges as [lo, hi) pairs, for a generator G or a number of ws.
    StyleGAN2 (given G, 64 px and up): the papers' resolution bands, 4-8 px, 16-32 px and 64 px up,
    which are ws 0-3, 4-7 and 8 up at every output size (a ws index feeds the same resolution).
    Otherwise (StyleGAN3, whose ws are not tied to resolutions, or a number) the proportions of
    1024 px StyleGAN2's 18 ws: 2/9 and 4/9."""
    if not isinstance(num_ws, numbers.Integral):  # a generator
        G, num_ws = num_ws, int(num_ws.num_ws)
        if not is_stylegan3(G) and num_ws >= 10:
            return {"coarse": (0, 4), "middle": (4, 8), "fine": (8, num_ws)}
    a = max(1, min(num_ws - 2, math.ceil(num_ws * 2 / 9)))
    b = max(a + 1, min(num_ws - 1, math.ceil(num_ws * 4 / 9)))
    return {"coarse": (0, a), "middle": (a, b), "fine": (b, num_ws)}


def layer_range(layers, num_ws):
    """'coarse' | 'middle' | 'fine' | 'coarse+middle' | (lo, hi) | 'lo-hi' (inclusive) -> (lo, hi),
    for a generator G (named ranges as layer_ranges(G)) or a number of ws."""
    usage = f"layers={layers!r}: use coarse, middle, fine, 'lo-hi' or (lo, hi)"
    named = layer_ranges(num_ws)
    num_ws = named["fine"][1]
    if isinstance(layers, str):
        if all(p in named for p in layers.split("+")):
            parts = sorted(named[p] for p in layers.split("+"))
            if any(a[1] < b[0] for a, b in zip(parts, parts[1:])):  # e.g. coarse+fine: middle in between
                raise ValueError(f"layers={layers!r} is not one contiguous range; pick neighbours such as "
                                 f"'coarse+middle', or give 'lo-hi'")
            return parts[0][0], max(p[1] for p in parts)
        try:
            lo, hi = layers.split("-")
            layers = (int(lo), int(hi) + 1)
        except ValueError:
            raise ValueError(usage) from None
    try:  # 3 and (3,) failed deep inside with a TypeError or IndexError
        lo, hi = layers
    except (TypeError, ValueError):
        raise ValueError(usage) from None
    if not (_is_whole(lo) and _is_whole(hi)):  # (2.5, 6) was silently layers 2..5
        raise ValueError(f"{usage}, whole numbers")
    lo, hi = int(lo), int(hi)
    if not 0 <= lo < hi <= num_ws:
        raise ValueError(f"layer range {lo}..{hi - 1} is outside this network's 0..{num_ws - 1}")
    return lo, hi


# ----------------------------------------------------------------------------- paths

@torch.no_grad()
def keyframe_path(G, seeds, n_frames, method=None, space="z", loop=True, easing="smooth",
                  class_idx=None, psi=1.0, cutoff=None, centre="global", endpoint=False):
    """n_frames ws passing through each seed's image in turn, evenly timed.
    space='z' interpolates the latents then maps (truncating every frame); space='w' maps the
    seeds then interpolates ws. method 'slerp' or 'lerp'; None: slerp in Z, lerp in W (see
    default_method). loop=True returns to the first seed and is periodic (frame i at
    phase i/n; endpoint=True adds frame n, which is the first seed again); loop=False ends
    exactly on the last seed."""
    n_frames, seeds = _frames(n_frames), parse_seeds(seeds)  # seeds: '0-3,7', a list, a range or an array
    if len(seeds) < 2:
        raise ValueError("a key-frame path needs at least two seeds")
    usual = default_method(space)  # also refuses a space other than 'z' and 'w' (as 'W'), whatever the method
    method = usual if method is None else method
    keys = list(seeds) + ([seeds[0]] if loop else [])
    k = len(keys) - 1  # segments
    count = n_frames + 1 if (loop and endpoint) else n_frames
    s = torch.arange(count, dtype=torch.float64) * k / (n_frames if loop else max(1, n_frames - 1))
    seg = s.floor().long().clamp(max=k - 1)
    t = _ease((s - seg).float(), easing)
    z = seeds_to_z(keys, G.z_dim, _device(G))
    keys_ = map_z(G, z, class_idx, psi, cutoff, centre) if space == "w" else z
    path = interpolate(keys_[seg], keys_[seg + 1], t.to(keys_.device), method)
    return map_z(G, path, class_idx, psi, cutoff, centre) if space == "z" else path


def smooth_wrap(x, sigma):
    """Gaussian smoothing along axis 0 that wraps around (circular convolution, via FFT), so the
    result is periodic with no seam. Rescaled so white noise of unit variance stays unit variance."""
    x = np.asarray(x, dtype=np.float64)
    if sigma <= 0:
        return x.copy()
    g = _wrapped_gaussian(x.shape[0], sigma)
    return _convolve_wrapped(x, g) / np.sqrt((g ** 2).sum())


def _wrapped_gaussian(n, sigma):
    """The Gaussian of width sigma over n samples that wrap around, summing to 1."""
    d = np.minimum(np.arange(n), n - np.arange(n))  # circular distance to index 0
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return g / g.sum()


def _convolve_wrapped(x, g):
    """Circular convolution of x with g along axis 0, via FFT."""
    shape = [len(g)] + [1] * (x.ndim - 1)
    return np.fft.ifft(np.fft.fft(x, axis=0) * np.fft.fft(g).reshape(shape), axis=0).real


def random_walk(G, n_frames, seed=0, sigma=None, space="z", endpoint=False, class_idx=None, psi=1.0,
                cutoff=None, centre="global"):
    """A seamless random loop: white noise over n_frames smoothed by a wrapping Gaussian of width
    sigma frames (default n_frames/8). space='z' smooths z (marginally N(0, I), like a seed);
    space='w' smooths the mapped (truncated) ws' deviations from their mean over the walk (each
    frame keeps the spread of real ws).
    endpoint=True appends frame n, computed from the periodic path (it equals frame 0). sigma=0 is
    unsmoothed noise: a new image each frame."""
    n_frames = _frames(n_frames)
    sigma = n_frames / 8 if sigma is None else sigma
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 <= sigma < math.inf:
        raise ValueError(f"sigma={sigma!r}: the walk's smoothing width in frames, a finite number of at least 0 "
                         "(None: n_frames/8)")  # nan smoothed every frame into nan, a grey video
    rnd = np.random.RandomState(checked_seed(seed))  # (numpy's own error names no seed; 1.5 was a TypeError)
    if space not in ("z", "w"):
        raise ValueError(f"space={space!r}: use 'z' or 'w'")
    z = smooth_wrap(rnd.randn(n_frames, G.z_dim), sigma)
    idx = np.arange(n_frames + 1 if endpoint else n_frames) % n_frames  # phase i/n; i = n wraps to 0
    z = torch.from_numpy(z[idx]).float()
    if space == "z":
        return map_z(G, z, class_idx, psi, cutoff, centre)
    # W: the mapped ws' mean over the walk plus their smoothed deviations from it, each frame then
    # distributed as the (truncated) ws are.
    w = map_z(G, torch.from_numpy(rnd.randn(n_frames, G.z_dim)).float(), class_idx, psi, cutoff, centre).cpu().numpy()
    mean = w.mean(0, keepdims=True)
    w = mean + _smooth_deviations(w - mean, sigma)
    return torch.from_numpy(w[idx]).float().to(_device(G))


def _smooth_deviations(d, sigma):
    """smooth_wrap for deviations from the samples' own mean, keeping their spread. Taking the mean
    out takes the zero frequency out, which holds a share 1 / (n sum g^2) of smoothed noise (about
    3.5 sigma / n): rescaled as for white noise the frames had 0.73 of the spread of real ws at the
    default sigma and 0.18 at sigma n/2, an extra truncation. Per frame: mean var/n + deviations
    var (1 - 1/n) = var."""
    d = np.asarray(d, dtype=np.float64)
    n = d.shape[0]
    if sigma <= 0 or n < 2:
        return d.copy()
    g = _wrapped_gaussian(n, sigma)
    return _convolve_wrapped(d, g) * np.sqrt((1 - 1 / n) / max((g ** 2).sum() - 1 / n, 1e-12))


def circular_loop(G, n_frames, seeds=(0, 1), endpoint=False, class_idx=None, psi=1.0, cutoff=None,
                  centre="global"):
    """z(t) = cos(2 pi t) z_a + sin(2 pi t) z_b for t = i / n_frames: a great loop through z_a
    (t = 0). Each z is exactly N(0, I) distributed because cos^2 + sin^2 = 1."""
    n_frames, seeds = _frames(n_frames), parse_seeds(seeds)
    if len(seeds) != 2:  # one failed to unpack; a third was dropped without a word
        raise ValueError(f"seeds={seeds}: a circular loop goes through two seeds, z_a (t = 0) and z_b")
    za, zb = seeds_to_z(seeds, G.z_dim)
    n = n_frames + 1 if endpoint else n_frames
    t = torch.arange(n, dtype=torch.float64) / n_frames * (2 * math.pi)
    z = torch.cos(t)[:, None] * za.double() + torch.sin(t)[:, None] * zb.double()
    return map_z(G, z.float(), class_idx, psi, cutoff, centre)


def style_mix_walk(G, base_seed, n_frames, layers="fine", walk="loop", seed=0, endpoint=False,
                   class_idx=None, psi=1.0, cutoff=None, centre="global", **walk_kwargs):
    """Hold the base seed's ws on all layers except `layers`, which follow a periodic walk:
    layers='fine' keeps pose and shape and animates colour and texture; 'coarse' the opposite.
    walk='loop': the circular_loop through `seed` and `seed + 1`; 'random': the random_walk of `seed`."""
    n_frames, (lo, hi) = _frames(n_frames), layer_range(layers, G)
    if walk == "loop" and walk_kwargs:  # a loop has no sigma or space: refused, not ignored
        raise ValueError(f"{', '.join(walk_kwargs)} given for walk='loop': they shape walk='random' only")
    if walk == "loop":
        moving = circular_loop(G, n_frames, seeds=(seed, seed + 1), endpoint=endpoint, class_idx=class_idx,
                               psi=psi, cutoff=cutoff, centre=centre)
    elif walk == "random":
        moving = random_walk(G, n_frames, seed=seed, endpoint=endpoint, class_idx=class_idx, psi=psi,
                             cutoff=cutoff, centre=centre, **walk_kwargs)
    else:
        raise ValueError(f"walk={walk!r}: use 'loop' or 'random'")
    base = map_z(G, seeds_to_z([base_seed], G.z_dim), class_idx, psi, cutoff, centre)
    ws = base.repeat(len(moving), 1, 1)
    ws[:, lo:hi] = moving[:, lo:hi]
    return ws


# ----------------------------------------------------------------------------- StyleGAN3 transforms

def is_stylegan3(G):
    """True when G.synthesis has the Fourier-feature input with a user transform (StyleGAN3)."""
    return hasattr(getattr(G.synthesis, "input", None), "transform")


def make_transform(translate=(0.0, 0.0), angle=0.0):
    """The 3x3 matrix for synthesis.input.transform that shows the image moved by `translate`
    (in image widths: (0.25, 0) moves the content a quarter width right, +y moves it down)
    and rotated by `angle` degrees (counter-clockwise as shown, about the image centre; the move
    follows the rotation, along the screen's axes).
    The input layer samples its features through this matrix, so it holds the inverse of the
    rotation + translation we want to see (as the official visualizer does)."""
    try:  # one number failed with "'float' object is not subscriptable"
        x, y = translate
    except (TypeError, ValueError):
        x = y = None
    if not (_is_finite(x) and _is_finite(y)):  # nan gave a nan matrix: a black image
        raise ValueError(f"translate={translate!r}: the move in image widths, a pair of finite numbers (x, y)")
    if not _is_finite(angle):
        raise ValueError(f"angle={angle!r}: the rotation in degrees, a finite number")
    a = math.radians(angle)
    m = np.array([[math.cos(a), math.sin(a), float(x)],
                  [-math.sin(a), math.cos(a), float(y)],
                  [0.0, 0.0, 1.0]])
    return torch.from_numpy(np.linalg.inv(m)).float()


def transform_sweep(n_frames, kind="translate", amount=None, endpoint=False):
    """Transforms [n, 3, 3] for a periodic sweep: 'translate' moves along a circle of radius
    `amount` (default 0.25 image widths); 'rotate' turns `amount` degrees (default 360) at an
    even pace when that is a whole number of turns, and otherwise swings out to `amount` and back
    (a turn that stopped short would jump back to 0 at the loop's seam)."""
    n_frames = _frames(n_frames)
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, numbers.Real)
                               or not math.isfinite(amount)):  # nan made every frame black
        raise ValueError(f"amount={amount!r}: how far the sweep goes (image widths or degrees), a finite number")
    n = n_frames + 1 if endpoint else n_frames
    t = np.arange(n) / n_frames
    if kind == "translate":
        r = 0.25 if amount is None else amount
        return torch.stack([make_transform((r * math.cos(2 * math.pi * s) - r, r * math.sin(2 * math.pi * s)), 0)
                            for s in t])
    if kind == "rotate":
        deg = 360.0 if amount is None else float(amount)
        if deg % 360 == 0:
            angles = deg * t
        else:  # 0 -> deg -> 0, slowing at both ends
            angles = deg * (1 - np.cos(2 * math.pi * t)) / 2
        return torch.stack([make_transform((0, 0), a) for a in angles])
    raise ValueError(f"kind={kind!r}: use 'translate' or 'rotate'")
