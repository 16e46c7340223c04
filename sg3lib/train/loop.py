"""The training loop: `train(data, outdir, ...)`, called by notebooks and by `sg3 train`.

Exact resume. Nothing in a step depends on the process's history except what a snapshot holds:
- the data order is a pure function of (seed, epoch): global image number g is item
  perm(seed, g // N)[g % N] of the dataset, and step s reads images [s*B, (s+1)*B);
- a step's random numbers come from generators seeded with (seed, step, phase);
- the state that evolves (weights, Adam moments, G_ema, ADA p and its running sums, the
  path-length mean, counters, tick start and the sums of a tick cut short by the run's end) is
  saved in every snapshot.
So a run stopped after a snapshot and resumed with `resume='latest'` computes the same
weights as one that never stopped (bit for bit in deterministic mode on the same machine).
The global RNG states (torch, cuda, numpy, python) are saved and restored as well, for code
that uses them (e.g. StyleGAN2's noise inputs draw from torch's global generator, which is
re-seeded from (seed, step, phase, round) before each round).
"""
import contextlib
import copy
import functools
import math
import os
import random
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from . import augment as aug
from . import config as config_mod
from . import distributed as dist_mod
from .ema import ema_beta, update_ema
from .loss import Phases, blur_sigma_at, path_length_batch
from ..files import atomic_write, is_disk_full, remove_stale
from .stats import StatsWriter, divergence_warning, tick_line, truncate_after

# Temporaries of killed writes. A run folder has one writer (this run), so any seen when it
# starts is dead, however young. (fakes-*.png.tmp.png and stats.jsonl.tmp: those of older versions.)
LEFTOVERS = (".snapshot-*.pt.tmp-*", ".fakes-*.png.tmp-*", "fakes-*.png.tmp.png", ".stats.jsonl.tmp-*",
             "stats.jsonl.tmp", ".write-test-*", "..sg3lib-training.tmp-*")  # (the write probe, the run lock's)
PHASE_IDS = {"Gmain": 1, "Greg": 2, "Dmain": 3, "Dreg": 4, "data": 5, "grid": 6}


class TrainError(RuntimeError):
    """A problem the user can fix (bad dataset, outdir, resume config); the message says how.
    `quiet`: another process of the run shows the message (sg3 train prints it once)."""
    quiet = False


class TrainingInterrupted(KeyboardInterrupt):
    """train() stopped by an interrupt (Ctrl-C, a notebook's "Interrupt kernel"); the message says
    where it stopped and how to continue. A KeyboardInterrupt, so code that catches those still does.
    `quiet`: under torchrun every process is interrupted; rank 0's says it (sg3 train prints it once)."""
    quiet = False


# ----------------------------------------------------------------------------------------
# Randomness and data order


def derive_seed(*parts):
    """A 63-bit seed from integers (seed, step, phase, ...), stable across runs and machines."""
    hi, lo = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)  # (Python ints: numpy 1.x refused uint64 & int)


def generator(*parts):
    return torch.Generator().manual_seed(derive_seed(*parts))


def _pl_noise(c, step, a, b):
    """Path-length noise y of images a..b of the step's global batch, each drawn from its own seed so
    that an image gets the same y whichever round or process handles it (split invariance)."""
    shape = [c["img_channels"], c["resolution"], c["resolution"]]
    return torch.stack([torch.randn(shape, generator=generator(c["seed"], step, PHASE_IDS["Greg"], 0, i))
                        for i in range(a, b)])


def epoch_order(seed, epoch, n):
    return torch.randperm(n, generator=generator(seed, PHASE_IDS["data"], epoch))


class StreamSampler(torch.utils.data.Sampler):
    """Infinite stream of dataset indices for one rank, from global image `start` on.

    Global images [s*B, (s+1)*B) form step s; rank r takes the r-th of `world` equal slices.
    """

    def __init__(self, n, seed, batch, rank, world, start):
        self.n, self.seed, self.batch, self.rank, self.world, self.start = n, seed, batch, rank, world, start

    def __iter__(self):
        per_rank = self.batch // self.world
        g = self.start
        epoch, order = None, None
        while True:
            for j in range(g + self.rank * per_rank, g + (self.rank + 1) * per_rank):
                if j // self.n != epoch:
                    epoch = j // self.n
                    order = epoch_order(self.seed, epoch, self.n)
                yield int(order[j % self.n])
            g += self.batch


def draw_step(cfg, step, phase, n, z_dim, labels, device):
    """Every per-image random number of one phase of one step, for the whole global batch."""
    gen = generator(cfg["seed"], step, PHASE_IDS[phase])
    r = {"z": torch.randn([n, z_dim], generator=gen), "z2": torch.randn([n, z_dim], generator=gen),
         "mix_u": torch.rand([n], generator=gen), "cut_u": torch.rand([n], generator=gen),
         "aug": aug.draw(n, gen), "aug_real": aug.draw(n, gen)}
    if labels is not None and len(labels):
        idx = torch.randint(len(labels), [n], generator=gen)
        r["c"] = labels[idx]
    else:
        r["c"] = torch.zeros([n, 0])
    return r


def slice_step(r, a, b, device):
    out = {}
    for k, v in r.items():
        out[k] = aug.slice_rnd(v, a, b) if isinstance(v, dict) else dist_mod.to_device(v[a:b], device)
    return out


# ----------------------------------------------------------------------------------------
# RNG state as tensors/lists (loadable with torch.load(weights_only=True))


def rng_state():
    np_state = np.random.get_state()
    py_state = random.getstate()
    s = {"torch": torch.get_rng_state(),
         "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                   "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
         "python": {"version": int(py_state[0]), "state": list(py_state[1]),
                    "gauss": py_state[2] if py_state[2] is None else float(py_state[2])}}
    if torch.cuda.is_available():
        s["cuda"] = list(torch.cuda.get_rng_state_all())
    return s


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"]), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])


# ----------------------------------------------------------------------------------------
# Setup helpers


def _check_outdir(outdir, data):
    """Before any work, without creating anything (a run refused for its options leaves no empty
    folder): a file in the way, a folder this process cannot write into, or a folder inside a folder
    dataset (its grids would be read as images of the dataset the next time it opens)."""
    if os.path.isdir(data) and Path(outdir).resolve().is_relative_to(Path(data).resolve()):
        raise TrainError(f"--outdir {outdir} is inside the dataset folder {data}: its image grids "
                         "(fakes*.png) would be taken for images of the dataset; choose a folder outside it")
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise TrainError(f"--outdir {outdir} is a file, not a folder; choose a folder for the run")
    existing = outdir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise TrainError(f"cannot create the output folder {outdir}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrainError(f"cannot write to the output folder {outdir} ({existing} is not writable). "
                         "Choose a folder you can write to (--outdir).")


RUN_LOCK = ".sg3lib-training"  # in the run folder while a process trains there: {host, pid, start}


def _process_start(pid):
    """A process's start time in clock ticks since boot (Linux), so that a reused pid is not taken for
    the process that wrote a lock; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid):
    if os.name != "posix":  # (Windows' os.kill would end the process)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        pass
    return True


def _take_run_lock(outdir, closing):
    """Refuse a run folder another process on this machine is training in (a second notebook or
    Colab tab on the same folder: each would delete the other's snapshot while it is written and
    truncate its stats), then mark it as this process's until train() returns. A lock of a process
    gone (killed, a disconnected runtime) is replaced; one of another machine cannot be checked and
    is replaced with a warning."""
    import json
    import socket
    path = os.path.join(outdir, RUN_LOCK)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}
    try:
        with open(path) as f:
            other = json.load(f)
        other = other if isinstance(other, dict) else {}
    except (OSError, ValueError):
        other = {}
    pid = other.get("pid")
    if isinstance(pid, int) and other.get("host") == me["host"]:
        same = other.get("start") is None or other.get("start") == _process_start(pid)
        if (_alive(pid) or pid == me["pid"]) and same:
            raise TrainError(f"{outdir} is being trained in by another process on this machine (pid {pid}"
                             f"{', this one' if pid == me['pid'] else ''}): two runs in one folder overwrite each "
                             "other's snapshots and stats. Stop it first, or choose another --outdir. (If no such "
                             f"training runs, delete {path}.)")
    elif isinstance(pid, int):
        warnings.warn(f"{outdir}: {path} says host {other.get('host')!r} (pid {pid}) trains here; if that "
                      "session still runs, stop it: two runs in one folder overwrite each other's snapshots")
    with atomic_write(path, "w") as f:
        json.dump(me, f)

    def release():
        try:
            with open(path) as f:
                mine = json.load(f) == me
        except (OSError, ValueError):
            mine = False
        if mine:
            os.remove(path)
    closing.callback(release)


def _make_outdir(outdir):
    """Create the run folder and prove it takes a file (os.access does not know every file system)."""
    try:
        os.makedirs(outdir, exist_ok=True)
        probe = os.path.join(outdir, f".write-test-{os.getpid()}")
        try:
            with open(probe, "w") as f:
                f.write("ok")
        finally:  # (a full disk fails the write, after the file was made)
            if os.path.exists(probe):
                os.remove(probe)
    except OSError as e:
        raise TrainError(f"cannot write to the output folder {outdir}: {e.strerror or e}. "
                         "Choose a folder you can write to (--outdir).") from None


def _cpus():
    """CPUs this process may use (a container's or Colab's limit, not the host's core count)."""
    from ..cpus import usable_cpus
    return usable_cpus()


def _open_dataset(data, mirror, cond, need_labels):
    """need_labels: refuse a dataset without labels here (a transfer from a conditional network
    says what is missing itself: _check_transfer_fits)."""
    from ..data import ImageDataset
    from ..data.dataset import DatasetError
    try:
        ds = ImageDataset(data, use_labels=cond, xflip=mirror)
        res = ds.resolution
    except DatasetError as e:
        raise TrainError(f"bad dataset: {e}") from None
    if need_labels and not ds.has_labels:
        # never a silent skip: the user asked for a conditional model
        raise TrainError(f"dataset {data} has no labels (dataset.json with \"labels\"), so it cannot "
                         "train a conditional model; add labels (sg3 curate --labels folders) or leave --cond "
                         "off (cond=None)")
    if res < 4 or res & (res - 1):
        raise TrainError(f"dataset {data}: image resolution {res} is not a power of two; "
                         "curate it to 16, 32, ..., 1024 px (sg3 curate --resolution)")
    return ds


class ClassLabels:
    """The class labels of a dataset's images as class indices, one-hot when indexed. An images x
    classes float matrix took 5 GB for 1.28M images of 1000 classes (and minutes to build)."""

    def __init__(self, classes, dim):
        self.classes, self.dim = classes, dim

    def __len__(self):
        return len(self.classes)

    def __getitem__(self, idx):
        return torch.nn.functional.one_hot(self.classes[idx], self.dim).to(torch.float32)

    def distinct(self):
        """One row per class some image has, classes ascending."""
        return torch.nn.functional.one_hot(torch.unique(self.classes), self.dim).to(torch.float32)


def _labels(ds):
    """What c is drawn from: one label per image (the mirrored copies have the same)."""
    if ds.label_dim == 0:
        return None
    raw = torch.from_numpy(ds._raw_labels)
    return ClassLabels(raw, ds.label_dim) if raw.dtype == torch.int64 else raw.float()


def _build(cfg, device):
    from ..networks import build_network, set_bf16
    (gc, gk), (dc, dk) = config_mod.network_kwargs(cfg)
    torch.manual_seed(derive_seed(cfg["seed"], 0, 0))  # initial weights depend on the seed only
    G, D = build_network(gc, gk), build_network(dc, dk)
    if cfg["precision"] == "bf16":
        set_bf16(G, True)
        set_bf16(D, True)
    G, D = G.to(device).train().requires_grad_(False), D.to(device).train().requires_grad_(False)
    return G, D, copy.deepcopy(G).eval()


def _frozen_params(D, n):
    """Names of D's parameters in its first n layers (fromrgb, conv0, conv1, skip of the highest
    resolution first), as the official --freezed counts them: those are not trained."""
    frozen, total = set(), 0
    for bname, block in D.named_children():
        first = getattr(block, "first_layer_idx", None)
        if first is None:
            continue
        layers = [l for l in ("fromrgb", "conv0", "conv1", "skip") if hasattr(block, l)]
        total += len(layers)
        for i, lname in enumerate(layers):
            if first + i < n:
                frozen.update(f"{bname}.{lname}.{p}" for p, _ in getattr(block, lname).named_parameters())
    if n > total:  # would freeze them all, as n = total does: a typo, or a count for a bigger D
        raise TrainError(f"--freezed {n} is more than D's layers: D has {total} layers before its epilogue; "
                         f"freeze 0 to {total} of them")
    return frozen


def _d_arch(init_kwargs):
    """D's capacity (dcbase, dcmax) and architecture (darch) from its constructor arguments: config
    R's D is not G's size, and StyleGAN2-ADA's cifar config trains an 'orig' D."""
    k = init_kwargs or {}
    return {ours: k[theirs] for ours, theirs in (("dcbase", "channel_base"), ("dcmax", "channel_max"),
                                                 ("darch", "architecture")) if theirs in k}


def _arch_of(G, D=None):
    """Architecture options (cfg, cbase, cmax, dcbase, dcmax, darch, map, z_dim, w_dim) of loaded networks."""
    arch = _d_arch(dict(getattr(D, "init_kwargs", {}) or {}))
    k = dict(getattr(G, "init_kwargs", {}) or {})
    cls = str(getattr(G, "official_class", ""))
    radial = k.get("conv_kernel") == 1 or k.get("use_radial_filters")
    arch["cfg"] = "stylegan2" if "stylegan2" in cls else ("stylegan3-r" if radial else "stylegan3-t")
    for ours, theirs in (("cbase", "channel_base"), ("cmax", "channel_max"), ("z_dim", "z_dim"),
                         ("w_dim", "w_dim")):
        if theirs in k:
            arch[ours] = k[theirs]
    if (k.get("mapping_kwargs") or {}).get("num_layers") is not None:
        arch["map"] = k["mapping_kwargs"]["num_layers"]
    return arch


def _source_generator(kind, payload):
    """(official_class, init_kwargs) of the generator a transfer starts from, or None."""
    if kind == "transfer":  # another run's snapshot: specs, not modules
        spec = (payload.get("networks") or {}).get("G")
        return (spec["official_class"], spec["init_kwargs"]) if isinstance(spec, dict) else None
    G = payload["G"]
    return str(getattr(G, "official_class", "")), dict(getattr(G, "init_kwargs", {}) or {})


def _check_transfer_fits(source, generator, c, ds, data):
    """A transfer loads every weight of its source or stops. Where the dataset or --cfg cannot fit
    the source's networks, say which of resolution, channels, classes and cfg differ and what to do
    (the weights' names and shapes alone do not tell a user that)."""
    from ..loader import arch_of
    official_class, k = generator
    res, ch, c_dim = k.get("img_resolution"), k.get("img_channels"), k.get("c_dim") or 0
    problems = []
    if res is not None and res != c["resolution"]:
        problems.append(f"resolution: the network makes {res}x{res} images, the dataset has "
                        f"{c['resolution']}x{c['resolution']}: make a {res} px dataset "
                        f"(sg3 curate --resolution {res})")
    if ch is not None and ch != c["img_channels"]:
        problems.append(f"channels: the network makes {ch}-channel images, the dataset has "
                        f"{c['img_channels']}: make the dataset with sg3 curate --channels {ch}")
    if c_dim and not ds.has_labels:
        problems.append(f"classes: the network is conditional ({c_dim} classes), the dataset has no labels: "
                        f"label it with {c_dim} classes (dataset.json; sg3 curate --labels folders makes one "
                        "class per sub-folder), or start from an unconditional network")
    elif c_dim and not c["c_dim"]:  # labels there, and --cond false given
        problems.append(f"classes: the network is conditional ({c_dim} classes), the run has --cond false: "
                        "leave --cond out (a transfer takes it from its source), or start from an "
                        "unconditional network")
    elif c["c_dim"] and not c_dim:
        problems.append(f"classes: the network is unconditional, the run has --cond ({c['c_dim']} classes): "
                        "leave --cond off (cond=None), or start from a conditional network")
    elif c_dim != c["c_dim"]:
        problems.append(f"classes: the network has {c_dim} classes, the dataset's labels {c['c_dim']}: "
                        f"label the dataset with {c_dim} classes")
    src_cfg = arch_of(official_class, k) if official_class else None
    if src_cfg and src_cfg != c["cfg"]:
        problems.append(f"cfg: the network is {src_cfg}, the run's --cfg is {c['cfg']}: leave --cfg out "
                        "(a transfer takes it from its source) or start from a network of that cfg")
    if problems:
        raise TrainError(f"cannot start from {source} on {data}:\n  " + "\n  ".join(problems))


# Size options a transfer takes from its source unless given (dcbase/dcmax follow the source's D).
SIZE_OPTIONS = ("cbase", "cmax", "map", "z_dim", "w_dim")


def _resized_options(source_arch, c):
    """'--cbase: the network has 512, the run 256' for each size option given with a transfer that
    differs from its source: the reason its weights do not load, which their shapes do not name."""
    return [f"--{k.replace('_', '-')}: the network has {source_arch[k]}, the run {c[k]}" for k in SIZE_OPTIONS
            if k in source_arch and source_arch[k] != c[k]]


def _load_weights(module, state, what, source, resized=()):
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shape = [f"{k}: {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)} here" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shape:
        lines = ([f"missing {k}" for k in missing[:10]] + [f"unexpected {k}" for k in extra[:10]]
                 + [f"shape {s}" for s in shape[:10]])
        if resized:  # options given with a transfer: name them, not a page of tensor names
            raise TrainError(f"{source}: {what} does not fit the options given:\n  " + "\n  ".join(resized)
                             + "\nLeave these options out (a transfer takes them from its source), or start "
                             f"from a network of those sizes. ({len(missing) + len(extra) + len(shape)} "
                             f"weights differ, e.g. {lines[0]})")
        raise TrainError(f"{source}: {what} does not fit this architecture:\n  " + "\n  ".join(lines)
                         + "\nUse the same --cfg/--cbase/--cmax/--map/--z-dim/--w-dim and resolution as the "
                         "source.")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.device, v.dtype))


# ----------------------------------------------------------------------------------------
# Snapshots


def _save_snapshot(run_dir, G, D, G_ema, cfg, state, keep):
    from .. import checkpoint as ck
    path = os.path.join(run_dir, ck.snapshot_name(state["cur_nimg"]))
    meta = {"config": cfg, "kimg": state["cur_nimg"] / 1000, "dataset": cfg.get("data")}
    snap = ck.snapshot_from_networks({"G": G, "D": D, "G_ema": G_ema}, meta, state)
    try:
        ck.save_snapshot(path, snap)
    except OSError as e:
        fix = "free disk space and resume" if is_disk_full(e) else "fix that and resume"
        raise TrainError(f"could not write snapshot {path}: {e.strerror or e}. The previous snapshot "
                         f"is kept; {fix} with --resume latest.") from e
    if keep:
        ck.prune(run_dir, keep, keep_every_kimg=cfg.get("keep_every_kimg"), keep=[path])
    return path


def _remove_leftovers(run_dir):
    """What a killed save left in the run folder (hidden temporaries of a snapshot's size): any seen
    at the start is dead, the folder is this run's. Every start cleans them, not only a resume."""
    if os.path.isdir(run_dir):
        partial = [p for pattern in LEFTOVERS for p in remove_stale(run_dir, pattern)]
        if partial:
            print(f"removed {len(partial)} partial file(s) of an interrupted save: "
                  + ", ".join(os.path.basename(t) for t in partial))


def _find_latest(run_dir, clean=True):
    """(path, loaded snapshot) of the newest snapshot that reads, or (None, None) where the folder
    holds none. Only the writer (rank 0) cleans up what killed writes left and reports what it
    skipped; the other ranks look without deleting (or warning twice). A folder whose snapshots are
    all cut off or damaged is a TrainError naming them: starting over would overwrite that run."""
    from .. import checkpoint as ck
    from ..loader import LoadError
    if clean:
        _remove_leftovers(run_dir)
    with warnings.catch_warnings():
        if not clean:
            warnings.simplefilter("ignore")
        try:
            path, snap, skipped = ck.find_resumable(run_dir, clean=clean)
        except LoadError as e:
            raise TrainError(f"cannot resume: {e}") from None
    if skipped and clean:
        print(f"skipped {len(skipped)} newer snapshot(s) that cannot be read (left in place; the run "
              "replaces each when it gets there again): "
              + "; ".join(f"{p.name}: {why}" for p, why in skipped))
    return (str(path), snap) if path else (None, None)


def _same_dataset(a, b):
    """Whether dataset paths a and b are one file or folder (also through a link): a run's stored
    path, the one given now."""
    if a == b:
        return True
    try:
        return bool(a and b) and os.path.samefile(a, b)
    except OSError:  # one of them no longer exists (moved)
        return False


def _check_no_other_run(outdir):
    """A new run (from scratch or from other weights) starts its counters at 0: in a folder that
    holds another run's snapshots it would cut that run's stats.jsonl and overwrite its snapshots."""
    from .. import checkpoint as ck
    found = ck.snapshot_files(outdir)  # cut-off snapshots count too: they are still that run's
    if found:
        raise TrainError(f"{outdir} already holds a run ({found[-1].name}); continue it with "
                         "--resume latest, or start the new run in another --outdir")


def _check_continues_newest(outdir, src):
    """Continuing from a snapshot path into a folder that holds a newer snapshot would mix two
    histories: the newer files would outlive the continuation (--resume latest would pick them,
    pruning would keep them and delete the new ones)."""
    from .. import checkpoint as ck
    latest = ck.find_latest(outdir, clean=False)
    if latest is None or os.path.samefile(latest, src):  # (samefile: the folder through a link too)
        return
    if ck.snapshot_counter(latest) >= ck.snapshot_counter(src):
        raise TrainError(f"{outdir} holds {os.path.basename(latest)}, which is not older than {src}: "
                         "continuing from it there would mix the two runs' snapshots and stats. "
                         "Continue in another --outdir (same --resume), or move the newer snapshots away.")


def _resume_file(src):
    """--resume as a file: a run folder stands for its newest snapshot, as in sg3 generate and sg3
    rank (resolved once, so that the checks after loading compare that snapshot, not the folder)."""
    from .. import checkpoint as ck
    try:
        return str(ck.newest_if_folder(str(src)))
    except ck.NoSnapshotInFolder as e:  # (not for a folder of damaged snapshots: 'latest' would fail too)
        raise TrainError(f"cannot resume from {e}, or 'latest' for the newest snapshot in --outdir") from None
    except FileNotFoundError as e:
        raise TrainError(f"cannot resume from {e}") from None


def _load_resume(src, device, snap=None):
    """(kind, payload) for --resume: ('snapshot', snap) or ('networks', {'G','D','G_ema'}).
    `snap`: `src` already loaded (resume='latest' has read it to know that it reads)."""
    from .. import checkpoint as ck
    s = str(src)
    if os.path.exists(s) and not s.endswith(".pkl"):
        try:
            snap = ck.load_snapshot(s) if snap is None else snap
            if _snap_training_state(snap) and _snap_config(snap):
                return "snapshot", snap
            # Weights without a run's state (snapshot_from_networks): a source of weights, as an
            # official .pkl (they failed as a continuation: KeyError 'G', or None's ts[k]).
            first_error = None
        except Exception as e:  # not our format: let sg3lib.load try (official .pkl etc.)
            first_error = e
    else:
        first_error = None
    from .. import load
    try:
        return "networks", load(s, device="cpu")
    except Exception as e:
        # Why it failed as a snapshot, too, where it is a torch file (not for an image, a web page...).
        why = f" (as a snapshot: {first_error})" if (first_error and str(first_error) != str(e)
                                                     and _torch_file(s)) else ""
        raise TrainError(f"cannot resume from {s}: {e}{why}") from None


def _torch_file(path):
    from ..loader import LoadError, sniff
    try:
        return sniff(path).startswith("torch")
    except LoadError:
        return False


def _snap_state_dict(snap, name):
    """The state dict of network `name` in a loaded snapshot."""
    net = snap["networks"][name] if "networks" in snap else snap[name]
    return net["state_dict"] if isinstance(net, dict) and "state_dict" in net else net


def _snap_training_state(snap):
    return snap.get("training_state") or snap.get("state")


def _snap_config(snap):
    meta = snap.get("meta") or {}
    return meta.get("config") or snap.get("config")


# ----------------------------------------------------------------------------------------
# Fakes grid


@torch.no_grad()
def save_grid(G_ema, cfg, labels, path, device):
    from PIL import Image
    res = cfg["resolution"]
    cols, rows = (8, 4) if res <= 256 else (4, 2)
    gen = generator(cfg["seed"], 0, PHASE_IDS["grid"])
    z = torch.randn([cols * rows, G_ema.z_dim], generator=gen)
    c = _grid_labels(labels, cols, rows)
    imgs = []
    for i in range(0, cols * rows, 8):
        imgs.append(G_ema(z[i:i + 8].to(device), c[i:i + 8].to(device), noise_mode="const").float().cpu())
    img = (torch.cat(imgs) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    C = img.shape[1]
    img = img.reshape(rows, cols, C, res, res).permute(0, 3, 1, 4, 2).reshape(rows * res, cols * res, C)
    # A hidden temporary name: a grid cut off by a kill is neither a fakes*.png nor left behind.
    with _writing(path), atomic_write(path, sync=False) as f:  # a picture: redrawn on resume if lost
        Image.fromarray(img.numpy()[:, :, 0] if C == 1 else img.numpy()).save(f, format="PNG")


@contextlib.contextmanager
def _writing(path):
    """An OSError writing `path` (a full disk, a Drive quota) as a TrainError that says what to do."""
    try:
        yield
    except OSError as e:
        raise TrainError(f"could not write {path}: {e.strerror or e}. The snapshots written so far are kept; "
                         "free disk space and resume with --resume latest.") from e


def _grid_labels(labels, cols, rows):
    """The fakes grid's labels: one class per row, as the official grid has them (or one per cell
    when there are more classes than rows). The dataset's first labels would fill the grid with its
    first class: curated datasets are sorted by class."""
    if labels is None:
        return torch.zeros([cols * rows, 0])
    if isinstance(labels, ClassLabels):
        distinct = labels.distinct()
    else:
        distinct = torch.unique(labels, dim=0).flip(0)  # one-hot rows, descending: classes 0, 1, 2, ...
    n = len(distinct)
    cell = torch.arange(rows).repeat_interleave(cols) if n <= rows else torch.arange(rows * cols)
    return distinct[cell % n]


def kimg_images(kimg):
    """A length in kimg (> 0) as a whole number of images: at least kimg * 1000, and at least one.
    Rounded to a millionth of an image first: 4.03 * 1000 is 4030.0000000000005 in floating point,
    which took one step more."""
    return max(math.ceil(round(kimg * 1000, 6)), 1)


def grid_name(nimg):
    return f"fakes-{int(nimg):09d}.png"


# ----------------------------------------------------------------------------------------
# The loop


def _keeps_torch_flags(fn):
    """Restore torch's global numerics flags after fn (train() runs inside notebooks)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
        benchmark, tf32 = torch.backends.cudnn.benchmark, _tf32_flags()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            torch.backends.cudnn.benchmark = benchmark
            _set_tf32_flags(tf32)
    return wrapper


def _tf32_flags():
    """('legacy', (cudnn, matmul allow_tf32)) or, where the caller set torch's newer fp32_precision
    API (torch >= 2.9; reading the legacy flags then raises 'mix of the legacy and new APIs'),
    ('new', (cudnn conv, matmul fp32_precision))."""
    try:
        return "legacy", (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    except RuntimeError:
        return "new", (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)


def _set_tf32_flags(flags):
    api, (conv, matmul) = flags
    if api == "legacy":
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
    else:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = conv, matmul


def _set_numerics(c):
    """As the official training: float32 layers in full float32 (TF32 only with c['tf32']), and
    cuDNN's autotuner for training's fixed shapes, unless c['deterministic'], which also asks for
    deterministic algorithms."""
    if _tf32_flags()[0] == "legacy":  # (in the API the caller uses: mixing the two raises)
        _set_tf32_flags(("legacy", (bool(c["tf32"]),) * 2))
    else:
        _set_tf32_flags(("new", ("tf32" if c["tf32"] else "ieee",) * 2))
    torch.backends.cudnn.benchmark = not c["deterministic"]
    if c["deterministic"]:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts


@_keeps_torch_flags
def train(data, outdir, cfg=None, resume=None, device=None, progress=True, callback=None,
          **opts):
    """Train a GAN on the dataset `data` (official zip or folder), writing to run folder `outdir`.

    Options (None = the preset's default; see sg3lib.train.config): batch, batch_gpu, gamma,
    kimg, tick (kimg per tick), snap (ticks per snapshot), mirror, aug ('ada'|'fixed' (at p)|'noaug'), target,
    freezed, cbase, cmax, map, glr, dlr, seed, precision ('fp16': mixed precision on CUDA, the
    default | 'bf16' | 'fp32'), workers, keep_snapshots, deterministic, mbstd_group, tensorboard,
    cond, compile ('none'|'default'|
    'reduce-overhead'|'max-autotune': G and D of the main phases under torch.compile), tf32 (let
    float32 layers use TF32 tensor cores; off, as in the official training). torch's global flags
    (TF32, cuDNN autotuning, deterministic algorithms) are set for the run and restored after it.
    resume: None, 'latest' (newest complete snapshot in outdir; starts fresh if there is none),
    a snapshot path or a run folder (its newest snapshot; same dataset: continue exactly; other
    dataset: new run from its weights),
    or an official .pkl / URL (new run from its weights). A new run (from scratch or from other
    weights) in a folder that already holds snapshots is refused (TrainError), not overwritten.
    callback(event, info): called with ('tick', stats record) and ('snapshot', {'path', 'grid'}).
    Returns {'run_dir', 'snapshot' (last written, or None), 'cur_nimg', 'step', 'ada_p',
    'G', 'D', 'G_ema' (the trained modules)}.
    An interrupt (KeyboardInterrupt) raises TrainingInterrupted, saying where training stopped and
    which snapshot resume='latest' continues from; the interrupted frames' variables are cleared,
    so the traceback a notebook keeps does not keep the networks in memory.
    Multi-process: launched with torchrun, each process calls train(); only rank 0 writes.
    """
    try:  # a misspelt option (keep_snapshot=1) would be stored in the run's config and change nothing
        config_mod.check_option_names(opts)
    except ValueError as e:
        raise TrainError(str(e)) from None
    # '~/runs/x' from Python, or `--resume=~/...` (the shell expands no ~ after '='): read from the home
    # folder, as everywhere else; unexpanded, a snapshot to continue was taken for weights to start from.
    outdir, data = os.path.expanduser(str(outdir)), os.path.expanduser(str(data))
    if isinstance(resume, (str, os.PathLike)) and str(resume) != "latest":
        resume = os.path.expanduser(str(resume))
    if device is not None:  # before the process group: 'mps' or 'cuda' without a GPU end with a message
        from ..cli import torch_device
        try:
            torch_device(device)
        except ValueError as e:
            raise TrainError(str(e)) from None
    try:
        rank, world, device = dist_mod.init(device)
    except ValueError as e:  # a GPU this process cannot have (before the process group: each rank says it)
        raise TrainError(str(e)) from None
    gate = _SetupGate(rank)
    progress_of = {}  # the run's counters, for the message of an interrupt
    try:
        # Closed on every way out: the loader's worker processes, the dataset's zip, the bar.
        with contextlib.ExitStack() as closing:
            return _train(data, outdir, cfg, resume, device, progress, callback, opts, rank, world, gate,
                          closing, progress_of)
    except KeyboardInterrupt as e:
        stopped = _interruption(e, outdir, progress_of)
        stopped.quiet = rank != 0
    except Exception as e:
        gate.fail(e)
        from ..data.dataset import DatasetError
        if isinstance(e, DatasetError):  # an image found damaged when read: one line, and how to go on
            raise TrainError(f"{_last_line(e)}; {_how_to_continue(outdir, progress_of)}") from e
        raise
    raise stopped  # (outside the except: it holds no reference to the interrupt's frames)


def _last_line(e):
    """The message of `e` without what DataLoader's workers put before it (their traceback)."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return lines[-1].split(f"{type(e).__name__}: ", 1)[-1] if lines else type(e).__name__


def _interruption(error, outdir, progress_of):
    """The TrainingInterrupted to raise for a KeyboardInterrupt. The interrupt's frames are
    cleared: a notebook keeps the last traceback, and its frames would keep the networks, Adam's
    moments and the activations of the step alive (on the GPU), so a rerun would need twice the
    memory. The new exception's short traceback says where training stopped, not where torch was."""
    e = error
    while e is not None:
        traceback.clear_frames(e.__traceback__)
        e = e.__context__
    state = progress_of.get("state")
    where = "while setting up" if state is None else f"at {state['cur_nimg'] / 1000:g} kimg"
    return TrainingInterrupted(f"training interrupted {where}; {_how_to_continue(outdir, progress_of)}")


def _how_to_continue(outdir, progress_of):
    """Where resume='latest' goes on from: the newest snapshot this run read or wrote in outdir (a newer
    one damaged inside is skipped by it), else the newest whole-looking one there."""
    from .. import checkpoint as ck
    latest = progress_of.get("snapshot")
    if latest is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the resumed run warns about what it finds)
            latest = ck.find_latest(os.path.abspath(str(outdir)), clean=False)
    if latest:
        return (f"the newest snapshot is {os.path.basename(latest)} ({ck.snapshot_counter(latest) / 1000:g} kimg): "
                "continue from it with train(..., resume='latest') (sg3 train --resume latest)")
    return "no snapshot was written yet: run it again to start over"


def _follow_new_batch(base, prev_cfg, user, resolution, rank):
    """A run continued with another --batch: the stored options that were the defaults derived from
    the old batch (R1 gamma, G_ema's half-life, R's blur fade) follow the new one, as they would in
    a run started with it. Values other than those defaults (given to the run), or given now, are kept."""
    old, new = prev_cfg["batch"], user["batch"]
    was, now = config_mod.batch_derived(resolution, old), config_mod.batch_derived(resolution, new)
    moved = [k for k in was if user.get(k) is None and base.get(k) == was[k] and was[k] != now[k]]
    for k in moved:
        base.pop(k)
    said = [k for k in moved if k != "blur_fade_kimg" or prev_cfg.get("blur_sigma")]  # (no blur: no fade)
    if said and rank == 0:
        keep = f"; give --gamma {was['gamma']:g} to keep the run's R1 weight" if "gamma" in said else ""
        print(f"--batch {new} (the run had {old}): " + ", ".join(f"{k} {was[k]:g} -> {now[k]:g}" for k in said)
              + f" (defaults that follow the batch{keep})")


def _follow_new_precision(base, prev_cfg, user, rank):
    """A run continued with another --precision: the clamp the old precision brought by default goes
    with it (fp16's 256 is not fp32's none); a conv_clamp given to the run, or now, stays."""
    old, new = prev_cfg["precision"], user["precision"]
    was, now = config_mod.default_conv_clamp(old), config_mod.default_conv_clamp(new)
    if user.get("conv_clamp") is None and base.get("conv_clamp") == was != now:
        base.pop("conv_clamp")
        if rank == 0:
            keep = f"; conv_clamp={was} in train() keeps the run's" if was is not None else ""
            print(f"--precision {new} (the run had {old}): conv_clamp {was} -> {now} (the default that follows "
                  f"the precision{keep})")


class _SetupGate:
    """Setup errors (options, dataset, outdir, resume source) end every rank together, with one
    message: before their first collective the ranks agree whether any of them failed. Otherwise a
    rank that failed alone (rank 0 checks the outdir) leaves the others waiting, and an error of
    every rank is printed once per rank."""

    def __init__(self, rank):
        self.rank, self.passed = rank, False

    def check(self, error=None):
        self.passed = True
        first = dist_mod.first_failed_rank(error is not None)
        if first is None or dist_mod.world_size() == 1:
            return  # (one process: the caller raises its error as it is)
        if first == self.rank:
            print(f"error: {error}" if isinstance(error, TrainError) else
                  "".join(traceback.format_exception(type(error), error, error.__traceback__)),
                  file=sys.stderr, flush=True)
        dist_mod.barrier()  # torchrun stops all ranks once one ends: the message first
        e = TrainError(f"process {first} of the run failed; its message says why")
        e.quiet = True
        raise e from error

    def fail(self, error):
        if not self.passed:  # later errors (a full disk on rank 0) end the run through torchrun
            self.check(error)


def _train(data, outdir, cfg, resume, device, progress, callback, opts, rank, world, gate, closing,
           progress_of):
    from tqdm.auto import tqdm
    outdir = os.path.abspath(str(outdir))
    data = os.path.abspath(str(data))
    if rank == 0:
        _check_outdir(outdir, data)
        if os.path.isdir(outdir):  # before anything in it is cleaned up (another process's save)
            _take_run_lock(outdir, closing)
        if resume != "latest":  # ('latest' cleans as it looks for the newest snapshot)
            _remove_leftovers(outdir)

    # Resume source.
    resume_kind, payload, prev_cfg = None, None, None
    if resume == "latest":
        latest, snap = _find_latest(outdir, clean=rank == 0)
        if latest:
            resume_kind, payload = _load_resume(latest, device, snap)
            if rank == 0:
                print(f"resuming from {latest}")
        elif rank == 0:
            print(f"no snapshot in {outdir} yet: starting a new run")
    elif resume:
        resume = _resume_file(resume)
        resume_kind, payload = _load_resume(resume, device)
    if resume_kind == "networks":  # before anything is set up from an incomplete source
        missing = [name for name in ("G", "D", "G_ema") if payload.get(name) is None]
        if missing:
            raise TrainError(f"{resume} holds no {', '.join(missing)}; transfer learning needs G, D and G_ema "
                             "(a training snapshot, not a generator-only file)")
    if resume_kind == "snapshot":
        prev_cfg = _snap_config(payload)
        if prev_cfg:  # snapshots older than D's own keys (dcbase, dcmax, darch): from D's arguments
            prev_cfg = dict(_d_arch(payload["networks"].get("D", {}).get("init_kwargs")), **prev_cfg)
        same_data = bool(prev_cfg) and _same_dataset(prev_cfg.get("data"), data)
        if prev_cfg and not same_data and resume != "latest":
            resume_kind = "transfer"  # another run's snapshot on another dataset: weights only
        elif prev_cfg and not same_data and rank == 0:
            warnings.warn(f"this run trained on {prev_cfg.get('data')}; it continues on {data}. If that is another "
                          "dataset (not the same one moved), stop and start a new run from its weights instead: "
                          f"--resume {latest} in another --outdir", stacklevel=3)
    if rank == 0 and resume_kind and resume != "latest":  # what the source is taken for, said once
        print(f"continuing the run of {resume} (a snapshot of a run on this dataset) in {outdir}"
              if resume_kind == "snapshot" else
              f"starting a new run from the weights of {resume} (transfer learning)")

    # Dataset and config (a continued run takes its stored config; explicit options override;
    # transfer learning takes the source's architecture unless options say otherwise).
    base = dict(prev_cfg) if resume_kind == "snapshot" and prev_cfg else {}
    if resume_kind == "transfer" and prev_cfg:
        base = {k: prev_cfg[k] for k in config_mod.ARCH_KEYS
                if k in prev_cfg and k not in config_mod.NOT_TRANSFERRED}
    elif resume_kind == "networks" and payload.get("G") is not None:
        base = _arch_of(payload["G"], payload.get("D"))
    source_arch = dict(base) if resume_kind in ("transfer", "networks") else {}  # before options override it
    generator = _source_generator(resume_kind, payload) if resume_kind in ("transfer", "networks") else None
    if resume_kind in ("transfer", "networks"):
        base.update(config_mod.TRANSFER)  # the user's options below still override these
    source_cond = bool(generator and generator[1].get("c_dim"))
    if generator:  # classes are part of the architecture a transfer takes from its source
        base["cond"] = source_cond
    user = dict(opts, cfg=cfg)
    mirror = user.get("mirror") if user.get("mirror") is not None else base.get("mirror", False)
    cond = user.get("cond") if user.get("cond") is not None else base.get("cond", False)
    ds = _open_dataset(data, mirror, cond, need_labels=cond and not source_cond)
    closing.callback(ds.close)
    if user.get("aug") not in (None, base.get("aug")) and user.get("p") is None:
        base.pop("p", None)  # the stored p belongs to the stored --aug mode (e.g. ADA's start)
    if resume_kind == "snapshot" and base.get("workers"):  # a property of the machine, not of the run:
        base["workers"] = min(base["workers"], _cpus())  # 12 stored on a workstation, resumed on Colab's 2
    if resume_kind == "snapshot" and prev_cfg and user.get("batch") not in (None, prev_cfg.get("batch")):
        _follow_new_batch(base, prev_cfg, user, ds.resolution, rank)
    if resume_kind == "snapshot" and prev_cfg and user.get("precision") not in (None, prev_cfg.get("precision")):
        _follow_new_precision(base, prev_cfg, user, rank)
    base.update({k: v for k, v in user.items() if v is not None})
    if (resume_kind == "snapshot" and user.get("batch_gpu") is None and base.get("batch_gpu")
            and base["batch"] % (base["batch_gpu"] * world)):
        # The stored split was made for another number of processes. Data order and random numbers
        # go by global image number, so another split continues the same run.
        if rank == 0:
            print(f"the snapshot's --batch-gpu {base['batch_gpu']} does not split --batch {base['batch']} over "
                  f"{world} process(es): using {max(base['batch'] // world, 1)}")
        base.pop("batch_gpu")
    base["data"] = data
    for k in ("resolution", "img_channels", "c_dim"):
        base.pop(k, None)
    try:
        c = config_mod.make_config(ds.resolution, ds.num_channels, ds.label_dim, world=world, **base)
        if user.get("mbstd_group") not in (None, c["mbstd_group"]):  # (the default follows a smaller batch_gpu)
            raise ValueError(f"--mbstd-group {user['mbstd_group']} is larger than --batch-gpu {c['batch_gpu']}: D's "
                             "statistic cannot take more images than a round has; give a --batch-gpu of at least "
                             f"{user['mbstd_group']}, or a smaller --mbstd-group")
        rounds = config_mod.check_batch(c, world, group_fixed=resume_kind == "snapshot" and bool(prev_cfg)
                                        and prev_cfg.get("mbstd_group") == c["mbstd_group"])
    except ValueError as e:
        raise TrainError(str(e)) from None
    if generator:
        _check_transfer_fits(resume, generator, c, ds, data)
    if resume_kind == "snapshot" and prev_cfg:
        diff = config_mod.arch_diff(prev_cfg, c, allowed=config_mod.NUMERICS)
        if diff:
            src = latest if resume == "latest" else resume
            was = prev_cfg.get("c_dim") or 0
            classes = (f"continue it on a dataset labelled with its {was} classes" if was else
                       "continue it unconditional (leave --cond off; cond=None)")
            size = (prev_cfg.get("resolution"), prev_cfg.get("img_channels"))
            how = (f"continue it on a {size[0]} px dataset with {size[1]} channel(s) (sg3 curate --resolution "
                   f"{size[0]}): the image size is part of G's and D's weights, so no new run can start from them "
                   "on other images either" if size != (c["resolution"], c["img_channels"]) else
                   f"{classes}: the classes are part of G's and D's weights, so no new run can start from them "
                   "with other classes either" if was != c["c_dim"] else
                   "start a new run in another --outdir with --resume pointing at this snapshot"
                   if not same_data else  # there it would continue again: same dataset
                   "to start a new run from its weights on this dataset (a snapshot of a run on the dataset it "
                   "trained on continues that run), export them and start from the .pkl: "
                   f"sg3lib.compat.official_pkl.write_official_pkl('start.pkl', sg3lib.load('{src}')), "
                   "then --resume start.pkl in another --outdir")
            raise TrainError(f"cannot continue {outdir} with a different architecture:\n  "
                             + "\n  ".join(diff) + f"\nUse the original settings, or {how}.")
    if resume != "latest" and resume_kind != "snapshot":  # ('latest' has looked: none there, or continuing it)
        _check_no_other_run(outdir)  # after the options' errors, before any write
    elif resume != "latest" and resume_kind == "snapshot":
        _check_continues_newest(outdir, resume)
    _set_numerics(c)

    # Networks, optimizers, state.
    G, D, G_ema = _build(c, device)
    frozen = _frozen_params(D, c["freezed"])  # before any write: a --freezed past D's layers is refused
    labels = _labels(ds)
    state = {"cur_nimg": 0, "cur_tick": 0, "step": 0, "tick_start_nimg": 0}
    progress_of["state"] = state
    tick_sums = {}
    ada = aug.AdaController(c["p"], c["target"], c["ada_interval"], c["ada_kimg"], c["aug"] == "ada")
    resized = _resized_options(source_arch, c)
    if resume_kind in ("snapshot", "transfer"):
        for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
            _load_weights(net, _snap_state_dict(payload, name), name, resume, resized)
    elif resume_kind == "networks":
        for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
            _load_weights(net, payload[name].state_dict(), name, resume, resized)
    if rank == 0:  # after the weights load: a source that does not fit leaves no empty run folder
        new_folder = not os.path.isdir(outdir)
        _make_outdir(outdir)
        if new_folder:
            _take_run_lock(outdir, closing)
    gate.check()  # the first collective: every rank's setup is done, or all end here
    dist_mod.broadcast_module(G)
    dist_mod.broadcast_module(D)
    dist_mod.broadcast_module(G_ema)

    G_interval = c["G_reg_interval"] if c["pl_weight"] > 0 else None
    D_interval = c["D_reg_interval"] if c["gamma"] > 0 else None
    hp_G = config_mod.scaled_adam(c["glr"], c["betas"], G_interval)
    opt_G = torch.optim.Adam(G.parameters(), lr=hp_G[0], betas=hp_G[1], eps=c["eps"])
    # D's Adam is set for lazy R1 also with gamma 0 (no R1 steps then), as the official training sets it
    hp_D = config_mod.scaled_adam(c["dlr"], c["betas"], c["D_reg_interval"])
    opt_D = torch.optim.Adam([p for n, p in D.named_parameters() if n not in frozen], lr=hp_D[0],
                             betas=hp_D[1], eps=c["eps"])
    phases = Phases(G, D, c, device)
    if resume_kind == "snapshot":
        ts = _snap_training_state(payload)
        for k in state:
            state[k] = int(ts[k])
        stored_len = (ts.get("data") or {}).get("dataset_len")
        if rank == 0 and stored_len is not None and stored_len != len(ds):
            # The data order is a permutation of the dataset's length: another length is another order.
            warnings.warn(f"{data} has {len(ds)} images (mirrored copies counted) where the run had {stored_len} "
                          "when this snapshot was written: it continues with another data order than a run "
                          "that was never stopped (the dataset or --mirror changed)", stacklevel=3)
        opt_G.load_state_dict(ts["opt_G"])
        opt_D.load_state_dict(ts["opt_D"])
        # load_state_dict also puts back the stored lr, betas and eps: the run's config (options given
        # now, e.g. a lower --glr) decides them; unchanged options give the stored values exactly.
        for opt, (lr, betas) in ((opt_G, hp_G), (opt_D, hp_D)):
            for group in opt.param_groups:
                group.update(lr=lr, betas=betas, eps=c["eps"])
        ada.load_state_dict(ts["ada"])
        if c["aug"] == "ada" and user.get("p") not in (None, (prev_cfg or {}).get("p")) and ada.p != c["p"]:
            # ADA's adapted p is part of the state; a new --p says where it goes on from (the run's
            # own --p, as a command given again to continue it passes, is where it started)
            if rank == 0:
                print(f"--p {c['p']:g}: ADA goes on from p {c['p']:g} (the snapshot's was {ada.p:.4g})")
            ada.p = float(c["p"])
        phases.pl_mean.copy_(ts["pl_mean"])
        set_rng_state(ts["rng"])
        tick_sums = ts.get("tick_sums") or {}  # a tick cut short by the end of the run (kimg)

    # Data stream from the current image on.
    sampler = StreamSampler(len(ds), c["seed"], c["batch"], rank, world, state["cur_nimg"])
    loader = iter(torch.utils.data.DataLoader(ds, batch_size=c["batch_gpu"], sampler=sampler,
                                              num_workers=c["workers"], pin_memory=device.type == "cuda",
                                              persistent_workers=c["workers"] > 0,
                                              worker_init_fn=_ignore_interrupts if c["workers"] else None))
    closing.callback(_stop_workers, loader)

    run = _Run(c, rank, world, rounds, device, G, D, G_ema, opt_G, opt_D, phases, ada, labels, frozen,
               G_interval, D_interval)
    run.load_tick_sums(tick_sums, device)
    total = kimg_images(c["kimg"])
    tick_len = kimg_images(c["tick"])
    # The stats line of a tick cut short by the end of a run is replaced by the whole tick's.
    open_tick = state["tick_start_nimg"] if state["tick_start_nimg"] < state["cur_nimg"] else None
    kept = open_tick if open_tick is not None else state["cur_nimg"]  # the stats before this resume's
    writer = StatsWriter(outdir, c["tensorboard"], purge_step=kept + 1 if state["cur_nimg"] else None) \
        if rank == 0 else None
    if writer:
        closing.callback(writer.close)
    if rank == 0:
        with _writing(os.path.join(outdir, "stats.jsonl")):  # (a full disk: a TrainError, no traceback)
            truncate_after(outdir, state["cur_nimg"] / 1000)
        if state["cur_nimg"] == 0:
            save_grid(G_ema, c, labels, os.path.join(outdir, "fakes-init.png"), device)
        elif not os.path.exists(os.path.join(outdir, grid_name(state["cur_nimg"]))):
            # killed between the snapshot and its grid: the grid is a function of G_ema alone
            save_grid(G_ema, c, labels, os.path.join(outdir, grid_name(state["cur_nimg"])), device)
    resumed_here = (latest if resume == "latest" else resume) if resume_kind == "snapshot" else None
    if resumed_here and os.path.samefile(os.path.dirname(os.path.abspath(resumed_here)), outdir):
        # the run's newest snapshot that reads (a newer one damaged inside was skipped), not a copy elsewhere
        progress_of["snapshot"] = resumed_here  # (what train() returns, and what an interrupt names)
    if state["cur_nimg"] >= total:  # a finished run continued at its own length
        if rank == 0:
            print(f"nothing to train: {outdir} is already at {state['cur_nimg']} images (--kimg "
                  f"{c['kimg']:g}; kimg= in train()); pass a larger --kimg to continue it")
    # The bar ends where training does: at the first whole step past kimg (a bare counter past total)
    end = state["cur_nimg"] + max(0, -(-(total - state["cur_nimg"]) // c["batch"])) * c["batch"]
    bar = tqdm(total=end, initial=state["cur_nimg"], unit="img", desc="training",
               disable=not progress or rank != 0)
    closing.callback(bar.close)
    t_tick = time.time()
    tick_imgs = 0
    diverged = False  # said once, at the first tick with a NaN or infinite value
    while state["cur_nimg"] < total:
        run.step(state, loader)
        bar.update(c["batch"])
        tick_imgs += c["batch"]
        done = state["cur_nimg"] >= total
        tick_done = state["cur_nimg"] >= state["tick_start_nimg"] + tick_len
        if not done and not tick_done:
            continue
        # End of a tick, or of the run: stats, maybe a snapshot. A tick cut short by the end of
        # the run stays open in the snapshot (start, count, sums): a run extended later (--kimg)
        # finishes it and keeps the ticks and snapshots of a run that had the larger --kimg.
        if device.type == "cuda":  # the tick's time includes the GPU work still queued at its end
            torch.cuda.synchronize(device)
        dt = time.time() - t_tick
        rec = run.tick_stats(state, dt, tick_imgs, tick_done)
        if tick_done:
            state["cur_tick"] += 1
            state["tick_start_nimg"] = state["cur_nimg"]
        snap_now = done or (tick_done and c["snap"] and state["cur_tick"] % c["snap"] == 0)
        if rank == 0:
            with _writing(writer.path):
                if open_tick is not None:
                    truncate_after(outdir, open_tick / 1000)
                writer.write(rec)
            bar.set_postfix(loss_G=rec.get("loss_G"), loss_D=rec.get("loss_D"), p=rec["ada_p"])
            if not progress:
                print(tick_line(rec), flush=True)
            warning = None if diverged else divergence_warning(rec)
            if warning:
                bar.write(warning, file=sys.stderr)  # above the bar, which is drawn again below
                diverged = True
            if callback:
                callback("tick", rec)
        open_tick = None
        if snap_now and rank == 0:
            ts = dict(state, opt_G=opt_G.state_dict(), opt_D=opt_D.state_dict(), ada=ada.state_dict(),
                      tick_sums=run.tick_sums(),
                      pl_mean=phases.pl_mean.detach().cpu().clone(), rng=rng_state(),
                      data={"seed": c["seed"], "position": state["cur_nimg"],
                            "epoch": state["cur_nimg"] // len(ds), "dataset_len": len(ds)})
            progress_of["snapshot"] = _save_snapshot(outdir, G, D, G_ema, c, ts, c["keep_snapshots"])
            grid = os.path.join(outdir, grid_name(state["cur_nimg"]))
            save_grid(G_ema, c, labels, grid, device)
            if callback:
                callback("snapshot", {"path": progress_of["snapshot"], "grid": grid})
        dist_mod.barrier()
        t_tick, tick_imgs = time.time(), 0  # the next tick's time is training only, not the snapshot's
    return {"run_dir": outdir, "snapshot": progress_of.get("snapshot"), "cur_nimg": state["cur_nimg"], "step": state["step"],
            "ada_p": ada.p, "G": G, "D": D, "G_ema": G_ema}


def peak_rss_gb():
    """This process's peak resident memory in GiB, or None where the platform does not say (Windows
    has no `resource` module). ru_maxrss is in KiB on Linux but in bytes on macOS."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 30 if sys.platform == "darwin" else peak / 2 ** 20


def _ignore_interrupts(worker_id):
    """A data loader worker ignores SIGINT: Ctrl-C and a notebook's interrupt reach the whole process
    group, and a worker that died of it first made the main process fail with 'DataLoader worker
    exited unexpectedly' instead of stopping with TrainingInterrupted; the main process ends them."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_workers(loader):
    """End the data loader's worker processes now, also after an error or interrupt (the traceback a
    notebook keeps would otherwise keep them running until the next error)."""
    stop = getattr(loader, "_shutdown_workers", None)  # torch's own, run when the iterator is collected
    if stop is not None:  # (none without workers)
        stop()


class _Run:
    """One training step (all phases, all rounds) and the tick's running statistics."""

    def __init__(self, c, rank, world, rounds, device, G, D, G_ema, opt_G, opt_D, phases, ada, labels,
                 frozen, G_interval, D_interval):
        self.__dict__.update(locals())
        del self.__dict__["self"]
        self.sums = {}
        self.counts = {}

    def _add(self, stats, n):
        # Kept as device tensors until the tick ends: no host sync per round.
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()
            self.counts[k] = self.counts.get(k, 0) + n

    def _rounds(self, n_global):
        """(global start, stop) of this rank's rounds for a phase batch of n_global images."""
        per_rank = n_global // self.world
        per_round = per_rank // self.rounds
        base = self.rank * per_rank
        return [(base + i * per_round, base + (i + 1) * per_round) for i in range(self.rounds)]

    def _seed_global(self, step, phase, start):
        torch.manual_seed(derive_seed(self.c["seed"], step, PHASE_IDS[phase], start + 1))

    def _opt_step(self, module, opt):
        params = [p for n, p in module.named_parameters() if p.grad is not None]
        if params:
            flat = torch.cat([p.grad.flatten() for p in params])
            dist_mod.all_reduce_sum(flat)
            # NaN -> 0 and +-inf -> +-1e5 as the official training; finite elements are clamped too.
            torch.nan_to_num_(flat, nan=0.0).clamp_(-1e5, 1e5)
            i = 0
            for p in params:
                p.grad.copy_(flat[i:i + p.numel()].view_as(p))
                i += p.numel()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def _train_mode(self, module):
        self.G.requires_grad_(module is self.G)
        self.D.requires_grad_(module is self.D)
        if module is self.D:
            for n, p in self.D.named_parameters():
                if n in self.frozen:
                    p.requires_grad_(False)

    def step(self, state, loader):
        c, dev, step, B = self.c, self.device, state["step"], self.c["batch"]
        cur = state["cur_nimg"]
        sigma = blur_sigma_at(cur, c["blur_sigma"], c["blur_fade_kimg"])
        p = self.ada.p
        # This rank's real images, one batch_gpu chunk per round.
        reals = []
        for _ in range(self.rounds):
            img, lab = next(loader)
            # Pinned batches copy asynchronously: the host queues the step instead of waiting.
            img, lab = img.to(dev, non_blocking=True), lab.to(dev, non_blocking=True)
            reals.append((img.to(torch.float32) / 127.5 - 1, lab.to(torch.float32)))
        z_dim = self.G.z_dim

        # G main.
        self._train_mode(self.G)
        r = draw_step(c, step, "Gmain", B, z_dim, self.labels, dev)
        for a, b in self._rounds(B):
            self._seed_global(step, "Gmain", a)
            loss, st = self.phases.G_main(slice_step(r, a, b, dev), sigma, p)
            (loss / B).backward()
            self._add(st, b - a)
        self._opt_step(self.G, self.opt_G)

        # G path length (lazy).
        if self.G_interval and step % self.G_interval == 0:
            nb = path_length_batch(B, c["pl_batch_shrink"], self.world, self.rounds)
            r = draw_step(c, step, "Greg", nb, z_dim, self.labels, dev)
            pl_len = torch.zeros([], device=dev)
            for a, b in self._rounds(nb):
                self._seed_global(step, "Greg", a)
                pl_noise = _pl_noise(c, step, a, b)
                loss, st = self.phases.G_pl(slice_step(r, a, b, dev), self.G_interval,
                                            dist_mod.to_device(pl_noise, dev))  # (pinned: no host wait)
                (loss / nb).backward()
                pl_len = pl_len + st.pop("_pl_len")
                self._add(st, b - a)
            self._opt_step(self.G, self.opt_G)
            self.phases.update_pl_mean(pl_len, nb // self.world)

        # D main.
        self._train_mode(self.D)
        r = draw_step(c, step, "Dmain", B, z_dim, self.labels, dev)
        self._seed_global(step, "Dmain", -1)
        self.phases.update_stats(r, min(c["stats_batch"], B))
        sign = torch.zeros([], device=dev)  # ADA: sum of sign(D(real)) over the global batch
        for (a, b), (real, real_c) in zip(self._rounds(B), reals):
            self._seed_global(step, "Dmain", a)
            loss, st = self.phases.D_main(slice_step(r, a, b, dev), real, real_c, sigma, p)
            (loss / B).backward()
            self._add(st, b - a)
            sign += st["real_sign"].float()
        self._opt_step(self.D, self.opt_D)
        self.ada.accumulate(dist_mod.all_reduce_sum(sign), B)  # stays on the device: no sync per step

        # D R1 (lazy).
        if self.D_interval and step % self.D_interval == 0:
            r = draw_step(c, step, "Dreg", B, z_dim, self.labels, dev)
            for (a, b), (real, real_c) in zip(self._rounds(B), reals):
                self._seed_global(step, "Dreg", a)
                loss, st = self.phases.D_r1(slice_step(r, a, b, dev), real, real_c, sigma, p, self.D_interval)
                (loss / B).backward()
                self._add(st, b - a)
            self._opt_step(self.D, self.opt_D)

        # EMA, counters, ADA.
        dist_mod.average_buffers(self.G)
        update_ema(self.G_ema, self.G, ema_beta(cur, B, c["ema_kimg"], c["ema_rampup"]))
        state["cur_nimg"] += B
        state["step"] += 1
        self.ada.update(step, B)
        self.G.requires_grad_(False)
        self.D.requires_grad_(False)

    def tick_sums(self):
        """The open tick's running sums (empty after a tick's end), for the snapshot: all ranks'
        totals, and with several ranks each rank's own (`per_rank`, gathered by tick_stats)."""
        if self.world > 1 and self.sums:
            return {k: {"sum": p["sum"].sum().to(self.sums[k].dtype), "count": sum(p["count"]), "per_rank": p}
                    for k, p in self._open_tick.items()}
        return {k: {"sum": v.detach().cpu().clone(), "count": self.counts[k]} for k, v in self.sums.items()}

    def load_tick_sums(self, sums, device):
        # Each rank takes its own sums where the snapshot has them for this many ranks: the tick then
        # ends with the sums (and float rounding) of a run never stopped. Otherwise rank 0 takes the
        # totals and the others start from zero with the same keys (tick_stats adds them key by key).
        def own(v):
            per_rank = v.get("per_rank")
            if per_rank is not None and len(per_rank["count"]) == self.world:
                return per_rank["sum"][self.rank].to(v["sum"].dtype), int(per_rank["count"][self.rank])
            return (v["sum"], int(v["count"])) if self.rank == 0 else (torch.zeros_like(v["sum"]), 0)
        taken = {k: own(v) for k, v in sums.items()}
        self.sums = {k: t.to(device) for k, (t, _) in taken.items()}
        self.counts = {k: n for k, (_, n) in taken.items()}

    def _gather_sums(self):
        """Every rank's own sums and counts, {key: {'sum': float64 [world], 'count': [world]}}."""
        keys = sorted(self.sums)
        rows = torch.zeros([self.world, 2 * len(keys)], device=self.device, dtype=torch.float64)
        rows[self.rank] = torch.stack([self.sums[k].double() for k in keys] + [
            torch.tensor(float(self.counts[k]), device=self.device, dtype=torch.float64) for k in keys])
        rows = dist_mod.all_reduce_sum(rows).cpu()
        return {k: {"sum": rows[:, i].clone(), "count": [int(n) for n in rows[:, len(keys) + i]]}
                for i, k in enumerate(keys)}

    def _global_sums(self):
        """The tick's sums and counts over all ranks (each rank has those of its own images)."""
        if self.world == 1 or not self.sums:
            return dict(self.sums), dict(self.counts)
        keys = sorted(self.sums)  # the same order on every rank
        at = {k: i for i, k in enumerate(keys)}
        flat = torch.stack([self.sums[k].double() for k in keys]
                           + [torch.tensor(float(self.counts[k]), device=self.device, dtype=torch.float64)
                              for k in keys])
        dist_mod.all_reduce_sum(flat)
        return ({k: flat[at[k]].to(v.dtype) for k, v in self.sums.items()},
                {k: int(flat[len(keys) + at[k]]) for k in self.sums})

    def tick_stats(self, state, dt, n_imgs, tick_done=True):
        """The tick's stats record; the sums restart only at the tick's end (not at a run's end)."""
        rec = {"kimg": state["cur_nimg"] / 1000, "tick": state["cur_tick"] + 1, "step": state["step"]}
        sums, counts = self._global_sums()
        for k, v in sums.items():
            if not k.startswith("_") and k not in ("real_sign",):
                rec[k] = float(v) / max(counts[k], 1)
        rec["ada_p"] = self.ada.p
        if self.ada.rt is not None:
            rec["ada_rt"] = self.ada.rt
        rec["sec_per_tick"] = dt
        rec["sec_per_kimg"] = dt / max(n_imgs / 1000, 1e-9)
        if self.device.type == "cuda":
            rec["mem_peak_gb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            peak = peak_rss_gb()
            if peak is not None:  # not on Windows: the stats line goes without it
                rec["mem_peak_gb"] = peak
        rec["time"] = time.time()
        if tick_done:
            self.sums, self.counts = {}, {}
        elif self.world > 1 and self.sums:  # the open tick goes into rank 0's snapshot: every rank's sums
            self._open_tick = self._gather_sums()
        return rec
