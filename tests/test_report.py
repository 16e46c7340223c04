"""The curation report on its own: the JSON's order, the contact sheets' layout, and which files of
an earlier run into the same folder are removed (only sg3lib's sheets: by name, and by mark or listing)."""
import os
import shutil
import time

import pytest
from PIL import Image, ImageDraw

from sg3lib.data import curate
from sg3lib.data import report as report_module
from test_curate import break_idat_crc, enc, picture, record_sheets

BACKGROUND, CROSSED_OUT = (40, 40, 40), (90, 90, 90)


def _fill(rep, reasons):
    """Two entries per reason, met in the order given; 'accepted' ones carry notes in reverse name order."""
    for reason in reasons:
        for i in range(2):
            rep.add(reason, dict(path=f"{reason}{i}.png"), thumb=Image.new("RGB", (8, 8), (i, 0, 0)),
                    notes=("zeta", "alpha") if reason == "accepted" else ())


def test_the_report_is_the_same_file_whatever_order_the_reasons_were_met_in(tmp_path):
    """A second run over the same folder (other workers, other timing) must give the same report,
    to be compared with diff: reasons, counts, notes and sheets are in name order, not arrival order."""
    reasons = ["too_small", "corrupt", "accepted"]
    made = []
    for name, order in (("a", reasons), ("b", reasons[::-1])):
        rep = report_module.Report(tmp_path / name)
        _fill(rep, order)
        made.append(rep.finish({"source": "raw"}))
    a, b = [open(m["report_json"], encoding="utf-8").read() for m in made]
    assert a == b
    assert list(made[0]["counts"]) == sorted(reasons) and list(made[0]["notes"]) == ["alpha", "zeta"]
    assert list(made[0]["contact_sheets"]) == sorted(reasons)
    assert a.index('"accepted": [') < a.index('"corrupt": [') < a.index('"too_small": [')


def test_a_sheet_title_says_how_many_are_shown_only_when_not_all_are(tmp_path, monkeypatch):
    drawn = record_sheets(monkeypatch)
    rep = report_module.Report(tmp_path / "r", max_tiles=2)
    for i in range(2):
        rep.add("corrupt", dict(path=f"c{i}.png"))
    for i in range(3):
        rep.add("too_small", dict(path=f"s{i}.png"))
    rep.finish({})
    assert drawn["corrupt"][0] == "corrupt: 2 image(s)"
    assert drawn["too_small"][0] == "too_small: 3 image(s), 2 shown"


def test_contact_sheet_captions_name_unreadable_folders(tmp_path, monkeypatch):
    drawn = record_sheets(monkeypatch)
    rep = report_module.Report(tmp_path / "r")
    rep.add("unreadable_folder", dict(path="cats/locked/", detail=""))
    rep.add("corrupt", dict(path="cats/x.png", detail=""))
    rep.finish({})
    assert [c for _, c in drawn["unreadable_folder"][1]] == ["locked/"] and [c for _, c in drawn["corrupt"][1]] == ["x.png"]


def test_contact_sheets_show_the_first_rejects_and_a_uniform_sample_of_the_accepted(tmp_path, monkeypatch):
    drawn = record_sheets(monkeypatch)
    picked = []
    for seed in range(50):
        rep = report_module.Report(tmp_path / str(seed), max_tiles=4, seed=seed)
        for i in range(20):
            rep.add("accepted", dict(path=f"{i}.png"))
            rep.add("corrupt", dict(path=f"bad{i}.png", detail=""))
        rep.finish({})
        title, tiles = drawn["corrupt"]
        assert title == "corrupt: 20 image(s), 4 shown" and [c for _, c in tiles] == [f"bad{i}.png" for i in range(4)]
        title, tiles = drawn["accepted"]
        captions = [c for _, c in tiles]
        assert title == "accepted: 20 image(s), 4 shown" and len(set(captions)) == 4
        picked += captions
    counts = [picked.count(f"{i}.png") for i in range(20)]  # 10 each on average
    assert min(counts) >= 3 and max(counts) <= 20, counts


def test_the_accepted_sample_gives_every_image_the_same_chance(tmp_path, monkeypatch):
    """One tile, three accepted images: each is the one shown for about a third of the seeds
    (reservoir sampling; drawing from one place too many favours the first)."""
    drawn = record_sheets(monkeypatch)
    shown = []
    for seed in range(300):
        rep = report_module.Report(tmp_path / "r", max_tiles=1, seed=seed)
        for i in range(3):
            rep.add("accepted", dict(path=f"{i}.png"))
        rep.finish({})
        shown += [c for _, c in drawn["accepted"][1]]
    share = [shown.count(f"{i}.png") / len(shown) for i in range(3)]
    assert len(shown) == 300 and all(0.25 < s < 0.42 for s in share), share


def test_a_sheet_of_no_tiles_is_its_title_alone():
    sheet = report_module.contact_sheet([], 64, "accepted: 0 image(s)")
    assert sheet.size == (240, 16 + 80)  # at least wide enough for its title; one empty row


def test_a_sheet_has_up_to_eight_columns_and_is_never_narrower_than_its_title():
    tile = (Image.new("RGB", (64, 64), (255, 0, 0)), "x.png")
    assert report_module.contact_sheet([tile] * 2, 64).size == (240, 96)
    assert report_module.contact_sheet([tile] * 9, 64).size == (8 * 68, 16 + 2 * 80)


def test_tiles_are_centred_in_their_cell_and_an_undecodable_file_is_a_grey_crossed_box():
    wide = Image.new("RGB", (64, 20), (0, 200, 0))
    sheet = report_module.contact_sheet([(wide, "wide.png"), (None, "broken.png")], 64)
    x0, y0 = 2, 16 + 2  # the first cell's picture area
    assert sheet.getpixel((x0 + 32, y0 + 32)) == (0, 200, 0)  # (64 - 20) // 2 = 22 rows above it
    assert sheet.getpixel((x0 + 32, y0 + 5)) == BACKGROUND
    x1 = x0 + 68
    assert sheet.getpixel((x1 + 32, y0 + 5)) == CROSSED_OUT  # off the cross's two diagonals
    assert sheet.getpixel((x1 + 32, y0 + 32)) != CROSSED_OUT  # on them


def test_long_captions_keep_their_start_and_end(monkeypatch):
    written = []
    real = ImageDraw.ImageDraw.text

    def text(self, xy, text, *args, **kwargs):
        written.append(text)
        return real(self, xy, text, *args, **kwargs)
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    tile = Image.new("RGB", (8, 8))
    report_module.contact_sheet([(tile, "eleven_.png"), (tile, "twelve__.png"), (tile, "a_long_name.jpeg")], 64, "t")
    assert written == ["t", "eleven_.png", "twelv~_.png", "a_lon~.jpeg"]


def _first_run(raw, zip_path):
    """A curation with one accepted and one corrupt image: accepted_sample.png and rejected_corrupt.png."""
    raw.mkdir()
    (raw / "ok.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    (raw / "broken.png").write_bytes(break_idat_crc(enc(picture(2, 64, 64), "PNG")))
    rep = curate(raw, zip_path, 32, workers=0, progress=False)
    assert set(rep["contact_sheets"].values()) == {"accepted_sample.png", "rejected_corrupt.png"}
    return zip_path.parent / f"{zip_path.stem}_report"


def _second_run_without_the_corrupt_image(raw, zip_path):
    """The same curation again, into the same report folder, without the image rejected_corrupt.png showed."""
    (raw / "broken.png").unlink()
    return curate(raw, zip_path, 32, workers=0, progress=False, overwrite=True)


def test_sheets_of_a_run_whose_report_was_deleted_are_known_by_their_mark(tmp_path):
    """Without the earlier curation_report.json, the mark inside a sheet still tells it is sg3lib's;
    a sheet the user copied under a name of their own is theirs now."""
    raw = tmp_path / "raw"
    out = _first_run(raw, tmp_path / "d.zip")
    with Image.open(out / "rejected_corrupt.png") as sheet:
        assert sheet.text.get("Software") == report_module.SHEET_MARK
    for name in ("accepted_best.png", "keep.png"):
        shutil.copy(out / "rejected_corrupt.png", out / name)
    (out / "curation_report.json").unlink()
    _second_run_without_the_corrupt_image(raw, tmp_path / "d.zip")
    assert sorted(p.name for p in out.iterdir()) == ["accepted_best.png", "accepted_sample.png",
                                                      "curation_report.json", "keep.png"]


def test_a_folder_named_like_a_sheet_of_the_earlier_run_is_left_alone(tmp_path):
    raw = tmp_path / "raw"
    out = _first_run(raw, tmp_path / "d.zip")
    (out / "rejected_corrupt.png").unlink()
    (out / "rejected_corrupt.png").mkdir()
    (out / "rejected_corrupt.png" / "mine.txt").write_text("mine")
    _second_run_without_the_corrupt_image(raw, tmp_path / "d.zip")
    assert (out / "rejected_corrupt.png" / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("sheets", ['{"accepted": ["accepted_sample.png"]}', '["accepted_sample.png"]'],
                         ids=["list-value", "list"])
def test_an_earlier_report_with_odd_contact_sheets_is_read_as_listing_none(tmp_path, sheets):
    """An earlier report edited by hand (or by another tool) is no reason to stop a curation."""
    raw = tmp_path / "raw"
    out = _first_run(raw, tmp_path / "d.zip")
    (out / "curation_report.json").write_text('{\n "contact_sheets": ' + sheets + ',\n "files": {}\n}\n')
    assert report_module._previous_sheets(out / "curation_report.json") == set()
    rep = _second_run_without_the_corrupt_image(raw, tmp_path / "d.zip")
    assert rep["counts"] == {"accepted": 1} and not (out / "rejected_corrupt.png").exists()  # by its mark


def test_a_killed_curations_lists_are_removed_by_the_next_once_stale(tmp_path):
    """A curation killed mid-way leaves .report-*.partial/ (a line per file so far); the next one into
    that report folder removes it once untouched for an hour, and leaves a younger one be (it may be a
    curation still running into the same folder)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(enc(picture(1, 64, 64), "PNG"))
    rep_dir = tmp_path / "o_report"
    ages = {"old": 61 * 60, "young": 50 * 60}
    for name, age in ages.items():
        d = rep_dir / f".report-{name}.partial"
        d.mkdir(parents=True)
        (d / "accepted.jsonl").write_text('{"path": "x.png"}\n')
        for p in (d, d / "accepted.jsonl"):
            os.utime(p, (time.time() - age,) * 2)
    with pytest.warns(UserWarning, match=r"removed 1 leftover folder.*\.report-old\.partial"):
        curate(raw, tmp_path / "o.zip", 32, workers=0, progress=False)
    assert sorted(p.name for p in rep_dir.glob(".report-*")) == [".report-young.partial"]
