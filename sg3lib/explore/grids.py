"""Labelled image grids: truncation (psi) sweeps and style-mixing tables."""
import numbers

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import latents as L
from .generate import synthesize, to_rgb

__all__ = ["image_grid", "psi_grid", "style_mix_grid", "label_size"]


def _font(size):
    return ImageFont.load_default(size=size)  # Pillow >= 10.1 (the floor): a scalable built-in font


def label_size(H, W):
    """Font size and band height used for labels next to H x W images."""
    size = max(10, min(24, min(H, W) // 6))
    return size, size + 6


def image_grid(images, rows, cols, row_labels=None, col_labels=None, corner_label=None):
    """Tile rows*cols equally sized uint8 HWC images (row-major) into one PIL RGB image.

    Labels, when given, go in a band above the columns and a band left of the rows, so the
    result is (label_w + cols*W) x (label_h + rows*H); without labels exactly cols*W x rows*H."""
    images = np.asarray(images)
    if len(images) != rows * cols:
        raise ValueError(f"image_grid: {len(images)} images for a {rows}x{cols} grid")
    images = to_rgb(images)  # grey, grey + alpha and RGBA networks too
    H, W = images.shape[1:3]
    grid = images.reshape(rows, cols, H, W, 3).transpose(0, 2, 1, 3, 4).reshape(rows * H, cols * W, 3)
    # as text: a numpy array of labels ('truth value of an array is ambiguous') or numbers work too
    row_labels, col_labels = ([str(s) for s in x] if x is not None else None for x in (row_labels, col_labels))
    if not row_labels and not col_labels:
        return Image.fromarray(grid)
    size, band = label_size(H, W)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = lambda s, f: probe.textbbox((0, 0), s, font=f)[2]  # noqa: E731
    font = _font(size)
    while col_labels and size > 7 and max(text_w(s, font) for s in col_labels) > W - 2:
        size -= 1  # small images: shrink the column labels until they fit their cells
        font = _font(size)
    top = band if col_labels else 0
    left = (max(text_w(s, font) for s in list(row_labels) + [corner_label or ""]) + 8) if row_labels else 0
    canvas = Image.new("RGB", (left + cols * W, top + rows * H), "white")
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    for j, s in enumerate(col_labels or []):
        draw.text((left + j * W + W / 2, top / 2), s, fill="black", font=font, anchor="mm")
    for i, s in enumerate(row_labels or []):
        draw.text((left - 4, top + i * H + H / 2), s, fill="black", font=font, anchor="rm")
    if corner_label and top and left:
        draw.text((left - 4, top / 2), corner_label, fill="gray", font=font, anchor="rm")
    return canvas


def _not_empty(**lists):
    """A grid needs at least one row and one column: an empty list is an error, not a grid of labels."""
    for name, values in lists.items():
        if not len(values):
            raise ValueError(f"{name} is empty: a grid needs at least one row and one column")


@torch.no_grad()
def psi_grid(G, seeds, psis=(1.0, 0.7, 0.5, 0.0), cutoff=None, class_idx=None, centre="global",
             noise_mode="const", labels=True, batch_size=8, progress=True):
    """Rows are seeds, columns truncation psi (labelled 'psi=0.7'); returns a PIL image.
    psi=0 shows the truncation centre itself (the 'average' image)."""
    seeds, psis = L.parse_seeds(seeds), _parse_psis(psis)
    _not_empty(seeds=seeds, psis=psis)
    z = L.seeds_to_z(seeds, G.z_dim)
    ws = torch.stack([L.map_z(G, z, class_idx, p, cutoff, centre) for p in psis], dim=1)  # [S, P, ...]
    imgs = synthesize(G, ws.flatten(0, 1), noise_mode, batch_size, progress=progress, desc="psi grid")
    if not labels:
        return image_grid(imgs, len(seeds), len(psis))
    return image_grid(imgs, len(seeds), len(psis), [f"seed {s}" for s in seeds], [f"psi={p:g}" for p in psis],
                      _truncation_label(cutoff, class_idx, centre == "class" and G.c_dim > 0))


def _parse_psis(psis):
    """psi_grid's columns: a list or array of finite numbers, one number, or text as typed for
    `sg3 generate --psis`, '1,0.7,0.5,0' (a string was read a character at a time: '10' was psi 1 and 0)."""
    if hasattr(psis, "tolist"):  # numpy / torch arrays and scalars
        psis = psis.tolist()
    if isinstance(psis, str):
        try:
            psis = [float(p) for p in psis.split(",")]
        except ValueError:
            raise ValueError(f"cannot read psis {psis!r}: write them like '1,0.7,0.5,0'") from None
    elif isinstance(psis, numbers.Real):
        psis = [psis]
    try:
        psis = list(psis)
    except TypeError:
        raise ValueError(f"psis={psis!r}: the columns' truncation psi, a list like [1, 0.7, 0.5, 0]") from None
    return [L._truncation_args(p, None)[0] for p in psis]  # finite numbers, each named if not


def _truncation_label(cutoff, class_idx, class_centre):
    """The corner of a psi grid names what else shaped its truncation (None when nothing did);
    an unconditional network has no class centre (map_z truncates it towards w_avg)."""
    parts = ([f"class {class_idx}"] if class_idx is not None else []) + \
        ([f"cutoff {cutoff}"] if cutoff is not None else []) + (["class centre"] if class_centre else [])
    return ", ".join(parts) or None


@torch.no_grad()
def style_mix_grid(G, row_seeds, col_seeds, layers="coarse", psi=1.0, cutoff=None, class_idx=None,
                   centre="global", noise_mode="const", labels=True, batch_size=8, progress=True):
    """Style mixing (StyleGAN 2019, sec. 3.1): cell (r, c) takes row seed r's ws and replaces the
    `layers` range ('coarse' | 'middle' | 'fine' | (lo, hi)) by column seed c's ws. The first
    row shows the column seeds, the first column the row seeds, the corner names the layers."""
    row_seeds, col_seeds = L.parse_seeds(row_seeds), L.parse_seeds(col_seeds)
    _not_empty(row_seeds=row_seeds, col_seeds=col_seeds)
    lo, hi = L.layer_range(layers, G)
    w_row = L.map_z(G, L.seeds_to_z(row_seeds, G.z_dim), class_idx, psi, cutoff, centre)
    w_col = L.map_z(G, L.seeds_to_z(col_seeds, G.z_dim), class_idx, psi, cutoff, centre)
    mixed = w_row[:, None].repeat(1, len(col_seeds), 1, 1)
    mixed[:, :, lo:hi] = w_col[None, :, lo:hi]
    ws = torch.cat([w_col, w_row, mixed.flatten(0, 1)])
    imgs = synthesize(G, ws, noise_mode, batch_size, progress=progress, desc="style mixing")
    nc, nr = len(col_seeds), len(row_seeds)
    blank = np.full_like(imgs[:1], 255)
    cells = [blank, imgs[:nc]]
    for r in range(nr):
        cells += [imgs[nc + r:nc + r + 1], imgs[nc + nr + r * nc: nc + nr + (r + 1) * nc]]
    cells = np.concatenate(cells)
    if not labels:
        return image_grid(cells, nr + 1, nc + 1)
    return image_grid(cells, nr + 1, nc + 1, [f"styles {lo}-{hi - 1}"] + [f"seed {s}" for s in row_seeds],
                      ["base"] + [f"seed {s}" for s in col_seeds])
