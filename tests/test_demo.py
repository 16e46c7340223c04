"""`make demo` end to end, shortened: dataset -> curate -> train, stop, resume -> grids and mp4."""
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "sg3lib.demo", "--out", str(out), "--kimg", "0.016",
                           "--video-seconds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming from" in proc.stdout
    for name in ("psi_grid.png", "style_mixing.png", "interpolation.mp4"):
        assert (out / name).stat().st_size > 1000, name
    from sg3lib.explore import read_video_info
    frames, size, fps = read_video_info(out / "interpolation.mp4")
    assert frames == 15 and fps == 15, (frames, fps)
    snaps = sorted((out / "run").glob("snapshot-*.pt"))
    assert snaps and snaps[-1].name == "snapshot-000000016.pt"
