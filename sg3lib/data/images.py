"""Decode one image file fully and turn it into a clean square uint8 image.

Every function here works on one image and raises `Reject(reason, detail)` when the image
cannot or should not be used; curate.py counts those, it never crashes on them.
Order of work (each step explained where it happens): check bytes -> identify format ->
refuse decompression bombs from the header -> full decode -> EXIF orientation -> ICC to
sRGB -> mode conversion (16-bit, CMYK, palette, alpha over background) -> filters ->
square -> Lanczos resize.
"""
import contextlib
import hashlib
import io
import re
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, features


def _pillow_reads_avif():
    """Pillow decodes AVIF from 11.2 on, where its build has libavif (older ones warn: unknown feature)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(features.check("avif"))
        except Exception:
            return False


def _pillow_reads_heif():
    """HEIC/HEIF (a phone camera's photos) through the pillow-heif plugin, where it is installed
    (pip install pillow-heif, or sg3lib's [heif] extra). It turns images upright as it decodes them
    (and sets their EXIF orientation to 1)."""
    try:
        import pillow_heif
        pillow_heif.register_heif_opener()
        return True
    except Exception:  # not installed, or a build that does not load
        return False


_AVIF = _pillow_reads_avif()
_HEIF = _pillow_reads_heif()
# .jfif/.jpe/.jif are JPEG files too (browsers on Windows save many downloads as .jfif).
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".webp", ".bmp", ".dib", ".tif", ".tiff",
              ".gif") + ((".avif",) if _AVIF else ()) + ((".heic", ".heif") if _HEIF else ())
FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "TIFF", "GIF"} | ({"AVIF"} if _AVIF else set()) \
    | ({"HEIF"} if _HEIF else set())
# Image types that are not read here, by extension: the report names the format, not "not an image".
UNREAD_IMAGE_TYPES = {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".jxl": "JPEG XL", ".jp2": "JPEG 2000",
                      ".j2k": "JPEG 2000", ".svg": "SVG", ".psd": "Photoshop", ".ico": "ICO", ".tga": "TGA",
                      ".ppm": "Netpbm", ".pgm": "Netpbm", ".dng": "camera raw", ".cr2": "camera raw",
                      ".nef": "camera raw", ".arw": "camera raw"}
UNREAD_ADVICE = {".heic": "pip install pillow-heif to read them", ".heif": "pip install pillow-heif to read them"}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own bomb limit (about 0.25 GiB of RGBA)


def is_macos_metadata(rel):
    """macOS's zip and copy leftovers: `__MACOSX/` folders and `._name` AppleDouble files."""
    return rel.startswith("__MACOSX/") or rel.rsplit("/", 1)[-1].startswith("._")


class Reject(Exception):
    """An image that is not used, with the report bucket it goes to and a human detail."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def check_png_crc(data):
    """Verify every PNG chunk checksum (Pillow skips the CRC of IDAT chunks)."""
    pos = 8
    while pos + 12 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise Reject("corrupt", f"PNG chunk {ctype!r} runs past the end of the file (truncated)")
        crc = struct.unpack(">I", data[end - 4:end])[0]
        if zlib.crc32(data[pos + 4:end - 4]) & 0xFFFFFFFF != crc:
            raise Reject("corrupt", f"PNG chunk {ctype.decode('latin-1')} has a bad CRC checksum")
        if ctype == b"IEND":
            return
        pos = end
    raise Reject("corrupt", "PNG file ends without an IEND chunk (truncated)")


@contextlib.contextmanager
def _pillow_pixel_limit(max_pixels):
    """Pillow's bomb limit raised to max_pixels inside the block only: Pillow reads a module
    global (when opening, and for GIF frames when loading), so the process's own setting is
    put back after each image."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or max_pixels <= limit:  # Pillow's check is no stricter than ours
        yield
        return
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


_FORMAT_NAMES = "png/jpeg/webp/bmp/tiff/gif" + ("/avif" if _AVIF else "") + ("/heif" if _HEIF else "")
_BOMB_ADVICE = "If the file is a genuine large photo, raise the limit: --max-pixels (curate(max_pixels=...))."


def decode(data, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None, notes=None):
    """Fully decode `data` (bytes) to a loaded PIL image (frame 0 for animations and
    multi-page files, noted as 'first_frame_only' in `notes`).

    `draft_size` lets JPEG decode at a reduced DCT scale that still covers that size
    (the whole stream is still decoded, so truncation is still caught). Returns
    (image, original_size), original_size being the file's own (w, h) before any draft.
    """
    if len(data) == 0:
        raise Reject("empty_file", "0 bytes")
    with warnings.catch_warnings(), _pillow_pixel_limit(max_pixels):
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            # (Pillow's text names its own limit, twice max_pixels for an error: say ours)
            claimed = re.search(r"\((\d+) pixels\)", str(e))
            raise Reject("decompression_bomb", f"{claimed[1] + ' pixels' if claimed else 'more pixels'} > limit "
                                               f"{max_pixels}. {_BOMB_ADVICE}")
        except Image.UnidentifiedImageError:
            if data[:4] in (b"II*\0", b"MM\0*"):  # a TIFF whose sample layout Pillow cannot decode
                raise Reject("unsupported_format", "a TIFF whose pixel layout Pillow cannot read (e.g. 32-bit "
                             "float RGB, an HDR merge): convert it to 8- or 16-bit RGB first")
            raise Reject("not_an_image", "not a format Pillow can identify")
        except Exception as e:  # bad header checksums etc.
            raise Reject("corrupt", f"{type(e).__name__}: {e}")
        if img.format not in FORMATS:
            raise Reject("unsupported_format", f"format {img.format} is not one of {_FORMAT_NAMES}")
        w, h = img.size
        # Refuse from the header, before allocating: a tiny file can claim gigapixels.
        if w * h > max_pixels:
            raise Reject("decompression_bomb", f"{w}x{h} = {w * h} pixels > limit {max_pixels}. {_BOMB_ADVICE}")
        if notes is not None and _has_more_frames(img):
            notes.append("first_frame_only")
        if img.format == "PNG":
            check_png_crc(data)
            _png_transparency_in_8_bits(img)
        if draft_size is not None and img.format == "JPEG" and img.mode in ("RGB", "L"):
            img.draft(img.mode, draft_size)
        lenient = ImageFile.LOAD_TRUNCATED_IMAGES  # a caller may have set it; a full check needs it off
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            img.load()  # the full decode: truncated data and bad zlib/JPEG streams raise here
        except Exception as e:
            raise Reject("corrupt", f"{type(e).__name__}: {e}")
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    if img.size[0] < 1 or img.size[1] < 1:
        raise Reject("corrupt", f"image has size {img.size}")
    return img, (w, h)


def _has_more_frames(img):
    """An animation (GIF, WebP, APNG) or a multi-page TIFF, of which only frame 0 is used. Asked
    before the decode (Pillow reads the next frame's header only). An MPO's second picture is a
    camera's preview or depth map, not more of the image: not counted."""
    if img.format == "MPO":
        return False
    try:
        return bool(getattr(img, "is_animated", False))
    except Exception:  # a damaged later frame: frame 0 may still decode
        return False


_GREY_TOP = {"1": 1, "L;2": 3, "L;4": 15}  # PNG raw modes of 1/2/4-bit grey -> their brightest value


def _png_transparency_in_8_bits(img):
    """Pillow widens 1/2/4-bit grey PNG pixels to 0-255, and narrows 16-bit RGB ones to their high
    byte, but keeps the tRNS value in the file's own bits (white is 1 in a 1-bit file; red is
    (65535, 0, 0) in a 16-bit one, which no 8-bit pixel equals): convert it the same way, so the
    right pixels go clear. (16-bit grey keeps its 16 bits: _high_bit_depth_to_8 reads tRNS there.)"""
    t = img.info.get("transparency")
    rawmode = img.tile[0][3] if img.tile else None
    top = _GREY_TOP.get(rawmode)
    if isinstance(t, int) and top is not None and 0 <= t <= top:
        img.info["transparency"] = t * 255 // top
    elif rawmode == "RGB;16B" and isinstance(t, tuple) and len(t) == 3:
        img.info["transparency"] = tuple(v >> 8 for v in t)  # (so do colours with the same high bytes)


_SRGB = None
_TRANSFORMS = {}  # per-process cache: building a colour transform costs ~ms


def _to_srgb(img, notes):
    """Convert an embedded ICC profile's colours to sRGB (skipped when it already is sRGB)."""
    icc = img.info.get("icc_profile")
    if icc and img.mode in ("P", "PA"):  # the profile describes the palette's colours
        img = img.convert("RGBA" if _has_alpha(img) else "RGB")
    if icc and img.mode in ("RGB", "L") and "transparency" in img.info:
        # a tRNS colour names stored colours, which the conversion changes (and drops): alpha first
        img = img.convert("RGBA" if img.mode == "RGB" else "LA")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        return img
    try:
        key = (hashlib.blake2b(icc, digest_size=16).digest(), img.mode)
        if key not in _TRANSFORMS:
            _TRANSFORMS[key] = _transform(icc, img.mode)
            if len(_TRANSFORMS) > 64:
                _TRANSFORMS.pop(next(iter(_TRANSFORMS)))
        transform, in_mode = _TRANSFORMS[key]
        if transform is None:
            return img
        alpha = img.getchannel("A") if img.mode == "LA" and in_mode == "L" else None
        out = ImageCms.applyTransform(img if img.mode == in_mode else img.convert(in_mode), transform)
        if alpha is not None:
            out.putalpha(alpha)
        notes.append("icc_converted")
        return out
    except Exception:  # a broken profile: keep the pixels as they are, but say so
        notes.append("icc_ignored")
        return img


def _transform(icc, mode):
    """(transform to sRGB, the mode it reads); the transform is None when the pixels are sRGB already."""
    global _SRGB
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if src.profile.xcolor_space.strip() == "RGB" and mode in ("L", "LA"):
        mode = "RGB" if mode == "L" else "RGBA"  # grey with a colour profile (convert('L') keeps it): v is (v, v, v)
    _SRGB = _SRGB or ImageCms.createProfile("sRGB")
    in_mode = {"LA": "L"}.get(mode, mode)
    out_mode = "RGBA" if in_mode == "RGBA" else "RGB"
    transform = ImageCms.buildTransform(src, _SRGB, in_mode, out_mode)
    if in_mode in ("RGB", "RGBA") and _is_identity(transform, in_mode):
        return None, mode  # sRGB already, by what it does to colours (a name such as 'sRGB-linear' is no proof)
    return transform, in_mode


def _is_identity(transform, mode):
    """Whether `transform` moves no colour of a 9x9x9 grid by more than one level."""
    levels = np.linspace(0, 255, 9).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
    if mode == "RGBA":
        grid = np.concatenate([grid, np.full(grid.shape[:2] + (1,), 255, np.uint8)], -1)
    out = np.asarray(ImageCms.applyTransform(Image.fromarray(grid), transform))  # (RGB or RGBA by its channels)
    return int(np.abs(out[..., :3].astype(int) - grid[..., :3]).max()) <= 1


def _high_bit_depth_to_8(img, samples=(None, None)):
    """16-bit and float modes to 8-bit by scaling (Pillow's convert('L') would clip at 255);
    the ICC profile stays with the pixels, a transparent grey value becomes an alpha channel."""
    bits, sample_format = samples  # (_tiff_samples of the file as opened)
    a = np.asarray(img)
    if img.mode == "I" and bits == 32 and sample_format == 1:  # unsigned: Pillow reads them as signed,
        a = a.view(np.uint32)  # so the bright half (from 2**31) came out negative, clipped to black
    a = a.astype(np.float64)
    top = a.max(initial=0)
    if img.mode == "I" and bits == 16 and sample_format == 2:  # signed 16-bit (Pillow: 'I'): 0..32767
        a = a * (255.0 / 32767)  # (/ 257 gave at most 127; negative samples clip to 0)
    elif img.mode == "I" and top > 65535:  # 32-bit samples: all white at / 257
        a = a * (255.0 / (2 ** 31 - 1 if top < 2 ** 31 and sample_format != 1 else 2 ** 32 - 1))
    elif img.mode.startswith("I;16") or (img.mode == "I" and top > 255):  # 16-bit (a PNG's grey is 'I')
        a = a / 257.0
    elif img.mode == "F" and a.max(initial=0) <= 1.0:
        a = a * 255.0
    out = Image.fromarray(np.clip(a.round(), 0, 255).astype(np.uint8))
    info = dict(img.info)
    trns = info.pop("transparency", None)
    if isinstance(trns, int):  # a PNG tRNS grey value, in the file's own 16 bits: those pixels are clear
        out = Image.merge("LA", (out, Image.fromarray(np.where(np.asarray(img) == trns, 0, 255).astype(np.uint8))))
    out.info = info
    return out


def _tiff_samples(img):
    """(bits per sample, sample format: 1 unsigned, 2 signed, 3 float) from a TIFF's tags, else (None, None)."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return None, None
    first = lambda v: v[0] if isinstance(v, tuple) and v else v  # noqa: E731 (one value per channel)
    return first(tags.get(258)), first(tags.get(339, 1))


def _unreadable_exif(img):
    """An EXIF block that gives no tag at all (cut off, garbage): Pillow then keeps the image as stored,
    without a word, whatever orientation the camera wrote."""
    raw = img.info.get("exif") or b""
    raw = raw[6:] if raw.startswith(b"Exif\0\0") else raw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(raw) and len(img.getexif()) == 0


def _has_alpha(img):
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def to_rgb_or_l(img, channels=3, background=(255, 255, 255), notes=None):
    """Any decoded image to mode 'RGB' (channels=3) or 'L' (channels=1), alpha composited
    over `background`; EXIF orientation and ICC profiles applied first."""
    notes = [] if notes is None else notes
    if img.format == "BMP" and img.mode == "RGBA" and img.getchannel("A").getextrema() == (0, 0):
        # A 32-bit BMP whose alpha is all 0 means "unused" (Windows, clipboard tools; browsers show it
        # opaque): laid over the background it would be blank.
        img = img.convert("RGB")
        notes.append("alpha_unused")
    samples = _tiff_samples(img)  # (exif_transpose's copy has no TIFF tags)
    try:
        unreadable = _unreadable_exif(img)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ('Corrupt EXIF data' where the orientation still reads)
            img = ImageOps.exif_transpose(img)
    except Exception:
        unreadable = True
    if unreadable:
        notes.append("exif_ignored")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _high_bit_depth_to_8(img, samples)
    if img.mode == "1":
        img = img.convert("L")
    img = _to_srgb(img, notes)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        img = Image.alpha_composite(bg, rgba).convert("RGB")
        notes.append("alpha_composited")
    if channels == 1:
        return img if img.mode == "L" else img.convert("RGB").convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def pixel_hash(img):
    """Exact-duplicate key: a hash of the decoded pixels (not of the file bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.mode}{img.size}".encode())
    h.update(img.tobytes())
    return h.digest()


def count_colors(img, side=128):
    """Distinct colours of a nearest-neighbour thumbnail (nearest keeps the real colours)."""
    small = img if max(img.size) <= side else img.resize(
        (min(side, img.size[0]), min(side, img.size[1])), Image.NEAREST)
    a = np.asarray(small.convert("RGB"), dtype=np.uint32)
    packed = (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]
    return int(np.unique(packed).size)


def is_grayscale(img, tol=8):
    """True when no pixel has a colour (channel spread) larger than `tol` of 255."""
    if img.mode == "L":
        return True
    a = np.asarray(img.convert("RGB").resize((64, 64), Image.BILINEAR), dtype=np.int16)
    return int((a.max(-1) - a.min(-1)).max()) <= tol


def square(img, mode="crop", pad_color=(255, 255, 255), fit=None):
    """Make the image square: 'crop' (centre), 'pad' (colour), 'reflect' (mirror the edges). With
    `fit`, an image padded or reflected whose long side is above it is first resized to that long
    side: the square of a 40000 x 1000 panorama's long side would take gigabytes, to be shrunk anyway."""
    w, h = img.size
    if w == h:
        return img
    if mode == "none":
        raise Reject("not_square", f"{w}x{h} and squaring is 'none'")
    if mode == "crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return img.crop((left, top, left + s, top + s))
    if fit and max(w, h) > fit and mode in ("pad", "reflect"):
        k = fit / max(w, h)
        img = img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.LANCZOS, reducing_gap=3.0)
        w, h = img.size
    s = max(w, h)
    if mode == "pad":
        color = tuple(pad_color)
        if img.mode == "L":  # the colour's luma, as convert('L') would give
            color = Image.new("RGB", (1, 1), color).convert("L").getpixel((0, 0))
        out = Image.new(img.mode, (s, s), color)
        out.paste(img, ((s - w) // 2, (s - h) // 2))
        return out
    if mode == "reflect":
        a = np.asarray(img)
        py, px = s - h, s - w
        pad = [(py // 2, py - py // 2), (px // 2, px - px // 2)] + [(0, 0)] * (a.ndim - 2)
        return Image.fromarray(np.pad(a, pad, mode="symmetric"))
    raise ValueError(f"unknown squaring mode {mode!r}; use crop, pad, reflect or none")


def resize(img, resolution):
    """Exact resize to resolution x resolution with Lanczos (reducing_gap keeps big
    downscales fast: a box reduction first, then Lanczos over the last factor of 3)."""
    if img.size == (resolution, resolution):
        return img
    return img.resize((resolution, resolution), Image.LANCZOS, reducing_gap=3.0)


_DCT = None


def phash(img):
    """64-bit perceptual hash: sign of the 8x8 lowest DCT frequencies of a 32x32 gray
    thumbnail against their median (robust to re-encoding and mild resizing)."""
    global _DCT
    if _DCT is None:
        n = np.arange(32)
        _DCT = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 64)  # DCT-II basis rows
    g = np.asarray(img.convert("L").resize((32, 32), Image.BOX), dtype=np.float64)
    low = (_DCT @ g @ _DCT.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def png_bytes(img, compress_level=0):
    """Encode like the official dataset tool: PNG with zlib level 0 (fast to read in training)."""
    buf = io.BytesIO()
    img.info = {}  # no stale ICC profile/text chunks: the pixels are plain sRGB now
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def thumbnail(img, side=64):
    """A small RGB copy for contact sheets."""
    t = img.convert("RGB")
    t.thumbnail((side, side), Image.BILINEAR)
    return t
