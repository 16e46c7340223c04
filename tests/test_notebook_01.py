"""notebooks/01_curate_dataset.ipynb runs top to bottom on the demo data (built into tmp)."""
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sg3lib.data import ImageDataset

ROOT = Path(__file__).resolve().parents[1]


def printed(cell):
    """What a cell printed: print() writes its parts one by one, and the kernel may send them as
    separate stream outputs."""
    return "".join(o["text"] for o in cell.outputs if o.output_type == "stream")


@pytest.mark.slow  # a kernel start-up plus torch and matplotlib imports: ~20-40 s on 2 busy cores
def test_notebook_01_runs(tmp_path, monkeypatch):
    src, out = tmp_path / "raw", tmp_path / "out"  # the demo folder is missing: the notebook builds it
    monkeypatch.setenv("SG3_NB_DEMO_RAW", str(src))
    monkeypatch.setenv("SG3_NB_OUT", str(out))
    monkeypatch.setenv("SG3_NB_RESOLUTION", "32")
    monkeypatch.setenv("SG3_NB_WORKERS", "0")  # in-process: no pool start-up on 2 busy cores
    nb = nbformat.read(ROOT / "notebooks" / "01_curate_dataset.ipynb", as_version=4)
    # The zip the last cell read is closed again: open, a rerun of Curate cannot replace it on Windows.
    nb.cells.append(nbformat.v4.new_code_cell("fds = '/proc/self/fd'\n"
        "print('open:', [fd for fd in os.listdir(fds) if os.path.realpath(f'{fds}/{fd}') == str(DEST)])"))
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    assert printed(nb.cells[-1]).strip() == "open: []"
    nb.cells.pop()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    with open(out / "dataset-32_report" / "curation_report.json") as f:
        report = json.load(f)
    rejected_sheets = [r for r in report["contact_sheets"] if r != "accepted"]
    assert len(rejected_sheets) >= 4  # the demo's deliberate mess: duplicate, corrupt, tiny, blank...
    assert len(images) == 1 + len(rejected_sheets) + 1  # preview, one sheet per reason, result grid
    ds = ImageDataset(out / "dataset-32.zip", resolution=32, use_labels=True)
    assert len(ds) == report["accepted"] > 200 and ds.class_names == ["animals", "faces", "food", "plants"]
    assert sum(report["counts"].values()) == report["total"] == sum(1 for p in src.rglob("*") if p.is_file())


def test_notebook_01_refuses_a_missing_source_folder(tmp_path, monkeypatch):
    """Only the demo folder is rendered when missing: a mistyped SRC stops with its name, and no
    emoji are written there to be curated as if they were the user's images."""
    src = tmp_path / "my_photos"
    monkeypatch.setenv("SG3_NB_SRC", str(src))
    monkeypatch.setenv("SG3_NB_DEMO_RAW", str(tmp_path / "demo_raw"))
    monkeypatch.setenv("SG3_NB_OUT", str(tmp_path / "out"))
    nb = nbformat.read(ROOT / "notebooks" / "01_curate_dataset.ipynb", as_version=4)
    nb.cells = [nb.cells[1], nb.cells[3]]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    errors = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert errors and errors[0]["ename"] == "FileNotFoundError", nb.cells[1].outputs
    assert str(src) in errors[0]["evalue"] and "point SRC at your folder" in errors[0]["evalue"]
    assert not src.exists()


def test_notebook_01_previews_a_zip_source(tmp_path, monkeypatch):
    """SRC may be a .zip (as the settings say): the preview used to find '0 files' in it and show an
    empty figure; it lists the zip's images and shows them. SRC edited to a str with ~ used to stop
    with "'str' object has no attribute 'exists'"."""
    import io
    import zipfile
    from PIL import Image
    src = tmp_path / "photos.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("cats/", "")  # a folder entry is not a file
        for k in range(3):
            buf = io.BytesIO()
            Image.new("RGB", (40 + k, 30), (80 * k, 100, 200)).save(buf, "PNG")
            zf.writestr(f"cats/cat{k}.png", buf.getvalue())
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SG3_NB_OUT", str(tmp_path / "out"))
    nb = nbformat.read(ROOT / "notebooks" / "01_curate_dataset.ipynb", as_version=4)
    edit = nbformat.v4.new_code_cell("SRC = '~/photos.zip'  # the user's edit: a str, with ~")
    probe = nbformat.v4.new_code_cell("print([ax.get_title() for ax in axes.flat if ax.get_title()])")
    nb.cells = [nb.cells[1], edit, nb.cells[3], probe]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert f"3 files under {src}" in text
    assert "cats/cat0.png\\n40x30 RGB" in text and "cats/cat2.png\\n42x30 RGB" in text


def test_notebook_01_says_when_nothing_was_rejected(tmp_path, monkeypatch):
    """'What was rejected, and why' printed nothing at all for a clean folder: it says so."""
    import numpy as np
    from PIL import Image
    src = tmp_path / "clean"
    for k, cls in enumerate("aab"):  # distinct (no near-duplicates), coloured, large enough; 2 classes
        (src / cls).mkdir(parents=True, exist_ok=True)
        rgb = np.random.default_rng(k).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(src / cls / f"n{k}.png")
    monkeypatch.setenv("SG3_NB_SRC", str(src))
    monkeypatch.setenv("SG3_NB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("SG3_NB_RESOLUTION", "32")
    monkeypatch.setenv("SG3_NB_WORKERS", "0")
    nb = nbformat.read(ROOT / "notebooks" / "01_curate_dataset.ipynb", as_version=4)
    nb.cells = [nb.cells[1], nb.cells[5], nb.cells[7]]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    said = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert said.strip() == "nothing was rejected: all 3 file(s) were accepted", nb.cells[2].outputs
