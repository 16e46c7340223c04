"""sg3lib.data.images' helpers on their own: squaring and resizing edges, the perceptual hash against
a DCT computed another way, the encoding and thumbnails, and modes that only some files decode to."""
import io

import numpy as np
import pytest
from PIL import Image

from sg3lib.data import images as im
from test_curate import enc, picture, to_rgb


def test_a_grey_mode_image_is_grey():
    assert im.is_grayscale(Image.new("L", (8, 8), 100))


@pytest.mark.parametrize("mode", ["pad", "reflect"])
def test_a_strip_squared_to_fit_keeps_at_least_one_row(mode):
    """1000 x 3 fitted to 32 is 32 x 0.096: one row, not an image of no rows (which Pillow refuses)."""
    strip = Image.new("RGB", (1000, 3), (200, 10, 10))
    assert im.square(strip, mode, fit=32).size == (32, 32)


def test_an_unknown_squaring_mode_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="unknown squaring mode 'stretch'; use crop, pad, reflect or none"):
        im.square(Image.new("RGB", (20, 10)), "stretch")


def _dct2_by_fft(g):
    """Unnormalised 2-D DCT-II, sum_n g[n] cos(pi k (2n + 1) / 2N) on each axis, through an FFT of the
    reordered signal (Makhoul 1980) instead of a matrix of cosines."""
    def along_last(x):
        n = x.shape[-1]
        v = np.concatenate([x[..., ::2], x[..., 1::2][..., ::-1]], -1)
        k = np.arange(n)
        return (np.fft.fft(v, axis=-1) * np.exp(-1j * np.pi * k / (2 * n))).real
    return along_last(along_last(g).swapaxes(0, 1)).swapaxes(0, 1)


@pytest.mark.parametrize("seed", range(4))
def test_the_perceptual_hash_is_the_sign_of_the_lowest_dct_frequencies_against_their_median(seed):
    img = picture(seed, 80, 60)
    g = np.asarray(img.convert("L").resize((32, 32), Image.BOX), dtype=np.float64)
    low = _dct2_by_fft(g)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # (the DC term, the mean brightness, is left out of the median)
    assert im.phash(img) == int("".join("1" if b else "0" for b in bits), 2)


def test_png_bytes_are_stored_not_compressed_by_default():
    """Like the official dataset tool: zlib level 0 (reading a training batch then costs no inflating)."""
    flat = Image.new("RGB", (64, 64), (10, 20, 30))
    data = im.png_bytes(flat)
    assert len(data) > 64 * 64 * 3 and Image.open(io.BytesIO(data)).getpixel((5, 5)) == (10, 20, 30)


def test_a_thumbnail_is_a_small_rgb_copy_of_the_same_shape():
    thumb = im.thumbnail(Image.new("L", (300, 150), 77))
    assert thumb.size == (64, 32) and thumb.mode == "RGB" and thumb.getpixel((3, 3)) == (77, 77, 77)


@pytest.mark.parametrize("mode, clear", [("RGBa", (0, 0, 0, 0)), ("PA", (0, 0))])
def test_premultiplied_and_palette_alpha_are_laid_over_the_background(mode, clear):
    """RGBa is what Pillow decodes a TIFF with associated (premultiplied) alpha to."""
    notes = []
    out = im.to_rgb_or_l(Image.new(mode, (4, 4), clear), background=(0, 128, 255), notes=notes)
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (0, 128, 255) and "alpha_composited" in notes


def test_big_endian_16_bit_grey_is_scaled_not_clipped():
    """Pillow's mode for a big-endian (Motorola byte order) 16-bit grey TIFF."""
    img = Image.fromarray(np.array([[0, 257 * 100, 65535]], ">u2"))
    assert img.mode == "I;16B"
    assert np.asarray(im.to_rgb_or_l(img, channels=1)).tolist() == [[0, 100, 255]]


def test_an_exif_block_of_only_its_header_is_no_unreadable_exif():
    """'Exif\\0\\0' and nothing after it holds no orientation to ignore: no exif_ignored note."""
    data = enc(picture(2, 20, 10), "JPEG", exif=b"Exif\0\0")
    assert Image.open(io.BytesIO(data)).info["exif"] == b"Exif\0\0"
    a, notes = to_rgb(data)
    assert a.shape[:2] == (10, 20) and "exif_ignored" not in notes
