"""sg3lib's own snapshot format: save atomically, find the latest complete one, load safely.

A snapshot is a plain dict written with `torch.save` and readable with
`torch.load(path, weights_only=True)` (no pickled classes, so loading runs no code):

    {'format': 'sg3lib-snapshot', 'version': 1,
     'networks': {'G': {'official_class': str, 'init_kwargs': dict, 'state_dict': dict}, 'D': ..., 'G_ema': ...},
     'meta': {'arch': str, 'kimg': float, ...},          # JSON-able
     'training_state': {...}}                            # tensors, numbers, strings, lists, dicts

Naming: `snapshot-NNNNNNNNN.pt`, where NNNNNNNNN is the number of real images shown so far
(the image counter, i.e. kimg * 1000), zero-padded to 9 digits: `snapshot-000400000.pt` is at
400 kimg. `snapshot_name(nimg)` makes it; `find_latest` sorts by that number. A save first writes
`.snapshot-NNNNNNNNN.pt.tmp-XXXX` in the same folder, fsyncs it and renames it into place, so a
killed run leaves at most a hidden temporary file, which `find_latest` removes.
"""
import collections
import json
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import torch

from .files import atomic_write, remove_stale
from .loader import LoadError, read_head, short_of_memory

FORMAT = "sg3lib-snapshot"
VERSION = 1
PATTERN = "snapshot-*.pt"
# The whole name: a copy ('snapshot-000004000 (1)', 'snapshot-000400000-20240101', 'snapshot-keep-...') has
# no counter (its last digits, read as one, made a dated backup the newest snapshot, and prune deleted real ones)
_COUNTER = re.compile(r"(?:network-)?snapshot-(\d+)")  # (network-: the official name)
_LEAF_TYPES = (torch.Tensor, int, float, bool, complex, str, bytes, type(None), torch.dtype, torch.device)


def snapshot_name(nimg):
    """'snapshot-000400000.pt' for 400,000 images shown (400 kimg)."""
    return f"snapshot-{int(nimg):09d}.pt"


def snapshot_from_networks(networks, meta=None, training_state=None):
    """Build the snapshot dict from {'G': module, 'D': module, 'G_ema': module} (None entries skipped).

    Each module needs `.official_class` and `.init_kwargs` (every sg3lib network has them; one under
    torch.compile, whole or in part, is saved as the network itself); state dicts are detached copies
    on the CPU, so training can go on while the dict is saved.
    """
    from .networks import plain_state_name, unwrapped
    nets = {}
    for name, module in networks.items():
        if module is None:
            continue
        module = unwrapped(module)  # torch.compile(G): G's own names, not _orig_mod.*
        for attr in ("official_class", "init_kwargs"):
            if not hasattr(module, attr):
                raise ValueError(f"network {name!r} ({type(module).__name__}) has no .{attr}; "
                                 "build it with sg3lib.networks.build_network")
        nets[name] = {"official_class": str(module.official_class),
                      "init_kwargs": json.loads(json.dumps(module.init_kwargs)),
                      "state_dict": {plain_state_name(k): v.detach().cpu().clone()
                                     for k, v in module.state_dict().items()}}
    return {"format": FORMAT, "version": VERSION, "networks": nets,
            "meta": dict(meta or {}), "training_state": dict(training_state or {})}


def _check_loadable(x, where):
    """Refuse, before writing, anything that torch.load(weights_only=True) would refuse later."""
    if type(x) in (dict, collections.OrderedDict):
        for k, v in x.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"snapshot key {where}[{k!r}] must be a str or int")
            _check_loadable(v, f"{where}[{k!r}]")
    elif type(x) in (list, tuple, set, torch.Size):
        for i, v in enumerate(x):
            _check_loadable(v, f"{where}[{i}]")
    elif not isinstance(x, _LEAF_TYPES):
        raise ValueError(f"snapshot entry {where} is a {type(x).__name__}; use tensors, numbers, strings, "
                         "lists and plain dicts (e.g. torch.from_numpy for numpy arrays, dict(...) for dict "
                         "subclasses) so that "
                         "torch.load(weights_only=True) can read it")


def _validate(snapshot, source):
    """Raise LoadError unless `snapshot` has the documented structure."""
    if not isinstance(snapshot, dict) or snapshot.get("format") != FORMAT:
        keys = sorted(map(str, snapshot))[:8] if isinstance(snapshot, dict) else type(snapshot).__name__
        raise LoadError(f"{source}: a PyTorch file, but not an sg3lib snapshot (found {keys}; expected "
                        f"format={FORMAT!r}). For a bare state dict, build the network with "
                        "sg3lib.networks.build_network and call load_state_dict.")
    if not isinstance(snapshot.get("version"), int) or snapshot["version"] > VERSION:
        raise LoadError(f"{source}: snapshot version {snapshot.get('version')!r} is newer than this sg3lib "
                        f"reads ({VERSION}); upgrade sg3lib")
    nets = snapshot.get("networks")
    if not isinstance(nets, dict) or not nets:
        raise LoadError(f"{source}: the snapshot holds no networks")
    for name, net in nets.items():
        if not isinstance(net, dict) or not isinstance(net.get("official_class"), str) \
                or not isinstance(net.get("init_kwargs"), dict) or not isinstance(net.get("state_dict"), dict):
            raise LoadError(f"{source}: network {name!r} lacks official_class / init_kwargs / state_dict")
        odd = [k for k, v in net["state_dict"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if odd:
            raise LoadError(f"{source}: network {name!r} has state_dict entries that are not named tensors "
                            f"({odd[:3]}): the file is corrupt or was not written by sg3lib")
    for key in ("meta", "training_state"):
        if not isinstance(snapshot.get(key, {}), dict):
            raise LoadError(f"{source}: {key!r} must be a dict")
    return snapshot


def save_snapshot(path, snapshot):
    """Write `snapshot` to `path` atomically: temporary file in the same folder, fsync, rename."""
    path = Path(path)
    _validate(snapshot, path)
    try:
        json.dumps(snapshot.get("meta", {}))
    except TypeError as e:
        raise ValueError(f"snapshot meta must be JSON-able (numbers, strings, lists, dicts): {e}") from None
    _check_loadable(snapshot, "snapshot")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        out = _WriteErrors(f)
        try:
            torch.save(snapshot, out)
        except RuntimeError:  # torch's zip writer turns a failed write into "unexpected pos ..."
            if out.error is not None:  # the OSError (disk full, quota) that callers report, or the
                raise out.error from None  # KeyboardInterrupt (Ctrl-C, a notebook's Stop) during the write
            raise
    return path


class _WriteErrors:
    """A file for torch.save that keeps the OSError of a failed write (disk full, a Drive quota) or the
    interrupt that stopped it, which torch would report as a RuntimeError ('unexpected pos ...') that
    names neither the file nor the cause."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except (OSError, KeyboardInterrupt) as e:
            self.error = e
            raise

    def flush(self):
        return self.f.flush()


def load_snapshot(path, map_location="cpu"):
    """torch.load(weights_only=True) and validate; raises LoadError naming the file and problem."""
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise LoadError(f"{path}: the file is empty (0 bytes): an interrupted save or copy?")
    if _looks_zip(path) or zipfile.is_zipfile(path):
        names = _zip_names(path)
        if names is None:
            raise LoadError(f"{path}: the file is truncated or damaged (its ZIP directory is missing or cannot be "
                            "read): an interrupted save, download or copy. Use an earlier snapshot or copy it again.")
        if not any(n.endswith("data.pkl") for n in names):
            raise LoadError(f"{path}: a ZIP archive, but not a PyTorch file (a dataset? datasets go to "
                            "`sg3 train`); expected an sg3lib snapshot .pt or an official .pkl")
        bad = _failed_crc(path)
        if bad:  # torch.load reads no checksum: a copy damaged inside would load as other weights
            raise LoadError(f"{path}: damaged contents, corrupt ({bad} fails its CRC check): a damaged copy. "
                            "Use an earlier snapshot or copy it again.")
    try:
        snapshot = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        # torch checks each storage against its ZIP entry first: a failed allocation is a real shortage
        shortage = short_of_memory(path, e)
        if shortage is not None:
            raise shortage from e
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if _names_a_class(str(e)):
            raise LoadError(f"{path}: a PyTorch file holding pickled Python objects, which sg3lib does not "
                            "load (it could run code). Only sg3lib snapshots and official .pkl files are "
                            f"read. ({msg})") from None
        if "weightsunpickler error" in str(e).lower():  # torch's first line says nothing about the file
            msg = str(e)[str(e).lower().index("weightsunpickler error"):].split("\n\n")[0]
            msg = "".join(ch if ch.isprintable() else "?" for ch in " ".join(msg.split()))[:200]  # garbled bytes
        raise LoadError(f"{path}: not a readable PyTorch file, truncated or corrupt ({msg}): an interrupted "
                        "save or a damaged copy. Use an earlier snapshot or copy it again.") from None
    return _validate(snapshot, path)


# weights_only's refusal of a real class names it as module.name; damaged pickle bytes give an unknown
# opcode, or a 'global' of garbled bytes, which are no reason to suspect code in the file.
_CLASS_REFUSED = re.compile(r"Unsupported (global: GLOBAL|class) "  # ('class': the wording of older torch)
                            r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+( was not an allowed|\s*$)", re.M)


def _names_a_class(message):
    return _CLASS_REFUSED.search(message) is not None


def _looks_zip(path):
    return read_head(path, 4) == b"PK\x03\x04"


def snapshot_counter(path):
    """The image counter in a snapshot's name (-1 if it has none)."""
    m = _COUNTER.fullmatch(Path(path).stem)
    return int(m.group(1)) if m else -1


def _in_counter_order(path):
    return snapshot_counter(path), Path(path).name


def snapshot_files(folder, pattern=PATTERN):
    """Every file in `folder` named like a snapshot, complete or not (Drive's copies too), oldest
    first: what says that a folder holds a run."""
    return sorted(Path(folder).glob(pattern), key=_in_counter_order) if Path(folder).is_dir() else []


# What zipfile raises for damaged archives: bad magic, bad UTF-8 names, odd versions, short fields.
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, struct.error)


def _failed_crc(path):
    """The first member of a ZIP file whose bytes do not match their stored CRC-32, or None."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip()
    except _ZIP_ERRORS + (zlib.error,) as e:
        return f"reading it ({type(e).__name__}: {e})"


def _zip_names(path):
    """The names in a ZIP file, or None where its directory is missing or damaged."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except _ZIP_ERRORS:
        return None


def _problem(path):
    """What is wrong with a snapshot-named file, or None where it looks complete. A finished torch zip
    file has its central directory at the end; a cut-off one does not."""
    try:
        if path.stat().st_size == 0:
            return "empty (0 bytes)"
        with open(path, "rb"):  # zipfile's OSError would read as a damaged directory
            pass
    except OSError as e:
        hint = "; check its permissions" if isinstance(e, PermissionError) else ""
        return f"cannot be read ({e.strerror or e}){hint}"
    if any(n.endswith("data.pkl") for n in _zip_names(path) or ()):
        return None
    return "truncated or damaged (no complete ZIP directory at its end)"


def _scan(folder, pattern, clean, stale_s):
    """(complete snapshots sorted by counter, removed temporaries, [(incomplete file, what is wrong)],
    files named like snapshots but without a counter, e.g. Drive's copies)."""
    folder = Path(folder)
    removed = remove_stale(folder, f".{pattern}.tmp-*", stale_s) if clean else []  # younger: a save in progress
    skipped, good, odd = [], [], []
    for p in folder.glob(pattern):
        if snapshot_counter(p) < 0:  # e.g. a copy Drive made on a second upload: not ours to use or delete
            odd.append(p)
        elif p.is_file():
            why = _problem(p)
            if why:
                skipped.append((p, why))
            else:
                good.append(p)
    skipped = _newest_first(skipped)
    said = ([f"removed {len(removed)} leftover temporary file(s) from interrupted saves "
             f"{[p.name for p in removed]}"] if removed else []) \
        + ([f"skipped {len(skipped)} incomplete snapshot(s) {_listing(skipped)}"] if skipped else [])
    if said:
        warnings.warn(f"{folder}: " + "; ".join(said))
    if odd:
        warnings.warn(f"{folder}: ignored {len(odd)} file(s) not named snapshot-NNNNNNNNN.pt (a copy? rename it "
                      f"to use it): {sorted(p.name for p in odd)}")
    return sorted(good, key=_in_counter_order), removed, skipped, sorted(odd)


def _listing(problems):
    """'[snapshot-000000016.pt: empty (0 bytes), ...]' for [(path, what is wrong)]."""
    return "[" + ", ".join(f"{p.name}: {why}" for p, why in problems) + "]"


class NoSnapshotInFolder(FileNotFoundError):
    """A folder holds no snapshot-named file at all (as opposed to only ones that do not read)."""


def newest_if_folder(path):
    """`path` itself, or for a run folder its newest complete snapshot (FileNotFoundError if none,
    naming the snapshot-named files there that are cut off; NoSnapshotInFolder if there are none)."""
    if not Path(path).is_dir():
        return path
    good, _, skipped, odd = _scan(path, PATTERN, clean=False, stale_s=0)
    if not good:
        if skipped or odd:
            raise FileNotFoundError(_nothing_reads(path, skipped, odd, resuming=False))
        raise NoSnapshotInFolder(f"{path}: no snapshot-*.pt in this folder; pass a snapshot or .pkl file")
    return good[-1]


def find_latest(folder, pattern=PATTERN, clean=True, stale_s=60.0):
    """Path of the newest complete snapshot in `folder` (highest image counter), or None.

    Leftover temporary files from a killed save (`.snapshot-*.pt.tmp-*` untouched for `stale_s`
    seconds) are deleted when `clean`; snapshot-named files that are cut off are skipped (and
    kept, in case they matter to someone). Both are counted in a warning.
    """
    if not Path(folder).is_dir():
        return None
    good = _scan(folder, pattern, clean, stale_s)[0]
    return good[-1] if good else None


def find_resumable(folder, clean=True, stale_s=60.0, map_location="cpu"):
    """(path, loaded snapshot, skipped) of the newest snapshot in `folder` that loads, for resuming.

    `skipped` lists (path, what is wrong) for each snapshot-named file newer than it that does not
    read (empty, cut off, damaged contents), newest first; they are left in place. (None, None, [])
    when the folder holds no snapshot at all. A folder whose snapshots all fail to read raises
    LoadError naming each file and what to do: it holds a run, which starting over would overwrite.
    """
    if not Path(folder).is_dir():
        return None, None, []
    good, _, cut, odd = _scan(folder, PATTERN, clean, stale_s)
    failed = []
    for path in reversed(good):
        try:
            snap = load_snapshot(path, map_location=map_location)
        except LoadError as e:  # whole by its ZIP directory, damaged inside
            failed.append((path, str(e).replace(f"{path}: ", "", 1)))
            continue
        newer = [pw for pw in cut if snapshot_counter(pw[0]) > snapshot_counter(path)]
        return path, snap, _newest_first(failed + newer)
    if failed or cut or odd:
        raise LoadError(_nothing_reads(folder, _newest_first(failed + cut), odd))
    return None, None, []


def _newest_first(problems):
    return sorted(problems, key=lambda pw: _in_counter_order(pw[0]), reverse=True)


def _nothing_reads(folder, problems, odd, resuming=True):
    lines = [f"  {p.name}: {why}" for p, why in problems]
    lines += [f"  {p.name}: a copy, not named snapshot-NNNNNNNNN.pt (rename it to use it)" for p in odd]
    return (f"{folder}: no snapshot there can be read:\n" + "\n".join(lines) + "\nA file cut off by an "
            "interrupted save, upload or copy: copy it again from where it came from (on Google Drive: wait "
            "until it has synced, or restore an earlier version of it), or move these files out of the "
            "folder." + (" To start a new run instead, use another --outdir." if resuming else ""))


def prune(folder, keep_last=5, keep_every_kimg=None, pattern=PATTERN, keep=()):
    """Delete old complete snapshots; returns the deleted paths.

    Keeps the `keep_last` newest and, if `keep_every_kimg` is set, the first snapshot in each
    interval of that many kimg (so a long run keeps e.g. one snapshot per 1000 kimg, and its first
    one, the first of the interval from 0). The newest
    is always kept, whatever `keep_last` says: it may be the only complete snapshot there is. So
    are the paths in `keep` (the snapshot a run has just written: a damaged newer file that a
    resume skipped still looks newest by its name).
    """
    good = _scan(folder, pattern, clean=False, stale_s=0)[0]
    protected = {Path(p).resolve() for p in keep}
    keep = set(good[-max(int(keep_last), 1):]) | {p for p in good if p.resolve() in protected}
    if keep_every_kimg:
        seen = set()
        for p in good:
            bucket = snapshot_counter(p) // max(int(round(keep_every_kimg * 1000)), 1)
            if bucket not in seen:
                seen.add(bucket)
                keep.add(p)
    deleted = [p for p in good if p not in keep]
    for p in deleted:
        p.unlink(missing_ok=True)
    return deleted
