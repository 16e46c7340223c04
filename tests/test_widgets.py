"""ipywidgets explorers: construct, move a control programmatically, the shown image changes."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from sg3lib import explore as X
from sg3lib.explore.widgets import Interpolator, LatentExplorer, StyleMixer
from test_explore_helpers import make_G


@pytest.fixture(scope="module")
def G():
    return make_G()


def shown(view):
    return np.asarray(Image.open(io.BytesIO(view.image.value))).astype(int)


@pytest.mark.parametrize("cls,control,value", [(LatentExplorer, "seed", 7), (LatentExplorer, "psi", -0.5),
                                               (LatentExplorer, "rotate", 90.0), (LatentExplorer, "cutoff", 1),
                                               (Interpolator, "t", 0.0),
                                               (StyleMixer, "style", 9)])
def test_moving_a_control_changes_the_image(G, cls, control, value):
    view = cls(G, display_size=64)
    try:
        assert view.wait(60) and view.renders == 1
        before = shown(view)
        assert before.shape[0] == 64  # 16 px enlarged to the display size
        view.controls[control].value = value
        assert view.wait(60) and view.renders == 2
        after = shown(view)
        assert after.shape == before.shape and np.abs(after - before).mean() > 1
        expected = f"{control} {value:.2f}" if isinstance(value, float) else f"{control} {value}"
        assert expected in view.caption.value  # the caption names the values shown
    finally:
        view.close()


def test_latent_explorer_shows_the_seed_image(G):
    view = LatentExplorer(G, seed=3, psi=0.5, display_size=16)
    try:
        img = np.asarray(view.render_sync())
        assert np.array_equal(img, X.generate_arrays(G, [3], psi=0.5, progress=False)[0])
        assert "seed 3" in view.caption.value and "psi 0.50" in view.caption.value
        view.controls["x"].value = 0.5  # translate: StyleGAN3's input transform
        assert not np.array_equal(np.asarray(view.render_sync()), img)
        assert np.array_equal(np.asarray(view.render_sync()), np.asarray(view.render_sync()))
    finally:
        view.close()


def test_interpolator_endpoints_are_the_seeds(G):
    view = Interpolator(G, seed_a=2, seed_b=6, psi=1.0, display_size=16)
    try:
        for t, seed in ((0.0, 2), (1.0, 6)):
            for space in ("z", "w"):
                view.controls["t"].value, view.controls["space"].value = t, space
                ref = X.generate_arrays(G, [seed], progress=False)[0].astype(int)
                assert np.abs(np.asarray(view.render_sync()).astype(int) - ref).max() <= 1
    finally:
        view.close()


def _between(G, method, space, a=2, b=6, t=0.5):
    """The Interpolator's image of seeds a..b at t (psi 1), computed directly."""
    if space == "z":
        za, zb = X.seeds_to_z([a, b], G.z_dim)
        ws = X.map_z(G, X.interpolate(za[None], zb[None], t, method))
    else:
        wa, wb = X.map_z(G, X.seeds_to_z([a, b], G.z_dim))
        ws = X.interpolate(wa[None], wb[None], t, method)
    return X.synthesize(G, ws)[0]


def _settled(view):
    """Render in this thread once the worker has shown every state asked for (else its older render
    can land after ours and leave an older caption)."""
    assert view.wait()
    return view.render_sync()


def test_interpolator_method_follows_the_space_until_one_is_picked(G):
    """slerp in Z, lerp in W (latents.default_method), as the videos do; it stayed slerp in W. A method the
    user picks (buttons or argument) is kept when the space changes; 'auto' follows the space again."""
    assert not np.array_equal(_between(G, "slerp", "w"), _between(G, "lerp", "w"))  # the checks below can tell
    assert not np.array_equal(_between(G, "slerp", "z"), _between(G, "lerp", "z"))
    view = Interpolator(G, seed_a=2, seed_b=6, psi=1.0, display_size=16)
    try:
        method, space = view.controls["method"], view.controls["space"]
        for s, want in (("z", "slerp"), ("w", "lerp"), ("z", "slerp")):
            space.value = s
            assert np.array_equal(np.asarray(_settled(view)), _between(G, want, s)), s
            assert f"method {want} (auto)" in view.caption.value
        method.value = "lerp"  # the user's pick
        for s in ("w", "z"):
            space.value = s
            assert np.array_equal(np.asarray(_settled(view)), _between(G, "lerp", s)), s
        method.value = "auto"  # follow the space again
        assert np.array_equal(np.asarray(_settled(view)), _between(G, "slerp", "z"))
    finally:
        view.close()
    for kwargs, methods in ((dict(space="w"), ("lerp", "slerp")), (dict(space="w", method="slerp"), ("slerp",) * 2)):
        view = Interpolator(G, seed_a=2, seed_b=6, psi=1.0, display_size=16, **kwargs)
        try:
            seen = [np.asarray(_settled(view))]
            view.controls["space"].value = "z"
            seen.append(np.asarray(_settled(view)))
            for img, m, s in zip(seen, methods, ("w", "z")):
                assert np.array_equal(img, _between(G, m, s)), (kwargs, s)
        finally:
            view.close()


def test_interpolator_keeps_a_pick_of_the_method_already_shown(G):
    """The method shown in Z was 'slerp' (followed, not picked); clicking 'slerp' then sends no change (a
    frontend sends none for the button already selected, traitlets fires none for an equal value), so it did
    not count as a pick and moving to W switched the user's visible slerp to lerp."""
    view = Interpolator(G, seed_a=2, seed_b=6, psi=1.0, display_size=16)
    try:
        view.controls["method"].value = "slerp"  # the user clicks slerp
        view.controls["space"].value = "w"
        assert view.controls["method"].value == "slerp"
        assert np.array_equal(np.asarray(_settled(view)), _between(G, "slerp", "w"))
        assert "method slerp" in view.caption.value and "auto" not in view.caption.value
    finally:
        view.close()


def test_style_mixer_presets_set_the_layer_range(G):
    view = StyleMixer(G, display_size=16)
    try:
        view.controls["preset"].value = "fine"
        lo, hi = X.layer_ranges(G.num_ws)["fine"]
        assert view.controls["layers"].value == (lo, hi - 1)
        img = np.asarray(view.render_sync())
        assert img.shape == (16, 48, 3)  # base | style | mix
        view.controls["layers"].value = (0, 0)  # a hand-picked range
        assert view.controls["preset"].value == "custom"
    finally:
        view.close()


def test_style_mixer_takes_a_layer_range_as_a_list_and_names_its_preset(G):
    """layer_range and style_mix_grid take [lo, hi]; StyleMixer failed with "unhashable type: 'list'",
    and a range equal to a preset showed as 'custom'."""
    ranges = X.layer_ranges(G.num_ws)
    assert ranges["coarse"] == (0, 2) and ranges["middle"] != (0, 4)  # what the cases below take
    for layers, preset in (([0, 4], "custom"), ([0, 2], "coarse"), (ranges["middle"], "middle"),
                           (np.array(ranges["fine"]), "fine"), ("fine", "fine")):
        view = StyleMixer(G, layers=layers, display_size=16)
        try:
            want = X.layer_range(layers, G.num_ws)
            assert view.controls["layers"].value == (want[0], want[1] - 1)
            assert view.controls["preset"].value == preset
        finally:
            view.close()


def count_renders(monkeypatch):
    """(list of the ws count of every synthesize call the widgets make from here on, the real synthesize)."""
    from sg3lib.explore import widgets
    batches, real = [], widgets.synthesize
    monkeypatch.setattr(widgets, "synthesize", lambda G, ws, *a, **k: batches.append(len(ws)) or real(G, ws, *a, **k))
    return batches, real


def test_style_mixer_renders_only_what_changed_and_shows_the_right_mix(G, monkeypatch):
    batches, real = count_renders(monkeypatch)
    view = StyleMixer(G, base_seed=3, style_seed=4, display_size=16)
    try:
        view.wait()
        view.controls["layers"].value = (2, 5)
        view.wait()
        view.controls["base"].value = 11
        view.wait()
        assert batches[-2:] == [1, 2]          # range moved: the mix only; base seed: base and mix
        n = len(batches)
        img = np.asarray(view.render_sync())   # same state again: all three from the cache
        assert len(batches) == n
        assert "layers 2-5" in view.caption.value  # the range as the slider shows it
    finally:
        view.close()
    wb, ws_ = X.map_z(G, X.seeds_to_z([11, 4], G.z_dim), None, 0.7)
    mix = wb.clone()
    mix[2:6] = ws_[2:6]
    ref = real(G, torch.stack([wb, ws_, mix]), "const")
    assert np.abs(img.astype(int) - np.concatenate(list(ref), axis=1).astype(int)).max() <= 1


def test_style_mixer_remembers_the_eight_images_used_last(G, monkeypatch):
    """One seed as base and style is rendered once; the cache keeps the 8 images used most recently,
    not the 8 made last: a base seed kept while the style seed moves on is not rendered again."""
    batches, _ = count_renders(monkeypatch)
    view = StyleMixer(G, base_seed=3, style_seed=3, layers=(0, 2), display_size=16)
    try:
        assert view.wait(60) and batches == [1]  # base, style and mix are one ws
        for seed in range(10, 16):  # each a new style image and a new mix: 12 images made since base 3
            view.controls["style"].value = seed
            assert view.wait(60)
        assert batches[1:] == [2] * 6
        view.controls["style"].value = 14  # its two images are among the last 8
        assert view.wait(60) and len(batches) == 7
    finally:
        view.close()


def test_small_images_are_enlarged_with_visible_pixels_and_latency_is_measured(G):
    view = LatentExplorer(G, seed=3, display_size=64)
    try:
        assert view.wait(60)
        img = X.generate_arrays(G, [3], psi=0.7, progress=False)[0]
        assert np.array_equal(shown(view), np.kron(img, np.ones([4, 4, 1], np.uint8)))  # nearest, x4
        assert view.last_latency_s >= view.last_render_s > 0  # from the request, render included
        assert (view.controls["rotate"].min, view.controls["rotate"].max) == (-180, 180)  # a full turn
    finally:
        view.close()


def test_interpolator_in_z_truncates_towards_the_class_centre(G):
    Gc = make_G(c_dim=3)
    view = Interpolator(Gc, seed_a=2, seed_b=5, space="z", display_size=16)
    try:
        view.controls["t"].value = 0.0
        assert view.controls["centre"].value == "class"
        want = X.generate_arrays(Gc, [2], psi=0.7, class_idx=0, centre="class", progress=False)[0]
        assert np.abs(np.asarray(view.render_sync()).astype(int) - want).max() <= 1
    finally:
        view.close()


def test_bursts_are_debounced_and_the_last_state_wins(G):
    view = LatentExplorer(G, display_size=16, debounce=0.2)
    try:
        view.wait(60)
        start = view.renders
        for s in range(1, 11):  # ten quick slider events
            view.controls["seed"].value = s
        assert view.wait(60)
        assert view.renders - start < 10  # stale states were dropped
        assert "seed 10 " in view.caption.value
        assert np.array_equal(shown(view), X.generate_arrays(G, [10], psi=0.7, progress=False)[0])
    finally:
        view.close()


def test_conditional_and_stylegan2_controls():
    Gc = make_G(c_dim=3)
    view = LatentExplorer(Gc, display_size=16)
    try:
        assert "class" in view.controls and view.wait(60)
        # a conditional network truncates towards its class's own mean by default (w_avg would pull
        # every class to one image as psi goes to 0)
        assert view.controls["centre"].value == "class" and "centre class" in view.caption.value
        assert np.array_equal(np.asarray(view.render_sync()),
                              X.generate_arrays(Gc, [0], psi=0.7, class_idx=0, centre="class", progress=False)[0])
        view.controls["class"].value = 2
        assert view.wait(60) and "class 2" in view.caption.value
    finally:
        view.close()
    view = LatentExplorer(make_G("sg2"), display_size=16)
    try:
        assert "rotate" not in view.controls and view.wait(60) and view.renders == 1
    finally:
        view.close()


def test_render_errors_show_in_the_caption(G):
    view = LatentExplorer(G, display_size=16)
    try:
        view.wait(60)
        view.controls["noise"].options = ["const", "bogus"]
        view.controls["noise"].value = "bogus"
        assert view.wait(60) and "render failed" in view.caption.value and "noise_mode" in view.caption.value
    finally:
        view.close()


@pytest.mark.parametrize("cls", [LatentExplorer, Interpolator, StyleMixer])
def test_grayscale_networks_render(cls):
    """img_channels=1: the [H, W, 1] image is shown as a grayscale PNG, not a 'render failed' caption."""
    Gg = make_G(img_channels=1)
    view = cls(Gg, display_size=16)
    try:
        assert view.wait(60) and "render failed" not in view.caption.value
        img = view.render_sync()
        assert img.mode == "L" and img.height == 16
        if cls is LatentExplorer:
            assert np.array_equal(np.asarray(img), X.generate_arrays(Gg, [0], psi=0.7, progress=False)[0, :, :, 0])
    finally:
        view.close()


def test_a_seed_above_the_slider_range_is_kept(G):
    view = LatentExplorer(G, seed=123456, psi=0.5, display_size=16)
    try:
        assert view.controls["seed"].value == 123456  # an IntSlider clamps to its max
        want = X.generate_arrays(G, [123456], psi=0.5, progress=False)[0]
        assert np.array_equal(np.asarray(view.render_sync()), want)
    finally:
        view.close()


class _DeviceWs(torch.Tensor):
    """ws as a CUDA tensor behaves for the cache key: .numpy() refuses, .cpu() gives a host tensor."""

    def numpy(self, *a, **k):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")

    def cpu(self, *a, **k):
        return self.as_subclass(torch.Tensor).clone()


def test_style_mixer_with_ws_off_the_cpu(G, monkeypatch):
    from sg3lib.explore import widgets
    real = widgets._map
    monkeypatch.setattr(widgets, "_map", lambda *a, **k: real(*a, **k).as_subclass(_DeviceWs))
    view = StyleMixer(G, display_size=16)
    try:
        assert view.wait(60) and "render failed" not in view.caption.value
    finally:
        view.close()


@pytest.mark.gpu
def test_style_mixer_on_the_gpu():
    view = StyleMixer(make_G().cuda(), display_size=16)
    try:
        assert view.wait(60) and "render failed" not in view.caption.value and view.renders == 1
    finally:
        view.close()


def test_a_seed_typed_above_the_slider_is_that_seed(G):
    """The slider scrubs 0..100000; the box beside it takes any seed, and neither clamps the other."""
    view = LatentExplorer(G, psi=0.5, display_size=16)
    try:
        seed = view.controls["seed"]
        seed._box.value = 5_000_000  # typed into the box
        assert seed.value == 5_000_000 and seed._slider.value == seed._slider.max
        assert view.wait(60) and "seed 5000000 " in view.caption.value
        assert np.array_equal(shown(view), X.generate_arrays(G, [5_000_000], psi=0.5, progress=False)[0])
        seed.value = 2 ** 32 - 1  # set from Python: the largest seed
        assert seed._box.value == 2 ** 32 - 1
        seed._slider.value = 42  # dragging the slider picks seeds in its range again
        assert seed.value == 42 and seed._box.value == 42
        with pytest.raises(Exception, match="2\\*\\*32"):
            seed.value = 2 ** 32
    finally:
        view.close()


def test_a_starting_psi_outside_the_slider_range_is_kept(G):
    view = LatentExplorer(G, psi=3.0, display_size=16)
    try:
        assert view.controls["psi"].value == 3.0  # a FloatSlider clamps to [min, max]
        assert np.array_equal(np.asarray(view.render_sync()), X.generate_arrays(G, [0], psi=3.0, progress=False)[0])
    finally:
        view.close()


def test_close_closes_every_widget(G):
    view = StyleMixer(G, display_size=16)
    view.wait(60)
    from sg3lib.explore.widgets import _descendants
    parts = list(_descendants(view.widget))
    assert len(parts) > 8  # boxes, the seed slider and box, the image, the caption
    view.close()
    assert all(w.comm is None for w in parts) and not view._thread.is_alive()


_CLOSE_WHILE_RENDERING = """
import sys, time
from sg3lib.explore import tiny_generator
from sg3lib.explore.widgets import LatentExplorer
view = LatentExplorer(tiny_generator(resolution=128), display_size=16, debounce=0)
view.wait(60)
view.controls["seed"].value = 3  # the worker starts rendering ...
time.sleep(0.03)
if sys.argv[1] == "close":
    view.close()                 # ... and the script closes the view or just ends meanwhile
"""


@pytest.mark.parametrize("how", ["close", "exit"])
def test_ending_a_script_while_a_render_runs_is_clean(tmp_path, how):
    """The process used to abort ('terminate called without an active exception', exit status 134)
    when it ended with the worker thread inside torch; close() and exit now wait for the render."""
    import os
    import subprocess
    import sys
    script = tmp_path / "s.py"
    script.write_text(_CLOSE_WHILE_RENDERING)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    r = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]  # before the fix: 134 (close: every run here; exit: often)


_RERUN_CELLS = """
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_cell("from sg3lib.explore import tiny_generator\\n"
            "from sg3lib.explore.widgets import LatentExplorer, StyleMixer\\n"
            "G = tiny_generator()", cell_id="setup")
def run(source, cell_id=None):
    r = ip.run_cell(source, cell_id=cell_id)
    assert r.success, r.error_in_exec
cell = "view = LatentExplorer(G, display_size=16)\\nview"
run(cell, "a")
first = ip.user_ns["view"]
run("other = StyleMixer(G, display_size=16)", "b")              # another cell: stays
run(cell, "a")                                                    # the same cell again: replaces `first`
second = ip.user_ns["view"]
assert first is not second and not first._thread.is_alive(), "the first view's worker still runs"
assert second._thread.is_alive() and ip.user_ns["other"]._thread.is_alive()
run("view = StyleMixer(G, display_size=16)", "a")                # the cell edited: still the same cell
assert not second._thread.is_alive()
third = ip.user_ns["view"]
run("pair = [LatentExplorer(G, display_size=16) for _ in range(2)]", "c")   # one run, two views: both stay
assert all(v._thread.is_alive() for v in ip.user_ns["pair"])
run(cell)                                                         # no cell id (e.g. classic Notebook): the
fourth = ip.user_ns["view"]                                       # source text tells a rerun apart
run(cell)
assert not fourth._thread.is_alive() and ip.user_ns["view"]._thread.is_alive() and third._thread.is_alive()
print("ok")
"""


def test_running_a_cell_again_stops_the_view_it_made_before(tmp_path):
    """Rerunning a notebook cell that makes a widget left the old one's worker thread (and the
    network, widgets and images it holds) alive for the rest of the session; now the new view
    closes the views that an earlier run of the same cell made."""
    import os
    import subprocess
    import sys
    script = tmp_path / "cells.py"
    script.write_text(_RERUN_CELLS)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + os.environ.get("PYTHONPATH", "").split(os.pathsep)),
               OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.stdout + r.stderr)[-3000:]


def test_widgets_refuse_a_fractional_seed_and_a_bad_debounce(G):
    """LatentExplorer(seed=7.9) showed seed 7 (the explore functions refuse 7.9); debounce=None killed
    the worker thread at its first render with nothing shown in the widget."""
    with pytest.raises(ValueError, match="seed 7.9 is not a whole number"):
        LatentExplorer(G, seed=7.9, display_size=16)
    with pytest.raises(ValueError, match="seed 1.5 is not a whole number"):
        StyleMixer(G, style_seed=1.5, display_size=16)
    for bad in (None, -1, float("nan"), float("inf")):  # inf: a worker asleep for ever
        with pytest.raises(ValueError, match="debounce="):
            LatentExplorer(G, display_size=16, debounce=bad)
    view = LatentExplorer(G, seed=7.0, display_size=16)  # a whole float is that seed
    try:
        assert view.controls["seed"].value == 7
    finally:
        view.close()
