"""`sg3lib.load`: networks from an official .pkl, an sg3lib snapshot, or an http(s) URL of either.

    nets = sg3lib.load('network-snapshot-001000.pkl')      # or 'https://.../stylegan3-t-ffhq.pkl'
    G = nets['G_ema']; print(nets['meta']['arch'], nets['meta']['kimg'])

Nothing in a file is executed: official pickles go through a restricted unpickler
(`sg3lib.compat.official_pkl`), sg3lib snapshots through `torch.load(weights_only=True)`
(`sg3lib.checkpoint`). Every failure is a `LoadError` (a ValueError) naming the file and the
problem. Also the `sg3 info PATH` command (`add_info_arguments`, `run_info`).
"""
import glob
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from .files import cache_home, is_disk_full, remove_leftovers, temp_file_beside, user_path


class LoadError(ValueError):
    """A network file (or URL) could not be loaded; the message names it and says why."""


# torch reports a failed allocation as a RuntimeError ("DefaultCPUAllocator: can't allocate memory",
# "not enough memory" on Windows, "CUDA out of memory"), not as MemoryError.
_NO_MEMORY = re.compile(r"can't allocate memory|not enough memory|out of memory", re.I)


def short_of_memory(path, e):
    """A MemoryError naming `path` if `e`, raised while reading it, says this machine ran out of memory
    (the file is not at fault: taken for a damaged one, a resume would go back to an older snapshot),
    else None."""
    if not (isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and _NO_MEMORY.search(str(e)))):
        return None
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return MemoryError(f"{path}: not enough memory to load it ({first}); the file itself may well be whole. "
                       "Free memory (close other notebooks or programs) and try again, or load it where "
                       "there is more (map_location='cpu' for a GPU that is full)")


NETWORK_KEYS = ("G", "D", "G_ema")
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_HTML_ADVICE = ("The server sent a web page instead of the file (a login, quota, error or "
                "'cannot scan for viruses' page; Google Drive does this for large or private files). "
                "Use a direct download link (Drive: share as 'Anyone with the link' and download with "
                "gdown, or download in a browser) and pass the local path.")


# ---------------------------------------------------------------------------------------------
# URLs

def cache_dir():
    """Download cache: downloads/ in sg3lib's cache folder (sg3lib.files.cache_home), beside kernels/."""
    return cache_home() / "downloads"


def _is_url(x):
    return isinstance(x, str) and re.match(r"^https?://", x, re.I) is not None


def _looks_html(head):
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


STALE_DOWNLOAD_S = 600  # a live download writes at least every 60 s (the read timeout)


def _remove_stale_downloads(dest):
    """Delete what killed downloads of `dest` left (a Colab disconnect leaves hundreds of MB in the
    cache otherwise); one still being written by another process is younger than STALE_DOWNLOAD_S."""
    remove_leftovers(dest.parent, f".{glob.escape(dest.name)}.tmp-*", STALE_DOWNLOAD_S,
                     "leftover file(s) of interrupted downloads")


_PRIVATE = ("the file is not public: share it publicly, or download it in a browser and pass the local path")
_LFS_POINTER = b"version https://git-lfs"


def _check_first_bytes(url, chunk):
    """What a server sends with HTTP 200 that is no network file, refused before it is cached (cached,
    every later load failed on it, and 'delete the cached file' brought the same back)."""
    if chunk.startswith(_LFS_POINTER):
        raise LoadError(f"{url}: the server sent a Git LFS pointer, not the file: use the address of the file "
                        "itself (GitHub: media.githubusercontent.com/media/..., Hugging Face: .../resolve/...)")
    head = chunk[:256]
    if _looks_html(head) or head.lstrip().startswith(b"<!--"):
        raise LoadError(f"{url}: the download is an HTML page, not a network file. {_HTML_ADVICE}")
    if not (head.startswith(b"\x80") or head.startswith(b"PK")):  # a pickle, or a torch zip
        shown = head[:60].decode("utf-8", "replace").replace("\n", " ")
        raise LoadError(f"{url}: the download is not a network file (it starts with {shown!r}): an error page "
                        "or a quota message? Check the address in a browser")


def download(url, progress=True):
    """Download `url` once into the cache (temporary name, then rename); returns the local Path."""
    from tqdm.auto import tqdm

    folder = cache_dir()
    base = re.sub(r"[^A-Za-z0-9._-]", "_", _file_name(url))[-80:] or "download"
    dest = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{base}"
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_downloads(dest)
        fd, tmp = temp_file_beside(dest)
    except OSError as e:  # (a raw traceback before: a read-only home, a file in the way)
        raise LoadError(f"{url}: cannot write to the download cache {folder} ({e.strerror or e}); set "
                        "SG3LIB_CACHE to a folder you can write to") from None
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "sg3lib"})
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(req, timeout=60) as resp:
            ctype = resp.headers.get("Content-Type", "")
            if "text/html" in ctype.lower():
                raise LoadError(f"{url}: got an HTML page (Content-Type {ctype}), not a network file. {_HTML_ADVICE}")
            total = resp.length or None  # (parsed by http.client: a malformed Content-Length is None)
            free = shutil.disk_usage(folder).free
            if total is not None and total > free:
                raise LoadError(f"{url}: the file ({total:,} bytes) does not fit in {folder} ({free:,} bytes "
                                "free); free space there or set SG3LIB_CACHE to a bigger disk")
            done = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=base, disable=not progress) as bar:
                while True:
                    try:  # read1: what has arrived (read(n) waits for all n: a slow link wrote nothing for
                        chunk = resp.read1(1 << 20)  # minutes, and another process took it for dead)
                    except http.client.IncompleteRead as e:  # chunked transfer: the connection closed early
                        raise LoadError(f"{url}: the download was cut off ({done + len(e.partial):,} bytes, then the "
                                        "connection closed). Check the connection, then try again.") from None
                    if not chunk:
                        break
                    if done == 0:
                        _check_first_bytes(url, chunk)
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
            if total is not None and done < total:
                raise LoadError(f"{url}: the download was cut off ({done:,} of {total:,} bytes). "
                                "Check the connection and free disk space, then try again.")
            if done == 0:
                raise LoadError(f"{url}: the server sent an empty file")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        reason = str(e.reason).splitlines()[0] if str(e.reason).strip() else ""
        if "infinite loop" in str(e) or "redirect" in str(e.msg).lower():
            raise LoadError(f"{url}: too many redirects (HTTP {e.code}); the address does not lead to a file") from None
        advice = {404: "check the address", 410: "check the address", 401: _PRIVATE, 403: _PRIVATE,
                  429: "the server is busy: try again later"}.get(e.code, "try again later" if e.code >= 500 else "")
        raise LoadError(f"{url}: the server answered HTTP {e.code} {reason}" + (f"; {advice}" if advice else "")) from None
    except urllib.error.URLError as e:
        raise LoadError(f"{url}: could not download ({e.reason}); check the address, the connection and any "
                        "proxy (http_proxy, https_proxy)") from None
    except (http.client.HTTPException, OSError) as e:
        if is_disk_full(e):
            raise LoadError(f"{url}: not enough space in {folder} for the download; free space there or set "
                            "SG3LIB_CACHE to a bigger disk") from None
        raise LoadError(f"{url}: the download failed ({type(e).__name__}: {e}); try again") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


# ---------------------------------------------------------------------------------------------
# Files

def read_head(path, n):
    """The first n bytes of a file; a LoadError naming it where it cannot be read (no permission)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise LoadError(f"{path}: cannot read the file ({e.strerror or e}); check its permissions") from None


def sniff(path):
    """'pickle', 'torch-zip' or 'torch-legacy' from the first bytes; LoadError for anything else."""
    path = Path(path)
    if not path.exists():
        raise LoadError(f"{path}: no such file")
    if path.is_dir():
        raise LoadError(f"{path}: is a folder; pass a .pkl or .pt file (sg3lib.checkpoint.find_latest "
                        "finds the newest snapshot in a folder)")
    head = read_head(path, 512)
    if not head:
        raise LoadError(f"{path}: the file is empty (0 bytes): a failed download or copy? Get it again.")
    if _looks_html(head):
        raise LoadError(f"{path}: is an HTML web page, not a network file. {_HTML_ADVICE}")
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        raise LoadError(f"{path}: is an image, not a network file")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "torch-zip"
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch-legacy"
    if head[:1] == b"\x80":
        return "pickle"
    raise LoadError(f"{path}: not a network file sg3lib knows (it starts with {head[:16]!r}); expected "
                    "an official StyleGAN .pkl or an sg3lib snapshot .pt")


def arch_of(official_class, init_kwargs):
    """'stylegan3-t', 'stylegan3-r', 'stylegan2' or 'discriminator'."""
    if official_class.endswith("Discriminator"):
        return "discriminator"
    if "stylegan3" in official_class:
        radial = init_kwargs.get("use_radial_filters") or init_kwargs.get("conv_kernel") == 1
        return "stylegan3-r" if radial else "stylegan3-t"
    return "stylegan2"


def build(spec, source="<file>", device="cpu"):
    """An sg3lib module from {'official_class', 'init_kwargs', 'state_dict'} (strict load). The
    network is built on the meta device first (no memory) and compared with the weights: the sizes
    a file states are trusted only once weights of those sizes are in it."""
    import torch
    from . import networks

    def make():
        try:
            return networks.build_network(spec["official_class"], dict(spec["init_kwargs"]))
        except Exception as e:
            raise LoadError(f"{source}: cannot build {spec['official_class']} from its constructor arguments "
                            f"{spec['init_kwargs']}: {type(e).__name__}: {e}") from None

    _check_layer_counts(spec, source)
    with torch.device("meta"):
        _check_fits(make(), spec, source)
    _check_backed(spec["state_dict"], source)
    module = make()
    module.load_state_dict(spec["state_dict"], strict=True)
    return module.to(device).eval()


def _check_layer_counts(spec, source):
    """Every layer has weights of its own: a `num_layers` (G's mapping and SG3 synthesis, a conditional
    D's mapping) above the number of weights in the file cannot fit them. Refused before the meta build,
    which still makes one Python module per layer: 100,000 claimed in a 1 kB file took minutes."""
    def counts(kwargs):
        for key, value in kwargs.items():
            if isinstance(value, dict):
                yield from counts(value)
            elif key == "num_layers":
                yield value
    held = len(spec["state_dict"])
    for n in counts(spec["init_kwargs"]):
        if isinstance(n, int) and n > held:
            raise LoadError(f"{source}: {spec['official_class']} states num_layers={n}, but the file holds only "
                            f"{held} weights: the file is corrupt or crafted")


_UNBACKED_SLACK = 64 << 20  # weights may share a storage (a tied buffer); crafted views need more


def _check_backed(state, source):
    """The weights' sizes are the file's only if its bytes hold them: many views of one storage, or
    a zero stride (torch.load takes expand()ed tensors), would state a network of any size in kB."""
    declared = sum(t.numel() * t.element_size() for t in state.values())
    storages = {(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for t in state.values()}
    held = sum(nbytes for _, nbytes in storages)
    if declared > held + _UNBACKED_SLACK:
        raise LoadError(f"{source}: the weights state {declared:,} bytes but the file holds {held:,} bytes of "
                        "them (tensors that are views of one another or have zero strides): the file is "
                        "corrupt or crafted")


def _check_fits(module, spec, source):
    state = spec["state_dict"]
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        raise LoadError(f"{source}: the weights do not fit {spec['official_class']}: "
                        f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                        f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
                        f"shape mismatch {shapes[:5]}")


def load(path_or_url, device="cpu", progress=True):
    """Load the networks of an official .pkl, an sg3lib snapshot (or a run folder: its newest
    snapshot), or an http(s) URL of either.

    Returns {'G', 'D', 'G_ema' (whichever the file holds; modules in eval mode, G_ema with
    requires_grad False), 'meta': {'arch', 'format', 'kimg' (None if unknown), 'init_kwargs' (the
    generator's constructor kwargs), 'config' (a training run's config if the snapshot has one,
    else init_kwargs), 'networks' ({name: {'official_class', 'init_kwargs'}}), 'source', ...}}.
    Official pickles also give 'training_set_kwargs' and 'ignored' (e.g. augment_pipe) in meta;
    URLs give 'local_path' (the cached copy). Raises LoadError naming the file and the problem.
    """
    _warn_if_weights_only_is_unsafe()
    source = str(path_or_url)
    from .cli import torch_device
    try:  # before the file is read and built: 'cuda' without a GPU was torch's AssertionError at the end
        torch_device(device)
    except ValueError as e:
        raise LoadError(f"cannot load {source}: {e}") from None
    if not _is_url(source):
        path = Path(path_or_url).expanduser()
        if path.is_dir():  # a run folder, as the command line and notebooks take one: its newest snapshot
            from .checkpoint import newest_if_folder
            try:
                path = Path(newest_if_folder(path))
            except FileNotFoundError as e:
                raise LoadError(str(e)) from None
            source = str(path)
        return _load_file(path, source, device)
    path = download(source, progress=progress)
    try:
        out = _load_file(path, source, device)
    except LoadError as e:  # (the cached copy named: the message names the file by its URL)
        again = "" if "do not fit" in str(e) or "cannot build" in str(e) else "; delete it to download again"
        raise type(e)(f"{e} (downloaded from {source} to {path}{again})") from None
    out["meta"]["local_path"] = str(path)
    return out


_WARNED_OLD_TORCH = []


def _warn_if_weights_only_is_unsafe():
    """Once per process: before torch 2.6, torch.load(weights_only=True), which reads sg3lib snapshots,
    could be made to run code (CVE-2025-32434). (Official pickles, tensors included, are parsed by
    sg3lib.compat.restricted without torch.load.)"""
    import torch
    version = tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2])
    if version < (2, 6) and not _WARNED_OLD_TORCH:
        _WARNED_OLD_TORCH.append(True)
        warnings.warn(f"torch {torch.__version__}: before 2.6, torch.load(weights_only=True) has a known bypass "
                      "(CVE-2025-32434) that a crafted file can use to run code, so sg3lib's 'nothing in the file "
                      "is executed' does not hold here. Upgrade (pip install -U 'torch>=2.6') before loading "
                      "files from anyone you do not trust.", stacklevel=3)


def _file_name(source):
    """The file name of a path or URL: a URL's query (Dropbox's '?dl=1') is not part of it."""
    return Path(urllib.parse.urlparse(source).path if _is_url(source) else source).name


def _load_file(path, source, device):
    kind = sniff(path)
    if kind == "pickle":
        from .compat.official_pkl import kimg_from_name, read_official_pkl

        data = read_official_pkl(path)
        specs = data["networks"]
        meta = {"format": "official-pkl", "kimg": kimg_from_name(_file_name(source)),
                "training_set_kwargs": data["training_set_kwargs"], "ignored": data["ignored"]}
    else:
        from .checkpoint import load_snapshot

        snap = load_snapshot(path)
        specs = snap["networks"]
        meta = dict(snap.get("meta") or {})
        m = re.match(r"^snapshot-(\d+)\.pt$", _file_name(source))  # the name counts images
        meta.setdefault("kimg", int(m.group(1)) / 1000 if m else None)
        meta["format"] = "sg3lib-snapshot"
        meta["has_training_state"] = bool(snap.get("training_state"))
    out = {}
    for name, spec in specs.items():
        out[name] = build(spec, source, device)
    if "G_ema" in out:
        out["G_ema"].requires_grad_(False)
    gen = next((specs[k] for k in ("G_ema", "G") if k in specs), None)
    meta["networks"] = {k: {"official_class": s["official_class"], "init_kwargs": s["init_kwargs"]}
                        for k, s in specs.items()}
    meta["init_kwargs"] = gen["init_kwargs"] if gen else specs.get("D", {}).get("init_kwargs")
    meta.setdefault("config", meta["init_kwargs"])  # a training run's own config is kept
    meta.setdefault("arch", arch_of(gen["official_class"], gen["init_kwargs"]) if gen else "discriminator")
    meta["source"] = source
    out["meta"] = meta
    return out


# ---------------------------------------------------------------------------------------------
# sg3 info

def describe(nets):
    """A JSON-able summary of what `load` returned (what `sg3 info` prints)."""
    meta = nets["meta"]
    gen = nets.get("G_ema") if nets.get("G_ema") is not None else nets.get("G")
    info = {"source": meta.get("source"), "format": meta.get("format"), "arch": meta.get("arch"),
            "kimg": meta.get("kimg")}
    ref = gen if gen is not None else nets.get("D")
    for attr in ("img_resolution", "img_channels", "z_dim", "w_dim", "c_dim", "num_ws"):
        value = getattr(ref, attr, None) if ref is not None else None
        info[attr] = value if value is not None else (meta.get("init_kwargs") or {}).get(attr)
    # the built network's kwargs: StyleGAN2-ADA files nest channel_base in synthesis_kwargs, sg3lib's are flat
    cfg = getattr(ref, "init_kwargs", None) or meta.get("init_kwargs") or {}
    info["channel_base"], info["channel_max"] = cfg.get("channel_base"), cfg.get("channel_max")
    info["networks"] = {
        k: {"official_class": getattr(m, "official_class", meta["networks"].get(k, {}).get("official_class")),
            "parameters": sum(p.numel() for p in m.parameters()),
            "buffers": sum(b.numel() for b in m.buffers())}
        for k, m in nets.items() if k in NETWORK_KEYS}
    if meta.get("training_set_kwargs"):
        info["training_set_kwargs"] = meta["training_set_kwargs"]
    return info


def add_info_arguments(parser):
    """Add `sg3 info`'s options to argparse parser `parser`."""
    parser.add_argument("path", type=user_path, help="official .pkl, sg3lib snapshot .pt, a run folder (its newest snapshot), "
                                     "or an http(s) URL of a file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _kimg_text(kimg):
    """25000.032 as such: format(kimg, 'g') keeps 6 digits (25000, 1.23457e+06)."""
    if kimg is None:
        return "unknown"
    return f"{kimg:.3f}".rstrip("0").rstrip(".")


def run_info(args):
    """Run `sg3 info` with parsed `args`: print the summary; returns the exit status."""
    from .checkpoint import newest_if_folder
    try:  # a run folder, as sg3 generate/rank/train take one: its newest snapshot
        info = describe(load(newest_if_folder(args.path)))
    except (LoadError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    dims = ", ".join(f"{k} {info[k]}" for k in ("z_dim", "w_dim", "c_dim", "num_ws") if info[k] is not None)
    res, ch = info["img_resolution"], info["img_channels"]
    lines = [f"file          {info['source']}",
             f"format        {info['format']}",
             f"architecture  {info['arch']}",
             f"kimg          {_kimg_text(info['kimg'])}",
             f"resolution    {res}x{res}, {ch} channel{'s' if ch != 1 else ''}",
             f"channels      base {info['channel_base']}, max {info['channel_max']}",
             f"dims          {dims}"]
    for k, n in info["networks"].items():
        lines.append(f"{k:<6}        {n['parameters']:>12,} parameters  {n['buffers']:>10,} buffer values  "
                     f"{n['official_class']}")
    if "training_set_kwargs" in info:
        lines.append(f"training set  {json.dumps(info['training_set_kwargs'])}")
    print("\n".join(lines))
    return 0
