"""Batched generation: ws (or seeds) -> uint8 images, with a progress bar.

Images follow the official tools' conversion: uint8 = clamp(img * 127.5 + 128, 0, 255).
"""
import contextlib
import numbers
import threading

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import latents as L

__all__ = ["to_uint8", "to_pil", "to_rgb", "synthesize", "generate", "generate_arrays", "use_transform",
           "load_generator", "tiny_generator"]

# Rendering may happen from widget worker threads and the notebook at once; the transform buffer
# of StyleGAN3 is shared state, so setting it and synthesizing must not interleave.
_render_lock = threading.RLock()


def to_uint8(img):
    """NCHW float images in about [-1, 1] -> NHWC uint8 numpy."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def to_pil(arr):
    """One HWC (or HW) uint8 image, as generate gives -> PIL image: grey for 1 or 2 channels (grey +
    alpha), RGB for 3 or 4 (alpha left out, as in grids and videos)."""
    a = arr.detach().cpu().numpy() if torch.is_tensor(arr) else np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.dtype != np.uint8 or not 1 <= a.shape[2] <= 4:
        raise ValueError(f"to_pil takes one uint8 image of shape [H, W] or [H, W, C] with C in 1-4, got "
                         f"{a.dtype} {list(a.shape)}" + (": index a batch, e.g. images[0]" if a.ndim == 4 else "")
                         + ("; float images of G (NCHW in [-1, 1]) go through to_uint8 first"
                            if a.dtype.kind == "f" else ""))
    return Image.fromarray(np.ascontiguousarray(a[:, :, 0] if a.shape[2] < 3 else a[:, :, :3]))


def to_rgb(images):
    """[..., H, W, C] uint8 -> [..., H, W, 3]: grey (and grey + alpha) repeated, colour kept; alpha is
    left out, as to_pil does for RGBA (grids and videos have no transparency)."""
    images = np.asarray(images)
    return images[..., :1].repeat(3, axis=-1) if images.shape[-1] < 3 else images[..., :3]


@contextlib.contextmanager
def use_transform(G, transform):
    """Temporarily set StyleGAN3's synthesis.input.transform (a 3x3 matrix, see
    latents.make_transform); restores the previous value afterwards. None leaves it alone. The block
    holds the render lock, so a widget rendering meanwhile (in its own thread) neither draws with this
    transform nor has its own left in the network afterwards."""
    if transform is None:
        yield
        return
    if not L.is_stylegan3(G):
        raise ValueError("translate/rotate needs a StyleGAN3 generator (synthesis.input.transform); "
                         "this network has none")
    with _render_lock:
        buf = G.synthesis.input.transform
        old = buf.clone()
        try:
            buf.copy_(torch.as_tensor(transform, dtype=buf.dtype))
            yield
        finally:
            buf.copy_(old)


@torch.no_grad()
def synthesize(G, ws, noise_mode="const", batch_size=8, transforms=None, progress=False, desc="synthesis"):
    """ws [N, num_ws, w_dim] -> uint8 images [N, H, W, C]. `transforms` is None, one 3x3 matrix
    for all, or [N, 3, 3] (one per image; StyleGAN3 only)."""
    if noise_mode not in ("const", "random", "none"):
        raise ValueError(f"noise_mode={noise_mode!r}: use 'const', 'random' or 'none'")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:  # not a silent 1
        raise ValueError(f"batch_size={batch_size!r}: images per forward pass, a whole number of at least 1")
    ws = torch.as_tensor(ws).to(L._device(G))
    transforms = _transforms(transforms, len(ws))
    per_image = transforms is not None and transforms.ndim == 3
    step = 1 if per_image else batch_size  # one transform buffer: one image per call
    out = []
    for i in tqdm(range(0, len(ws), step), desc=desc, disable=not progress, leave=False):
        tf = transforms[i] if per_image else transforms
        with _render_lock, use_transform(G, tf):
            out.append(to_uint8(G.synthesis(ws[i:i + step], noise_mode=noise_mode)))
    if not out:
        return np.zeros([0, G.img_resolution, G.img_resolution, G.img_channels], np.uint8)
    return np.concatenate(out)


def _transforms(transforms, n):
    """None, one 3x3 matrix, or n of them as a [n, 3, 3] tensor (a list of matrices is stacked)."""
    if transforms is None:
        return None
    if isinstance(transforms, (list, tuple)):
        transforms = torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in transforms])
    transforms = torch.as_tensor(transforms, dtype=torch.float32)
    if transforms.shape == (3, 3) or transforms.shape == (n, 3, 3):
        return transforms
    raise ValueError(f"transforms of shape {list(transforms.shape)}: give one 3x3 transform for all images "
                     f"or one per image, [{n}, 3, 3] for these {n} ws")


def generate_arrays(G, seeds, psi=1.0, cutoff=None, class_idx=None, noise_mode="const", centre="global",
                    batch_size=8, transform=None, progress=True):
    """Seeds -> uint8 images [N, H, W, C], the same image per seed as the official tools."""
    seeds = L.parse_seeds(seeds)
    ws = L.map_z(G, L.seeds_to_z(seeds, G.z_dim), class_idx, psi, cutoff, centre)
    return synthesize(G, ws, noise_mode, batch_size, transform, progress=progress, desc="generate")


def generate(G, seeds, **kwargs):
    """Seeds -> list of PIL images. Keyword arguments as generate_arrays."""
    return [to_pil(a) for a in generate_arrays(G, seeds, **kwargs)]


def load_generator(path, device="cpu"):
    """The EMA generator (else G) from an sg3lib snapshot, an official .pkl, or the newest
    snapshot in a run folder, in eval mode without gradients."""
    import sg3lib
    from sg3lib.checkpoint import newest_if_folder
    path = newest_if_folder(path)
    nets = sg3lib.load(path, device=device)
    G = nets["G_ema"] if nets.get("G_ema") is not None else nets.get("G")
    if G is None:
        raise ValueError(f"{path}: holds no generator (keys: {sorted(nets)})")
    return G.eval().requires_grad_(False)


def tiny_generator(resolution=16, seed=0, c_dim=0, arch="sg3", num_layers=4, perturb=0.5, device="cpu",
                   img_channels=3):
    """A randomly initialised, very small StyleGAN3-T (arch='sg2': StyleGAN2) for tests and for
    trying the notebooks before a model is trained. Its weights are perturbed away from the
    initialisation (where every seed gives nearly the same flat image) so seeds differ visibly;
    StyleGAN3 gets num_layers synthesis layers (official default 14) to stay fast on a CPU;
    the images are abstract colour fields, not a trained model's. w_avg is set from 256 samples."""
    from sg3lib.cli import torch_device
    from sg3lib.networks import build_network
    torch_device(device)  # a ValueError saying why, before the network is built
    torch.manual_seed(seed)
    kwargs = dict(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=resolution, img_channels=img_channels,
                  channel_base=256 if arch == "sg3" else 128, channel_max=16, mapping_kwargs=dict(num_layers=2))
    if arch == "sg3":
        kwargs["num_layers"] = num_layers
    cls = {"sg3": "training.networks_stylegan3.Generator", "sg2": "training.networks_stylegan2.Generator"}[arch]
    G = build_network(cls, kwargs)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * perturb)
        c = torch.eye(c_dim)[torch.arange(256) % c_dim] if c_dim else torch.zeros(256, 0)
        G.mapping.w_avg.copy_(G.mapping(torch.randn(256, G.z_dim), c)[:, 0].mean(0))
    return G.to(device).eval().requires_grad_(False)
