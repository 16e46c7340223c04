"""Build the small demo dataset: a few hundred emoji rendered from Noto Color Emoji.

    python data/build_demo.py            # -> data/demo/raw/ and data/demo/emoji-64.zip
    python data/build_demo.py --resolution 32 --out /tmp/demo

The artwork comes from Debian's `fonts-noto-color-emoji` package (Apache-2.0, see
data/README.md). Images are grouped in class folders (animals, faces, food, plants), so
the curated zip has labels. A handful of deliberately bad files (a copy, a re-encoded
near copy, a truncated file, a tiny image, a blank image, a text file) are added so the
curation report has something to show. Takes a few seconds on one core.
"""
import argparse
import io
import os
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
FONT_PATHS = ["/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
              "/usr/share/fonts/noto/NotoColorEmoji.ttf",
              "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf"]
# Unicode blocks per class (code point ranges, inclusive).
CLASSES = {
    "animals": [(0x1F400, 0x1F43F), (0x1F980, 0x1F9AE)],
    "faces": [(0x1F600, 0x1F64F)],
    "food": [(0x1F345, 0x1F37F)],
    "plants": [(0x1F330, 0x1F344)],
}
STRIKE = 109  # the font's bitmap size in ppem: Noto Color Emoji only renders at this size


def find_font():
    cands = [os.environ.get("SG3_EMOJI_FONT")] + FONT_PATHS
    for p in cands:
        if p and os.path.isfile(p):
            return p
    raise SystemExit(
        "Noto Color Emoji font not found (looked in: " + ", ".join(FONT_PATHS) + ").\n"
        "Install it with:  sudo apt-get update && sudo apt-get install -y fonts-noto-color-emoji\n"
        "or point SG3_EMOJI_FONT at a NotoColorEmoji.ttf file.")


def render(font, ch):
    """One emoji as a 136x128 RGBA image (transparent background), or None if missing."""
    img = Image.new("RGBA", (136, 128), (0, 0, 0, 0))
    ImageDraw.Draw(img).text((0, 0), ch, font=font, embedded_color=True)
    return img if img.getchannel("A").getbbox() else None


def build_raw(out_dir, with_mess=True, limit=None):
    """Write class folders of emoji PNGs (RGBA) to out_dir; returns the number of files."""
    out_dir = Path(out_dir)
    font = ImageFont.truetype(find_font(), STRIKE)
    tofu = render(font, "\ue000")  # what a missing glyph looks like (if anything)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    n = 0
    for cls, ranges in CLASSES.items():
        (tmp / cls).mkdir(parents=True)
        count = 0
        for lo, hi in ranges:
            for cp in range(lo, hi + 1):
                if limit is not None and count >= limit:
                    break
                img = render(font, chr(cp))
                if img is None or (tofu is not None and img.tobytes() == tofu.tobytes()):
                    continue
                img.save(tmp / cls / f"u{cp:05x}.png")
                count += 1
        n += count
    if with_mess:
        n += _add_mess(tmp, font)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return n


def _add_mess(root, font):
    """Files a real scrape would contain; each should land in its own report bucket."""
    first = sorted((root / "faces").iterdir())[0]
    shutil.copy(first, root / "faces" / "zz_copy.png")  # exact duplicate
    cat = render(font, "\U0001F408")
    flat = Image.new("RGB", cat.size, "white")
    flat.paste(cat, mask=cat.getchannel("A"))
    flat.resize((120, 113), Image.LANCZOS).save(root / "animals" / "zz_cat_again.jpg", quality=85)  # near dup
    buf = io.BytesIO()
    render(font, "\U0001F34E").save(buf, format="PNG")
    (root / "food" / "zz_truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    render(font, "\U0001F335").resize((20, 19)).save(root / "plants" / "zz_tiny.png")
    Image.new("RGBA", (136, 128), (0, 0, 0, 0)).save(root / "faces" / "zz_blank.png")  # monochrome
    (root / "animals" / "zz_notes.txt").write_text("downloaded from somewhere\n")
    return 6


def build(out="data/demo", resolution=64, workers=None, progress=True, force=False):
    """Raw folder (if missing) + curated `emoji-<res>.zip`; returns the curation report."""
    sys.path.insert(0, str(HERE.parent))
    from sg3lib.data import curate
    out = Path(out)
    raw = out / "raw"
    if force or not raw.is_dir():
        n = build_raw(raw)
        print(f"rendered {n} files into {raw}")
    return curate(raw, out / f"emoji-{resolution}.zip", resolution, labels="folders",
                  background="white", workers=workers, overwrite=True, progress=progress)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(HERE / "demo"))
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--force", action="store_true", help="re-render the raw folder")
    a = ap.parse_args(argv)
    rep = build(a.out, a.resolution, a.workers, force=a.force)
    print(f"{rep['accepted']} of {rep['total']} images -> {rep['dest']}; counts: {rep['counts']}")
    print(f"report: {rep['report_json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
