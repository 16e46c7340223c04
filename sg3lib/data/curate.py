"""`curate()` / `sg3 curate`: a messy folder (or zip) of images -> a clean training dataset.

Pipeline: list files in a fixed order -> worker processes decode, convert, filter, square,
resize and PNG-encode each image (sg3lib.data.images) -> the main process keeps the input
order, drops exact and near duplicates (sg3lib.data.dedupe), writes accepted images into
the dataset as they arrive (sg3lib.data.writer.DatasetWriter: temporary name, renamed
when complete) and logs every file under one reason (sg3lib.data.report). A worker
process that dies (killed for memory, a decoder crash) costs only the file it died on.
Once max_images are kept the workers stop; the files left are reported without being read.
Memory stays bounded: at most a small window of images is in flight, and the duplicate
indexes hold only hashes.
"""
import argparse
import collections
import io
import itertools
import numbers
import os
import signal
import stat
import sys
import time
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from PIL import Image, ImageColor

from ..cpus import usable_cpus
from ..files import check_folder_writable, user_path
from . import images as im
from .writer import DatasetWriter, check_dest_name, check_replaceable, why_not_a_dataset, zip_file_names
from .dedupe import ExactIndex, NearIndex
from .report import Report


class CurateError(ValueError):
    """Bad arguments or paths; the message names the path and what to do."""


DEFAULTS = dict(
    channels=3,            # 3 (RGB) or 1 (grayscale)
    square="crop",         # crop | pad | reflect | none (non-square images are then rejected)
    background="white",    # colour under transparent pixels
    pad_color=None,        # colour of square='pad' borders; None = background
    labels=None,           # None | 'folders' (class = first sub-folder under src)
    min_size=32,           # reject when the shorter side is below this (px); None = off
    min_bytes=100,         # reject files smaller than this (bytes); zero-byte files always are
    max_aspect=2.0,        # reject when long/short side ratio exceeds this; None = off
    max_upscale=2.0,       # reject when the squared image must be enlarged more than this; None = off
    min_colors=8,          # reject images with fewer distinct colours (blank / flat); None = off
    reject_grayscale=False,  # with channels=3, reject images without colour
    dedupe=True,           # exact duplicates (hash of decoded pixels)
    near_dup_threshold=4,  # perceptual-hash Hamming distance counted as a near duplicate; None = off
    max_pixels=im.DEFAULT_MAX_PIXELS,  # decompression-bomb limit (pixels in the header)
    fast_jpeg=True,        # decode big JPEGs at a reduced DCT scale >= 2x the target
    png_compress_level=0,  # 0 like the official tool (fast to read); 9 for small files
    max_images=None,       # stop after this many accepted images (the rest is not read)
)


def _settings(resolution, options):
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise CurateError(f"unknown curate option(s): {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(DEFAULTS)}")
    s = dict(DEFAULTS, **options)
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise CurateError(f"resolution must be a power of two >= 4 (StyleGAN's synthesis network doubles "
                          f"the image size at every stage), got {resolution!r}; e.g. 64, 128, 256, 512 or 1024")
    if s["channels"] not in (1, 3):
        raise CurateError(f"channels must be 1 or 3, got {s['channels']!r}")
    if s["square"] not in ("crop", "pad", "reflect", "none"):
        raise CurateError(f"square must be crop, pad, reflect or none, got {s['square']!r}")
    if s["labels"] not in (None, "folders"):
        raise CurateError(f"labels must be None or 'folders', got {s['labels']!r}")
    m = s["max_images"]  # any whole number (numpy's too, as workers takes), not True
    if m is not None and (isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1):
        raise CurateError(f"max_images (--max-images) must be a whole number >= 1 (None, or leaving the option out: "
                          f"all), got {s['max_images']!r}")
    s["max_images"] = None if m is None else int(m)  # (the report is JSON)
    for key in ("max_aspect", "max_upscale"):  # ratios: a nan compared False and turned the filter off
        v = s[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not 1 <= v < float("inf")):
            raise CurateError(f"{key} (--{key.replace('_', '-')}) must be a finite ratio >= 1 (or None / 0 on "
                              f"the command line: off), got {v!r}")
    _check_counts(s)
    _check_combinations(s)
    s["pad_color"] = s["background"] if s["pad_color"] is None else s["pad_color"]
    for key in ("background", "pad_color"):
        c = s[key]
        try:
            s[key] = tuple(ImageColor.getrgb(c))[:3] if isinstance(c, str) else tuple(int(v) for v in c)[:3]
            assert len(s[key]) == 3
        except (ValueError, TypeError, AssertionError):
            raise CurateError(f"{key} must be a colour name, '#rrggbb' or an (r, g, b) tuple, got {c!r}")
    s["resolution"] = resolution
    return s


def _whole(v):
    return not isinstance(v, bool) and isinstance(v, numbers.Integral)


def _check_counts(s):
    """Numbers whose wrong value rejects every image (as 'error' or 'decompression_bomb'), found at the end."""
    mp, level, t = s["max_pixels"], s["png_compress_level"], s["near_dup_threshold"]
    if not _whole(mp) or mp < 1:
        raise CurateError(f"max_pixels (--max-pixels) must be a whole number of pixels >= 1, got {mp!r}: it "
                          "refuses decompression bombs and has no 'off'; raise it for huge photos "
                          f"(default {im.DEFAULT_MAX_PIXELS})")
    if not _whole(level) or not 0 <= level <= 9:
        raise CurateError(f"png_compress_level (--png-compress-level) must be a whole number from 0 to 9, "
                          f"got {level!r}")
    if t is not None and (not _whole(t) or not 0 <= t <= 32):
        raise CurateError(f"near_dup_threshold (--near-dup) must be a whole number of bits from 0 to 32 (or None, -1 "
                          f"on the command line: off), got {t!r}; unrelated images' 64-bit hashes differ in about 32 "
                          "bits, so a larger one calls them near duplicates")
    for key in ("min_size", "min_bytes", "min_colors"):  # a negative (or nan) one compared False: off, silently
        v = s[key]
        if v is not None and (not _whole(v) or v < 0):
            raise CurateError(f"{key} (--{key.replace('_', '-')}) must be a whole number >= 0 (0 or None: off), "
                              f"got {v!r}")
        s[key] = None if v is None else int(v)
    s["max_pixels"], s["png_compress_level"] = int(mp), int(level)
    s["near_dup_threshold"] = None if t is None else int(t)


def _check_combinations(s):
    """Options that do nothing in the mode chosen: the call has a mistake, said before the work."""
    if s["reject_grayscale"] and s["channels"] == 1:
        raise CurateError("reject_grayscale (--reject-grayscale) rejects images without colour, but channels=1 "
                          "(--channels 1) makes a grey dataset, where it does nothing; drop one of the two")
    if s["pad_color"] is not None and s["square"] != "pad":
        raise CurateError(f"pad_color (--pad-color) colours the borders that square='pad' (--square pad) adds, but "
                          f"square is {s['square']!r}, which adds none; use --square pad or drop --pad-color")
    if not s["dedupe"] and s["near_dup_threshold"] is not None:
        raise CurateError(f"dedupe=False (--no-dedupe) keeps exact duplicates, but the near-duplicate filter "
                          f"(near_dup_threshold={s['near_dup_threshold']}, --near-dup) still rejects them (an exact "
                          "copy is 0 bits away); turn it off as well: near_dup_threshold=None (--near-dup -1)")


# -- input listing (streamed, deterministic order) -----------------------------------------

def _walk(root, unlisted=None):
    """Relative posix paths of every file under root, sorted per directory (no full list kept).
    Linked folders are followed (a link back into its own chain is not, so loops end);
    dangling links and loops are yielded too, so that the report lists them. A sub-folder
    that cannot be listed is yielded as 'name/', reported as unreadable_folder; the reason
    goes to `unlisted` ('name/' -> reason), so that nobody lists it again to find out why."""
    def rec(d, rel, chain):
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if not rel:  # the source itself: curate() says so before it starts
                raise
            if unlisted is not None:
                unlisted[rel] = e.strerror or type(e).__name__
            yield rel
            return
        for e in entries:
            r = f"{rel}{e.name}"
            if _is_dir(e):
                real = os.path.realpath(e.path)
                if real not in chain:
                    yield from rec(e.path, r + "/", chain | {real})
                    continue
            yield r  # a file, a link, or a FIFO, socket or device (reported, never opened: a FIFO would block)
    yield from rec(root, "", frozenset([os.path.realpath(root)]))


def _is_dir(entry):
    try:
        return entry.is_dir()
    except OSError:  # a link loop (l1 -> l2 -> l1), a link into a folder we may not enter: a file to report
        return False


def _in_folder_order(names):
    """Sorted as a folder walk sorts them (folder by folder): 'Summer/x' before 'Summer 2/x', so that a
    folder and a zip of it give the same dataset (' ' and '-' sort before '/' in whole names)."""
    return sorted(names, key=lambda n: n.split("/"))


def _is_labelled_image(rel):
    """Does `rel` make its top-level folder a class? Only files named as images do: a folder of
    notebooks (.ipynb_checkpoints/), an unreadable folder or macOS metadata is no class."""
    return "/" in rel and _by_name(rel) is None


def _list_source(src):
    """(count, iterator factory, class names) for a folder or a zip."""
    if src.is_dir():
        count, classes = 0, set()
        try:
            for r in _walk(src):
                count += 1
                if _is_labelled_image(r):
                    classes.add(r.split("/", 1)[0])
        except OSError as e:
            raise CurateError(f"cannot read the source folder {src} ({e.strerror}); check its permissions")
        return count, (lambda unlisted=None: _walk(src, unlisted)), sorted(classes)
    with zipfile.ZipFile(src) as z:
        names = _in_folder_order(zip_file_names(z)[0])
    classes = sorted({n.split("/", 1)[0] for n in names if _is_labelled_image(n)})
    return len(names), (lambda unlisted=None: iter(names)), classes


# -- per-image work (runs in worker processes) ---------------------------------------------

_W = {}  # worker state: settings and an open zip handle (one per process)


def _init_worker(src, settings):
    _W.clear()
    _W.update(src=src, s=settings, zip=None)


def _init_pool_worker(init, src, settings):
    """A pool process ignores SIGINT: a terminal's Ctrl-C and a notebook's interrupt reach every
    process of the group, and each worker would end with a traceback of its own; the main process
    takes the interrupt and stops the pool. (`init` is passed in, so that it is the one named at
    the pool's start in spawned workers too.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init(src, settings)


def _read(rel):
    src = _W["src"]
    if src.is_dir():
        mode = os.stat(src / rel).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
                    "a folder that leads back into one being read (a loop)" if stat.S_ISDIR(mode) else "a device")
            raise im.Reject("error", f"{kind}, not a file: not read")
        with open(src / rel, "rb") as f:
            return f.read()
    if _W["zip"] is None:
        _W["zip"] = zipfile.ZipFile(src)
        _W["zip_names"] = zip_file_names(_W["zip"])[1]
    try:
        return _W["zip"].read(_W["zip_names"].get(rel, rel))
    except NotImplementedError:  # zipfile's words name neither the method nor a fix
        raise im.Reject("error", "stored with a compression method Python's zipfile does not read (e.g. "
                                 "Deflate64 or PPMd, as Windows and 7-Zip write large zips); re-zip the source "
                                 "with Store or Deflate, or unpack it and curate the folder") from None
    except RuntimeError as e:
        if "encrypted" not in str(e):
            raise
        raise im.Reject("error", "encrypted (the zip has a password); unpack it and curate the folder, or "
                                 "re-zip it without one") from None


def _by_name(rel):
    """The rejection that a file's name alone decides (nothing read), or None."""
    ext = os.path.splitext(rel)[1].lower()
    if rel.endswith("/"):  # the main process adds the scan's reason (_unreadable_detail)
        return im.Reject("unreadable_folder")
    if im.is_macos_metadata(rel):  # not images, though named like them (`._photo.jpg`)
        return im.Reject("macos_metadata", "macOS metadata (__MACOSX/ or ._ file), not an image")
    if ext in im.UNREAD_IMAGE_TYPES and ext not in im.IMAGE_EXTS:
        how = im.UNREAD_ADVICE.get(ext, "")
        return im.Reject("unsupported_format", f"{im.UNREAD_IMAGE_TYPES[ext]} ({ext}) is not read by curate; "
                                               f"{how + ', or ' if how else ''}convert these files to PNG or JPEG first")
    if ext not in im.IMAGE_EXTS:
        return im.Reject("not_an_image_extension", f"extension {ext or '(none)'!r} is not an image type")
    return None


def _process(rel):
    """One file -> dict(status='ok', png, pixel_hash, phash, size, notes) or a rejection."""
    s, notes = _W["s"], []
    try:
        by_name = _by_name(rel)
        if by_name is not None:
            raise by_name
        data = _read(rel)
        if len(data) == 0:
            raise im.Reject("empty_file", "0 bytes")
        if s["min_bytes"] and len(data) < s["min_bytes"]:
            raise im.Reject("file_too_small", f"{len(data)} bytes < min_bytes={s['min_bytes']}")
        R = s["resolution"]
        img, orig = im.decode(data, s["max_pixels"], (2 * R, 2 * R) if s["fast_jpeg"] else None, notes)
        del data
        img = im.to_rgb_or_l(img, s["channels"], s["background"], notes)
        return _filter_and_pack(img, s, notes, _oriented(orig, img.size))
    except im.Reject as r:
        return dict(status=r.reason, detail=r.detail, notes=notes, thumb=getattr(r, "thumb", None))
    except Exception as e:  # never crash on one odd file: report it
        return dict(status="error", detail=f"{type(e).__name__}: {e}", notes=notes, thumb=None)


def _unreadable_detail(why):
    return (f"folder skipped, none of its files were read ({why or 'it could not be listed'}); "
            "fix its permissions and curate again to include them")


def _oriented(orig, size):
    """The file's own (w, h), not the JPEG draft's, turned like the decoded image (EXIF)."""
    return tuple(orig[::-1]) if (orig[0] - orig[1]) * (size[0] - size[1]) < 0 else tuple(orig)


def _filter_and_pack(img, s, notes, size):
    R, (w, h) = s["resolution"], size  # size/aspect filters judge the file, not a reduced decode
    try:
        if s["min_size"] and min(w, h) < s["min_size"]:
            raise im.Reject("too_small", f"{w}x{h}, shorter side < min_size={s['min_size']}")
        if s["max_aspect"] and max(w, h) / min(w, h) > s["max_aspect"]:
            raise im.Reject("aspect_ratio", f"{w}x{h}, ratio {max(w, h) / min(w, h):.2f} > max_aspect={s['max_aspect']}")
        if s["min_colors"]:
            n = im.count_colors(img)
            if n < s["min_colors"]:
                raise im.Reject("monochrome", f"{n} distinct colour(s) < min_colors={s['min_colors']}")
        if s["reject_grayscale"] and im.is_grayscale(img):  # (with channels=3: _check_combinations)
            raise im.Reject("grayscale", "no colour in a colour dataset")
        digest = im.pixel_hash(img) if s["dedupe"] else None
        img = im.square(img, s["square"], s["pad_color"], fit=R)
        if s["max_upscale"] and R / img.size[0] > s["max_upscale"]:
            raise im.Reject("upscale", f"{img.size[0]} px -> {R} px is x{R / img.size[0]:.2f} > max_upscale={s['max_upscale']}")
    except im.Reject as r:
        r.thumb = _thumb_bytes(img)
        raise
    img = im.resize(img, R)
    ph = im.phash(img) if s["near_dup_threshold"] is not None else None
    return dict(status="ok", png=im.png_bytes(img, s["png_compress_level"]), pixel_hash=digest,
                phash=ph, size=[w, h], notes=notes)


def _thumb_bytes(img):
    t = im.thumbnail(img)
    buf = io.BytesIO()
    t.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _process_chunk(rels):
    return [_process(r) for r in rels]


def _results(src, settings, names, workers, chunk):
    """Yield (rel, result) in input order; at most ~2 chunks per worker are in flight."""
    def chunks():
        buf = []
        for r in names:
            buf.append(r)
            if len(buf) == chunk:
                yield buf
                buf = []
        if buf:
            yield buf

    if workers <= 0:  # one file at a time: nothing is decoded ahead of what is used
        _init_worker(src, settings)
        for rel in names:
            yield rel, _process(rel)
        return
    todo = chunks()
    while todo is not None:  # a fresh pool after each worker death
        todo = yield from _run_pool(src, settings, todo, workers)


def _run_pool(src, settings, todo, workers):
    """Yield (rel, result) for the chunks of `todo` from one pool; None once all are done.
    When a worker dies (killed for lack of memory, a crash in a decoder) the pool is lost: the
    first unfinished chunk is redone one file at a time, which finds the file that kills, and
    the unfinished rest is returned, to be run in a new pool."""
    ex = ProcessPoolExecutor(workers, initializer=_init_pool_worker, initargs=(_init_worker, src, settings))
    pending = collections.deque()  # (chunk, future; None when the pool refused it)
    try:
        while True:
            _submit_more(ex, pending, todo, 2 * workers)
            if not pending:
                return None
            c0, fut = pending.popleft()
            results = _result_unless_crashed(fut)
            if results is None:
                yield from zip(c0, _one_by_one(src, settings, c0))
                return itertools.chain([c for c, _ in pending], todo)
            yield from zip(c0, results)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _submit_more(ex, pending, todo, in_flight):
    while len(pending) < in_flight:
        c = next(todo, None)
        if c is None:
            return
        try:
            fut = ex.submit(_process_chunk, c)
        except BrokenProcessPool:  # lost already: the chunk is kept, to be redone
            fut = None
        pending.append((c, fut))


def _result_unless_crashed(fut):
    try:
        return None if fut is None else fut.result()
    except BrokenProcessPool:
        return None


def _one_by_one(src, settings, chunk):
    """Each file of `chunk` alone in a single worker; a file whose worker dies again is rejected."""
    out, ex = [], None
    try:
        for rel in chunk:
            if ex is None:
                ex = _single_worker(src, settings)
            r = _result_unless_crashed(ex.submit(_process_chunk, [rel]))
            if r is None:
                ex.shutdown()
                ex = None
            out.append(_crashed(rel) if r is None else r[0])
    finally:
        if ex is not None:
            ex.shutdown()
    return out


def _single_worker(src, settings):
    """A one-process pool that has shown it can start (else every file would be blamed)."""
    ex = ProcessPoolExecutor(1, initializer=_init_pool_worker, initargs=(_init_worker, src, settings))
    if _result_unless_crashed(ex.submit(_process_chunk, [])) is None:
        ex.shutdown()
        raise CurateError("curation worker processes die before they process any file; run with workers=0 "
                          "(--workers 0) to see the error in this process")
    return ex


def _crashed(rel):
    return dict(status="worker_crashed", notes=[], thumb=None,
                detail="the worker process died on this file, also when it ran alone (out of memory, or a crash "
                       "in an image decoder); the other files were redone; if memory ran out, use fewer "
                       "workers or a lower max_pixels")


# -- the public function ------------------------------------------------------------------

def curate(src, dest, resolution, workers=None, report_dir=None, overwrite=False, progress=True, **options):
    """Curate the images under `src` (folder tree or .zip) into the dataset `dest`.

    dest ending in .zip -> the official dataset zip (uncompressed PNGs, ZIP_STORED,
    `00000/img00000000.png`, dataset.json); otherwise a folder of the same layout.
    Options (see DEFAULTS): channels, square, background, pad_color, labels='folders', min_size,
    min_bytes, max_aspect, max_upscale, min_colors, reject_grayscale, dedupe,
    near_dup_threshold, max_pixels, fast_jpeg, png_compress_level, max_images.
    The report (curation_report.json + contact sheets) goes to `report_dir`
    (default: `<dest without .zip>_report/`). Returns the report summary dict.
    """
    s = _settings(resolution, options)
    src, dest = Path(src).expanduser(), Path(dest).expanduser()
    if not src.exists():
        raise CurateError(f"source not found: {src} (give a folder of images or a .zip)")
    if not src.is_dir() and not zipfile.is_zipfile(src):
        raise CurateError(f"source {src} {why_not_a_dataset(src)}")
    try:
        check_dest_name(dest)
    except ValueError as e:
        raise CurateError(str(e)) from None
    if dest.exists() and not overwrite:
        raise CurateError(f"destination already exists: {dest}; choose another name or pass overwrite=True (--overwrite)")
    if dest.exists():
        try:
            check_replaceable(src, dest)
        except ValueError as e:
            raise CurateError(str(e)) from None
    report_dir = Path(report_dir).expanduser() if report_dir else dest.with_name(dest.stem + "_report" if dest.suffix.lower() == ".zip" else dest.name + "_report")
    for what, path in (("destination", dest), ("report folder", report_dir)):
        if src.is_dir() and path.resolve().is_relative_to(src.resolve()):  # it would be read back as input
            raise CurateError(f"the {what} {path} is inside the source folder {src}; curation would read "
                              f"its own output (temporary files, contact sheets); choose a place outside {src}")
    if dest.suffix.lower() != ".zip" and report_dir.resolve().is_relative_to(dest.resolve()):
        raise CurateError(f"the report folder {report_dir} is inside the dataset folder {dest}; its contact sheets "
                          f"would be taken for training images; choose a place outside {dest} (--report-dir)")
    try:  # checked before the scan, and created by nobody yet: a refused call leaves no folders behind
        check_folder_writable(dest.parent, "the destination (dest)")
        check_folder_writable(report_dir, "the report folder (report_dir, --report-dir)")
    except ValueError as e:
        raise CurateError(str(e)) from None
    if workers is not None and not (isinstance(workers, numbers.Integral) and workers >= 0):
        raise CurateError(f"workers={workers!r}: the number of worker processes, 0 (in this process) or more")
    workers = min(4, usable_cpus()) if workers is None else int(workers)
    chunk = max(1, min(16, (256 * 256 * 16) // (resolution * resolution)))

    total, list_names, classes = _list_source(src)
    if s["labels"] == "folders" and len(classes) < 2:
        raise CurateError(
            f"labels='folders' takes one sub-folder of {src} per class, but it has "
            + (f"only one, {classes[0]!r} (a zip of a folder looks like this)" if classes else "none")
            + "; point at the folder that holds the class folders (re-zip its contents), or curate without "
              "labels (no --labels; labels=None, 01's LABELS = None)")
    class_index = {c: i for i, c in enumerate(classes)}
    t0 = time.time()
    report = Report(report_dir)
    exact, near = ExactIndex(), (NearIndex(s["near_dup_threshold"]) if s["near_dup_threshold"] is not None else None)
    kept = []  # dataset name per accepted id, only to say what a duplicate duplicates
    from tqdm.auto import tqdm
    bar = tqdm(total=total, desc=f"curating {src.name}", unit="img", disable=not progress)
    unlisted = {}  # unreadable sub-folder -> the scan's reason
    unread_classes = set()  # class folders with files after max_images was reached
    feed = _Feed(list_names(unlisted))
    try:
        with DatasetWriter(dest, overwrite=overwrite) as writer:
            results = _results(src, s, feed, workers, chunk)
            try:
                for rel, r in results:
                    feed.done()
                    bar.update(1)
                    if r["status"] == "unreadable_folder":
                        r["detail"] = _unreadable_detail(unlisted.get(rel))
                    _handle(rel, r, s, writer, report, exact, near, kept, class_index)
                    if s["max_images"] is not None and writer.count >= s["max_images"]:
                        break
            finally:
                results.close()  # stops the workers: the files after the last image kept are not read
            for rel in feed.rest():
                bar.update(1)
                _report_unread(rel, s, report, unlisted)
                if "/" in rel:
                    unread_classes.add(rel.split("/", 1)[0])
            accepted = writer.count
            per_class = collections.Counter(writer.labels)  # label index -> images kept
            if accepted:
                writer.close(class_names=classes if s["labels"] == "folders" else None)
            else:
                writer.abort()
    except BaseException:
        report.abort()
        raise
    finally:
        bar.close()
    header = dict(src=str(src), dest=str(dest), resolution=resolution, total=total,
                  accepted=report.counts.get("accepted", 0), rejected=total - report.counts.get("accepted", 0),
                  classes=classes if s["labels"] == "folders" else None,
                  images_per_class={c: per_class[i] for c, i in class_index.items()} if s["labels"] == "folders" else None,
                  settings={k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
                  workers=workers, seconds=round(time.time() - t0, 2))
    summary = report.finish(header)
    if not total:  # the wrong folder, say: nothing was refused, there was nothing
        raise CurateError(f"{src} holds no files (its sub-folders searched too), so {dest} was not written; "
                          "point at the folder or .zip that holds your images")
    if not accepted:
        raise CurateError(f"no image of {src} was accepted, so {dest} was not written; counts per reason: "
                          f"{summary['counts']}; see {summary['report_json']}")
    for c, n in (summary["images_per_class"] or {}).items():
        if not n and c in unread_classes:  # not rejected: never read
            warnings.warn(f"class {c!r} ({src / c}) has no image in {dest}: max_images={s['max_images']} images "
                          "were kept before its files were reached (they are listed as over_max_images); a "
                          "conditional run would have a class it cannot learn; raise max_images, or curate "
                          "each class separately")
        elif not n:  # its label stays (the classes are numbered as the folders): a class no image carries
            warnings.warn(f"class {c!r} ({src / c}) has no image in {dest}: none was kept (see "
                          f"{summary['report_json']}); a conditional run would have a class it cannot learn; "
                          "remove that folder and curate again to leave the class out")
    return summary


class _Feed:
    """The input names as they are handed to the workers, remembering those whose result is
    not in yet: once max_images is reached, these and the ones never handed out are the rest."""

    def __init__(self, names):
        self._names, self._out = iter(names), collections.deque()

    def __iter__(self):
        return self

    def __next__(self):
        rel = next(self._names)
        self._out.append(rel)
        return rel

    def done(self):
        self._out.popleft()

    def rest(self):
        while self._out:
            yield self._out.popleft()
        yield from self._names


def _report_unread(rel, s, report, unlisted):
    """A file after max_images was reached: what its name says, else over_max_images (not read)."""
    r = _by_name(rel)
    if r is None:
        r = im.Reject("over_max_images", f"max_images={s['max_images']} reached before this file; not used")
    elif r.reason == "unreadable_folder":
        r.detail = _unreadable_detail(unlisted.get(rel))
    report.add(r.reason, dict(path=rel, detail=r.detail))


def _handle(rel, r, s, writer, report, exact, near, kept, class_index):
    """Main-process decisions for one worker result: duplicates, labels, writing, report."""
    entry = dict(path=rel, notes=r["notes"]) if r.get("notes") else dict(path=rel)  # which file was converted how
    status = r["status"]
    label = None
    if status == "ok" and s["labels"] == "folders":
        if "/" not in rel:
            status, r["detail"] = "no_label", "file is not inside a class sub-folder (labels='folders')"
        else:
            label = class_index[rel.split("/", 1)[0]]
    ident = len(kept)
    if status == "ok" and r["pixel_hash"] is not None:
        first = exact.check(r["pixel_hash"])  # added only once accepted: ids index `kept`
        if first is not None:
            status, r["detail"] = "duplicate", f"same pixels as {kept[first]}"
    if status == "ok" and near is not None:
        hit = near.check_add(r["phash"], ident)
        if hit is not None:
            status, r["detail"] = "near_duplicate", f"perceptual hash within {hit[1]} bit(s) of {kept[hit[0]]}"
    if status == "ok":
        if r["pixel_hash"] is not None:
            exact.add(r["pixel_hash"], ident)
        name = writer.add(r["png"], label)
        kept.append(f"{rel} ({name})")
        report.add("accepted", dict(entry, name=name, label=label, size=r["size"]),
                   thumb=lambda: Image.open(io.BytesIO(r["png"])), notes=r["notes"])
        return
    if "png" in r:
        thumb = lambda: Image.open(io.BytesIO(r["png"]))
    else:
        thumb = (lambda: Image.open(io.BytesIO(r["thumb"]))) if r.get("thumb") else None
    report.add(status, dict(entry, detail=r.get("detail", "")), thumb=thumb, notes=r.get("notes", ()))


# -- command line -------------------------------------------------------------------------

def add_curate_arguments(p):
    p.add_argument("src", type=user_path, help="folder of images (searched recursively) or a .zip")
    p.add_argument("dest", type=user_path, help="output: NAME.zip (official dataset zip) or a folder")
    p.add_argument("--resolution", type=int, required=True, help="output size in px, a power of two")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 = grayscale, 3 = RGB (default 3)")
    p.add_argument("--square", choices=("crop", "pad", "reflect", "none"), default="crop",
                   help="how a non-square image is made square (default crop: the centre); none rejects it")
    p.add_argument("--background", default="white", help="colour under transparent pixels (default white)")
    p.add_argument("--pad-color", default=None, help="colour of --square pad borders (default: --background)")
    p.add_argument("--labels", choices=("folders",), default=None, help="class labels from sub-folder names")
    p.add_argument("--min-size", type=int, default=DEFAULTS["min_size"], help="reject a shorter side below this, px (default %(default)s; 0 = off)")
    p.add_argument("--min-bytes", type=int, default=DEFAULTS["min_bytes"],
                   help="reject smaller files, bytes (default %(default)s; 0 = off)")
    p.add_argument("--max-aspect", type=float, default=DEFAULTS["max_aspect"],
                   help="reject a long/short side ratio above this, at least 1 (default %(default)s; 0 = off)")
    p.add_argument("--max-upscale", type=float, default=DEFAULTS["max_upscale"],
                   help="reject an image that must be enlarged more than this, at least 1 (default %(default)s; 0 = off)")
    p.add_argument("--min-colors", type=int, default=DEFAULTS["min_colors"],
                   help="reject an image with fewer distinct colours as monochrome (default %(default)s; 0 = off)")
    p.add_argument("--reject-grayscale", action="store_true", help="with --channels 3, reject images without colour")
    p.add_argument("--no-dedupe", action="store_true", help="keep exact duplicates")
    p.add_argument("--near-dup", type=int, default=DEFAULTS["near_dup_threshold"],
                   help="perceptual-hash Hamming distance counted as a near duplicate (default %(default)s; -1 = off)")
    p.add_argument("--max-pixels", type=int, default=DEFAULTS["max_pixels"],
                   help="refuse files claiming more pixels, decompression bombs (default %(default)s)")
    p.add_argument("--max-images", type=int, default=None, help="stop after N kept images (the rest is not read)")
    p.add_argument("--png-compress-level", type=int, default=0, choices=range(10),
                   help="0 (default, fast to read, as the official tool) to 9 (smallest)")
    p.add_argument("--workers", type=int, default=None, help="processes (default min(4, cpus)); 0 = in-process")
    p.add_argument("--report-dir", default=None, type=user_path, help="default: <dest>_report beside the dataset")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dest")


def run_curate(args):
    opts = dict(channels=args.channels, square=args.square, background=args.background, pad_color=args.pad_color,
                labels=args.labels,
                min_size=args.min_size or None, min_bytes=args.min_bytes, max_aspect=args.max_aspect or None,
                max_upscale=args.max_upscale or None, min_colors=args.min_colors or None,
                reject_grayscale=args.reject_grayscale, dedupe=not args.no_dedupe,
                near_dup_threshold=None if args.near_dup < 0 else args.near_dup, max_pixels=args.max_pixels,
                max_images=args.max_images, png_compress_level=args.png_compress_level)
    try:
        rep = curate(args.src, args.dest, args.resolution, workers=args.workers, report_dir=args.report_dir,
                     overwrite=args.overwrite, **opts)
    except (CurateError, FileExistsError) as e:
        print(f"sg3 curate: error: {e}", file=sys.stderr)
        return 2
    print(f"{rep['accepted']} of {rep['total']} images written to {rep['dest']} in {rep['seconds']} s")
    for reason, n in rep["counts"].items():
        if reason != "accepted":
            print(f"  rejected {n:6d}  {reason}")
    print(f"report: {rep['report_json']}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m sg3lib.data.curate")
    add_curate_arguments(ap)
    sys.exit(run_curate(ap.parse_args()))
