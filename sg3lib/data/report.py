"""The curation report: per-reason file lists streamed to disk, contact sheets, JSON.

Per-file entries go to one JSON-lines file per reason while curation runs (so memory does
not grow with the number of images); `Report.finish()` joins them into
`curation_report.json`, written to a temporary name and renamed into place. The folder then
shows only this run: contact sheets of an earlier run that this one did not make are removed
(only sheets sg3lib wrote: by name, and marked inside or listed in the earlier report).
"""
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from ..files import atomic_write, remove_leftovers

SHEET_MARK = "sg3lib contact sheet"  # a PNG text chunk: tells our sheets from a user's files
_SHEET_NAME = re.compile(r"(accepted_sample|rejected_[A-Za-z0-9_]+)\.png")


class Report:
    def __init__(self, out_dir, max_tiles=64, tile=64, seed=0):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._previous = _previous_sheets(self.out_dir / "curation_report.json")  # read before it is replaced
        _remove_stale_partials(self.out_dir)
        self._tmp = Path(tempfile.mkdtemp(dir=self.out_dir, prefix=".report-", suffix=".partial"))
        self._files = {}
        self.counts, self.notes = {}, {}
        self.max_tiles, self.tile = max_tiles, tile
        self._tiles = {}  # reason -> [(thumbnail or None, caption)]
        self._accepted_seen = 0
        self._rng = random.Random(seed)

    def add(self, reason, entry, thumb=None, notes=()):
        """Record one file under `reason` ('accepted' or a rejection). `thumb` is a PIL
        image, or a callable returning one (only called when the sheet still needs tiles)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        for n in notes:
            self.notes[n] = self.notes.get(n, 0) + 1
        f = self._files.get(reason)
        if f is None:
            f = self._files[reason] = open(self._tmp / f"{reason}.jsonl", "w", encoding="utf-8")
        f.write(json.dumps(entry) + "\n")
        path = entry["path"]  # a folder ('x/name/') is captioned 'name/', not ''
        caption = os.path.basename(path.rstrip("/")) + ("/" if path.endswith("/") else "")
        tiles = self._tiles.setdefault(reason, [])
        if reason == "accepted":  # a uniform sample of accepted images (reservoir sampling)
            self._accepted_seen += 1
            if len(tiles) < self.max_tiles:
                tiles.append((_call(thumb, self.tile), caption))
            else:
                j = self._rng.randrange(self._accepted_seen)
                if j < self.max_tiles:
                    tiles[j] = (_call(thumb, self.tile), caption)
        elif len(tiles) < self.max_tiles:  # rejected: the first ones, in input order
            tiles.append((_call(thumb, self.tile), caption))

    def finish(self, header):
        """Write contact sheets and curation_report.json; returns the report dict (without
        the per-file lists, which are in the JSON file)."""
        sheets = {}
        for reason, tiles in sorted(self._tiles.items()):
            name = "accepted_sample.png" if reason == "accepted" else f"rejected_{reason}.png"
            title = f"{reason}: {self.counts.get(reason, 0)} image(s)" + (
                f", {len(tiles)} shown" if len(tiles) < self.counts.get(reason, 0) else "")
            _atomic_save(contact_sheet(tiles, self.tile, title), self.out_dir / name)
            sheets[reason] = name
        for f in self._files.values():
            f.close()
        summary = dict(header, counts=dict(sorted(self.counts.items())),
                       notes=dict(sorted(self.notes.items())), contact_sheets=sheets)
        path = self.out_dir / "curation_report.json"
        with atomic_write(path, "w", encoding="utf-8") as out:
            body = json.dumps(summary, indent=1)
            out.write(body[:-2] + ',\n "files": {')  # stream the per-reason lists in
            for i, reason in enumerate(sorted(self._files)):
                out.write(("," if i else "") + f"\n  {json.dumps(reason)}: [")
                with open(self._tmp / f"{reason}.jsonl", encoding="utf-8") as lines:
                    for k, line in enumerate(lines):
                        out.write(("," if k else "") + "\n   " + line.rstrip("\n"))
                out.write("\n  ]")
            out.write("\n }\n}\n")
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._remove_stale_sheets(set(sheets.values()))
        return dict(summary, report_dir=str(self.out_dir), report_json=str(path))

    def _remove_stale_sheets(self, current):
        """Sheets of an earlier run into this folder that this run did not make (they would
        look current); a file is only removed when it is ours by name and by mark or listing."""
        for p in self.out_dir.iterdir():
            if p.name in current or not _SHEET_NAME.fullmatch(p.name) or not p.is_file():
                continue
            if p.name in self._previous or _is_marked_sheet(p):
                p.unlink(missing_ok=True)

    def abort(self):
        for f in self._files.values():
            f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


STALE_PARTIAL_S = 3600  # a curation in progress appends to its lists far more often than this


def _remove_stale_partials(out_dir):
    """The per-reason lists a killed curation left (.report-*.partial/, one line per file: large for
    a big folder). One untouched for STALE_PARTIAL_S belongs to no curation still running."""
    remove_leftovers(out_dir, ".report-*.partial", STALE_PARTIAL_S, "leftover folder(s) of interrupted curations")


def _previous_sheets(path):
    """File names in an earlier curation_report.json's contact_sheets (empty when none). Only
    the summary at its head is parsed: the per-file lists after it can be millions of lines."""
    head = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.startswith(' "files":') or i > 10_000:
                    break
                head.append(line)
        sheets = json.loads("".join(head).rstrip().rstrip(",") + "}").get("contact_sheets", {})
        return {n for n in sheets.values() if isinstance(n, str)}
    except (OSError, ValueError, AttributeError):
        return set()


def _is_marked_sheet(path):
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.text.get("Software") == SHEET_MARK
    except Exception:  # not a picture we can read: not ours
        return False


def _call(thumb, side):
    t = thumb() if callable(thumb) else thumb
    if t is None:
        return None
    t = t.convert("RGB")
    t.thumbnail((side, side), Image.BILINEAR)
    return t


def contact_sheet(tiles, tile=64, title="", cols=8):
    """A grid of (thumbnail or None, caption) tiles; None draws a crossed grey box
    (a file that could not be decoded)."""
    font = ImageFont.load_default()
    cap_h, title_h = 12, 16
    cols = max(1, min(cols, len(tiles)))
    rows = max(1, (len(tiles) + cols - 1) // cols)
    cell_w, cell_h = tile + 4, tile + cap_h + 4
    sheet = Image.new("RGB", (max(cols * cell_w, 240), title_h + rows * cell_h), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill=(255, 255, 255), font=font)
    for i, (img, caption) in enumerate(tiles):
        x, y = (i % cols) * cell_w + 2, title_h + (i // cols) * cell_h + 2
        if img is None:
            draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=(90, 90, 90))
            draw.line([x, y, x + tile - 1, y + tile - 1], fill=(200, 60, 60), width=2)
            draw.line([x, y + tile - 1, x + tile - 1, y], fill=(200, 60, 60), width=2)
        else:
            sheet.paste(img, (x + (tile - img.size[0]) // 2, y + (tile - img.size[1]) // 2))
        cap = caption if len(caption) <= 11 else caption[:5] + "~" + caption[-5:]
        draw.text((x, y + tile + 1), cap, fill=(220, 220, 220), font=font)
    return sheet


def _atomic_save(img, path):
    mark = PngInfo()
    mark.add_text("Software", SHEET_MARK)
    with atomic_write(path, sync=False) as f:  # a picture of the report: not worth an fsync
        img.save(f, format="PNG", pnginfo=mark)
