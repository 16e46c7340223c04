"""`rank()` / `sg3 rank`: score every image of a dataset with a trained discriminator.

A low D score marks an image that looks least like the rest of the data (or that the
network finds hard): a cheap way to find leftovers of a bad scrape. D's minibatch-stddev
layer (StyleGAN2, Sec. 4 of the ProGAN paper) makes each score depend on the other images
of its group, so every image is scored in `passes` differently shuffled minibatches and
the scores are averaged; the spread across passes is reported too.

Outputs (in out_dir): `rank.csv` (rank, name, score, std, label; best first),
`rank_top.png` and `rank_bottom.png` contact sheets; with drop_bottom > 0, a copy of the
dataset without the lowest-scoring fraction (written through DatasetWriter: temporary
name, renamed when complete).
"""
import argparse
import copy
import csv
import io
import json
import math
import os
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..files import atomic_write, check_folder_writable, user_path
from .dataset import ImageDataset
from .images import thumbnail
from .report import _atomic_save, contact_sheet
from .writer import DatasetWriter, check_dest_name, check_replaceable


def _device(device, default=None):
    if device is None:
        return default or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from ..cli import torch_device
    dev = torch_device(device)
    if dev.type == "cuda" and dev.index is None:  # 'cuda' names the current GPU, as parameters do
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _d_of(nets, source):
    if "D" not in nets:
        raise ValueError(f"{source} has no discriminator 'D' (it holds {', '.join(k for k in nets if k != 'meta')}); "
                         "ranking needs a training snapshot or an official pkl with D")
    return nets["D"]


def _discriminator(network, device):
    """(D, the device to score on). The caller's own D (a module, or in a load() dict) is scored on
    its own device unless `device` names another; then on a copy: the caller's stays where it is."""
    if isinstance(network, (torch.nn.Module, dict)):
        D = network if isinstance(network, torch.nn.Module) else _d_of(network, "the network dict")
        own = next((p.device for p in D.parameters()), None)
        device = _device(device, default=own)
        return (D if own in (None, device) else copy.deepcopy(D).to(device)), device
    from ..checkpoint import newest_if_folder
    from ..loader import load
    device = _device(device)
    path = newest_if_folder(network)  # a run folder: its newest snapshot
    return _d_of(load(path, device=device), path), device


def _count_to_drop(drop_bottom, n):
    """The bottom fraction as a number of images, rounded half up (round() takes halves to even: 0.5
    images to 0, 2.5 to 2); a fraction that rounds to no image is refused rather than copying all."""
    if not 0 <= drop_bottom < 1:
        raise ValueError(f"drop_bottom is a fraction in [0, 1) (sg3 rank --drop-bottom: a percentage below 100), "
                         f"got {drop_bottom:g}")
    n_drop = math.floor(drop_bottom * n + 0.5 + 1e-9)  # 1e-9: 0.29 * 50 is 14.499999999999998
    if drop_bottom > 0 and n_drop == 0:
        raise ValueError(f"drop_bottom={drop_bottom:g} ({drop_bottom * 100:g}%) of {n} images is less than half an "
                         f"image, so the copy would drop none; drop at least {math.ceil(5000 / n) / 100:g}% (half "
                         "an image, rounded up to one) or none")
    if n_drop >= n:  # checked before scoring: the copy would be an empty dataset
        raise ValueError(f"drop_bottom={drop_bottom:g} ({drop_bottom * 100:g}%) of {n} images would drop all of "
                         "them; keep some")
    return n_drop


def rank(network, data, out_dir, passes=4, batch_size=32, drop_bottom=0.0, dest=None, device=None,
         seed=0, progress=True, overwrite=False):
    """Score the images of `data` (path or ImageDataset) with D of `network` (path, run folder, URL,
    sg3lib.load() dict or module). Returns a dict: names, scores (mean), stds, csv path,
    sheets, and dest (the filtered copy) when drop_bottom (a fraction 0..1) is > 0; the number
    dropped is drop_bottom * images rounded half up (a fraction that rounds to none is refused). The
    copy keeps the labels, the number of classes and the dataset's other files (a licence, notes;
    listed as `other_files`). An existing dest is refused
    (before any scoring) unless overwrite=True. device=None: a given module's own device, else
    cuda if available; a given module is left as it was (training mode, device, gradients)."""
    if dest is not None and drop_bottom <= 0:
        raise ValueError(f"dest={dest} is the copy without the lowest-scoring images: set drop_bottom > 0 "
                         "(sg3 rank --drop-bottom PERCENT)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (sg3 rank --batch), got {batch_size}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1 (sg3 rank --passes; each image is scored once per pass), got {passes}")
    D, device = _discriminator(network, device)
    ds = data if isinstance(data, ImageDataset) else ImageDataset(data, use_labels=D.c_dim > 0)
    try:
        return _rank(D, ds, out_dir, passes, batch_size, drop_bottom, dest, device, seed, progress, overwrite)
    except KeyboardInterrupt as e:
        # A notebook keeps the last traceback: without its frames' locals, it keeps neither the batch's
        # activations nor a D loaded here (on the GPU) alive, so running the cell again fits.
        traceback.clear_frames(e.__traceback__)
        del D
        raise
    finally:
        if ds is not data:  # opened here: closed here, also on an error or an interrupt
            ds.close()


def _rank(D, ds, out_dir, passes, batch_size, drop_bottom, dest, device, seed, progress, overwrite):
    if (ds.num_channels, ds.resolution) != (D.img_channels, D.img_resolution):
        raise ValueError(f"{ds.path}: images are {ds.resolution}px with {ds.num_channels} channel(s), but the "
                         f"discriminator expects {D.img_resolution}px with {D.img_channels}; {_mismatch_fix(ds, D)}")
    if D.c_dim and ds.label_dim != D.c_dim:
        found = (f"labels for {ds.label_dim} classes" if ds.label_dim else
                 "labels, but the dataset was opened without use_labels=True" if ds.has_labels else
                 "no labels (dataset.json)")
        raise ValueError(f"the discriminator is conditional ({D.c_dim} classes), but {ds.path} has {found}: "
                         f"rank a dataset labelled with the same {D.c_dim} classes as its training data "
                         "(sg3 curate --labels folders labels one class per sub-folder), or an unconditional network")
    if drop_bottom > 0 and ds.labels_problem:  # the copy would be written without them
        raise ValueError(f"{ds.labels_problem}: a copy without the lowest images would lose the labels; fix "
                         "dataset.json (or remove it for an unlabelled dataset) first")
    n = len(ds.image_names)
    n_drop = _count_to_drop(drop_bottom, n)
    out_dir = check_folder_writable(Path(out_dir).expanduser(), "out_dir (sg3 rank --out)")  # before scoring, as below
    if drop_bottom > 0:
        dest = Path(dest).expanduser() if dest else out_dir / f"{ds.name}-top{100 - drop_bottom * 100:g}.zip"
        check_dest_name(dest)
        check_folder_writable(dest.parent, "dest (sg3 rank --dest)")
        if dest.exists() and not overwrite:  # checked before scoring, which can take long
            raise FileExistsError(f"destination already exists: {dest}; choose another --dest or pass "
                                  "--overwrite (overwrite=True) to replace it")
    _check_places(ds, out_dir, dest if drop_bottom > 0 else None, overwrite)
    was_training = D.training
    try:  # scored in eval mode without a graph; a caller's own D gets its mode back
        with torch.no_grad():
            mean, std = _scores(D.eval(), ds, passes, batch_size, device, seed, progress)
    finally:
        D.train(was_training)
    bad = np.flatnonzero(~np.isfinite(mean))
    if bad.size:  # NaN sorts last: the copy would drop whichever files come last, as if they were the worst
        raise ValueError(f"the discriminator gave no finite score (NaN or infinity) for {bad.size} of {n} images "
                         f"(first: {ds.image_names[bad[0]]}); its weights are broken (a run that diverged?): "
                         "rank with an earlier snapshot; nothing was written")
    order = np.argsort(-mean, kind="stable")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "rank.csv"
    # UTF-8 on every system (Windows' cp1252 failed on a name like 猫.png, after all the scoring)
    with atomic_write(csv_path, "w", newline="", encoding="utf-8") as f:  # a temporary of its own
        w = csv.writer(f)
        w.writerow(["rank", "name", "score", "std", "label"])
        for r, i in enumerate(order):
            lab = "" if not ds.has_labels else ds._raw_labels[i] if ds._raw_labels.ndim == 1 else \
                json.dumps(ds._raw_labels[i].tolist())  # a vector label as JSON
            w.writerow([r + 1, ds.image_names[i], f"{mean[i]:.6f}", f"{std[i]:.6f}", lab])
    sheets = {}
    for which, idxs in (("top", order[:32]), ("bottom", order[::-1][:32])):
        tiles = [(_thumb(ds, i), f"{mean[i]:.2f}") for i in idxs]
        sheets[which] = out_dir / f"rank_{which}.png"
        _atomic_save(contact_sheet(tiles, 64, f"{which} {len(idxs)} by D score"), sheets[which])
    result = dict(names=[ds.image_names[i] for i in order], scores=mean[order], stds=std[order],
                  csv=str(csv_path), sheets={k: str(v) for k, v in sheets.items()}, dest=None)
    if drop_bottom > 0:
        drop = set(order[n - n_drop:].tolist())
        labels = ds._raw_labels if ds.has_labels else None
        keep = [i for i in range(n) if i not in drop]
        others = ds.other_files()
        with DatasetWriter(dest, overwrite=overwrite) as wr:
            for i in tqdm(keep, desc=f"writing {dest.name}", unit="img", disable=not progress):
                with ds._open(ds.image_names[i]) as f:
                    data_bytes = f.read()
                if not ds.image_names[i].lower().endswith(".png"):
                    data_bytes = _to_png(data_bytes)
                wr.add(data_bytes, None if labels is None else labels[i].tolist())
            for stored, name in others.items():  # cleaned in place, they would be lost with the old dataset
                with ds._open(stored) as f:
                    wr.add_file(name, f, ds._file_size(stored))
            ds.close()  # dest may be this very zip, which Windows cannot replace while it is open
            wr.close(class_names=_class_names_kept(ds, keep))
        result.update(dest=str(dest), dropped=sorted(ds.image_names[i] for i in drop),
                      other_files=sorted(others.values()))
    return result


def _class_names_kept(ds, keep):
    """class_names for the copy. Without them the number of classes is the highest label + 1, so a copy
    that dropped every image of the last class would have one class fewer than the data D was trained
    on (and refuse that D, or train another network); then the classes are named by their index."""
    raw = ds._raw_labels
    if ds.class_names is not None or raw is None or raw.dtype != np.int64:
        return ds.class_names
    classes = int(raw.max()) + 1
    if int(raw[keep].max()) + 1 == classes:
        return None
    return [str(i) for i in range(classes)]


def _mismatch_fix(ds, D):
    """What to do about images of another size or channel count than D's: the curate flags that make
    them match (curate writes 1 or 3 channels)."""
    flags = [f"--resolution {D.img_resolution}"] if ds.resolution != D.img_resolution else []
    if ds.num_channels != D.img_channels:
        if D.img_channels not in (1, 3):
            return (f"rank with a network trained on {ds.num_channels}-channel images ({D.img_channels}-channel "
                    "datasets are not made by sg3 curate, which writes 1 or 3 channels)")
        flags.append(f"--channels {D.img_channels}")
    if len(flags) == 1 and flags[0].startswith("--resolution"):
        return (f"rank with a network trained at this size, or curate the images to {D.img_resolution}px "
                f"(sg3 curate {flags[0]})")
    return f"rank with a network trained on such images, or curate them to match (sg3 curate {' '.join(flags)})"


def _check_places(ds, out_dir, dest, overwrite):
    """Refused before scoring. A folder dataset would read files put inside it (contact sheets, a folder
    copy) as its images; a folder dest replaces the ranking if it holds out_dir; and overwrite replaces
    dest whole, so it must be the dataset itself (cleaned in place) or another dataset, never a folder
    that holds the dataset or other files."""
    src = Path(ds.path).resolve()
    if src.is_dir():
        for what, p in (("out_dir (sg3 rank --out)", out_dir), ("dest (sg3 rank --dest)", dest)):
            if p is not None and not (p is dest and p.resolve() == src) and p.resolve().is_relative_to(src):
                raise ValueError(f"{what} {p} is inside the dataset folder {ds.path}, whose files would be taken "
                                 f"for images of the dataset; choose a place outside {ds.path}")
    if dest is None:
        return
    if dest.suffix.lower() != ".zip" and out_dir.resolve().is_relative_to(dest.resolve()):
        raise ValueError(f"dest (sg3 rank --dest) {dest} holds out_dir (--out) {out_dir}: the copy would replace "
                         "the ranking (rank.csv, contact sheets); choose another --dest or --out")
    if overwrite and dest.exists() and dest.resolve() != src:
        check_replaceable(src, dest)


def _scores(D, ds, passes, batch_size, device, seed, progress):
    """Mean and spread of each image's logit over `passes` shuffled passes (in image order)."""
    n = len(ds.image_names)
    group = getattr(getattr(getattr(D, "b4", None), "mbstd", None), "group_size", 1) or 1
    batch = max(group, batch_size - batch_size % group)
    batch = min(batch, -(-n // group) * group)  # no larger than the data: the rest would be padding
    total, sq, count = np.zeros(n), np.zeros(n), np.zeros(n)
    rng = np.random.default_rng(seed)
    steps = passes * -(-n // batch)
    with tqdm(total=steps, desc=f"ranking {ds.name}", unit="batch", disable=not progress) as bar:
        for _ in range(passes):
            order = rng.permutation(n)
            pad = -len(order) % batch  # fill the last batch with other images; their extra scores are not counted
            order = np.concatenate([order, rng.choice(n, pad, replace=pad > n)]) if pad else order
            real = np.arange(len(order)) < n
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                imgs = torch.from_numpy(np.stack([ds.load_image(i) for i in idx])).to(device)
                imgs = imgs.float() / 127.5 - 1  # [0, 255] -> [-1, 1], as in training
                c = torch.from_numpy(np.stack([ds.get_label(i) for i in idx])).to(device) if D.c_dim else None
                logits = D(imgs, c).float().flatten().cpu().numpy().astype(np.float64)
                keep = real[s:s + batch]
                np.add.at(total, idx[keep], logits[keep])
                np.add.at(sq, idx[keep], logits[keep] ** 2)
                np.add.at(count, idx[keep], 1)
                bar.update(1)
    mean = total / count
    return mean, np.sqrt(np.maximum(sq / count - mean ** 2, 0))


def _thumb(ds, i):
    """A contact-sheet tile: the image fitted into 64 px (a full-size one would cover its neighbours)."""
    a = ds.load_image(i).transpose(1, 2, 0)
    return thumbnail(Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a[:, :, :3]), 64)


def _to_png(b):
    buf = io.BytesIO()
    Image.open(io.BytesIO(b)).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def _percent(text):
    """An argparse type: --drop-bottom in percent, 0 <= X < 100 (the library takes a fraction, and
    its error would speak of one)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage like 5, got {text!r}") from None
    if not 0 <= v < 100:  # also refuses nan
        raise argparse.ArgumentTypeError(f"is a percentage from 0 up to (not including) 100, got {text}")
    return v


def add_rank_arguments(p):
    p.add_argument("--network", required=True, type=user_path,
                   help="snapshot .pt, run folder (its newest snapshot) or official .pkl (path or URL) holding D")
    p.add_argument("--data", required=True, type=user_path, help="dataset zip or folder (official format)")
    p.add_argument("--out", default=None, type=user_path, help="output folder (default: <data>_rank/)")
    p.add_argument("--passes", type=int, default=4, help="shuffled passes averaged per image")
    p.add_argument("--batch", type=int, default=32,
                   help="images per D call (rounded down to a multiple of D's minibatch-stddev group; "
                        "at most the dataset's size, rounded up to the group)")
    p.add_argument("--drop-bottom", type=_percent, default=0.0,
                   help="percent below 100: write a copy without the bottom X%% (rounded half up to whole images; "
                        "one that rounds to none is refused)")
    p.add_argument("--dest", default=None, type=user_path,
                   help="where the filtered copy goes (.zip or folder; default: <out>/<data>-top<100-X>.zip)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dest")


def run_rank(args):
    data = Path(os.path.abspath(args.data))  # '.' or '..' has no name of its own to put _rank after
    out = args.out or (str(data)[:-4] if data.suffix.lower() == ".zip" else str(data)) + "_rank"  # (faces.v2 is a folder's name)
    try:
        res = rank(args.network, args.data, out, passes=args.passes, batch_size=args.batch,
                   drop_bottom=args.drop_bottom / 100.0, dest=args.dest, device=args.device,
                   overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"sg3 rank: error: {e}", file=sys.stderr)
        return 2
    print(f"ranked {len(res['names'])} images -> {res['csv']}")
    print(f"  best {res['names'][0]} ({res['scores'][0]:.3f}), worst {res['names'][-1]} ({res['scores'][-1]:.3f})")
    print(f"  contact sheets: {res['sheets']['top']}, {res['sheets']['bottom']}")
    if res["dest"]:
        print(f"  copy without the bottom {args.drop_bottom:g}% ({len(res['dropped'])} image{'s' if len(res['dropped']) != 1 else ''}): {res['dest']}")
        if res["other_files"]:
            names = res["other_files"]
            print(f"  it keeps the dataset's {len(names)} other file(s): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}")
    return 0
