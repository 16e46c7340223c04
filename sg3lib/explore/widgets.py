"""Slider widgets (ipywidgets) for looking inside a generator in Jupyter or Colab.

    from sg3lib.explore.widgets import LatentExplorer, Interpolator, StyleMixer
    LatentExplorer(G)          # the last expression of a cell displays it

Rendering never blocks the kernel: slider events only record that a new state is wanted; one
worker thread per widget renders the latest state after a short debounce, so a burst of slider
events costs one render and stale states are dropped. The caption under the image names the
values that image was rendered with. For scripts and tests: `.render_sync()` renders the
current state in the calling thread, `.wait()` blocks until the worker has caught up;
`.close()` (also run at exit) waits for a render in progress, then closes every widget.
Running a notebook cell again closes the views its earlier run made (their workers stop); views
made by other cells stay open.

A seed is a slider (0..100000, for scrubbing) with a box beside it that takes any seed below
2**32. psi's slider spans the official visualizer's [-1, 2], widened to a starting psi outside it.
"""
import atexit
import html
import io
import numbers
import sys
import threading
import time
import weakref

import ipywidgets as W
import numpy as np
import torch
import traitlets
from PIL import Image

from . import latents as L
from .generate import synthesize, to_pil

__all__ = ["LatentExplorer", "Interpolator", "StyleMixer"]

_SEED_MAX = 100_000  # the seed slider's range; the box beside it takes any seed (seeds are < 2**32)
_PSI_RANGE = (-1.0, 2.0)  # the official visualizer's psi slider; widened to fit a starting psi outside it
_live = weakref.WeakSet()  # views whose worker may still be rendering (closed at exit, see _close_all)


class _LiveView:
    """Controls + image + caption, rendered by a worker thread. Subclasses define render(state)."""

    def __init__(self, G, controls, display_size=256, debounce=0.01):
        if isinstance(debounce, bool) or not isinstance(debounce, numbers.Real) or not 0 <= debounce < float("inf"):
            # (the worker thread sleeps it outside the try that shows errors: it died with nothing shown)
            raise ValueError(f"debounce={debounce!r}: seconds to let slider events settle, a number >= 0")
        self.G, self.controls, self.display_size, self.debounce = G, controls, display_size, debounce
        self.image = W.Image(format="png")
        # shown at its own pixel size (a VBox would stretch it to the page width), never wider than the page
        self.image.layout = W.Layout(align_self="flex-start", max_width="100%", height="auto", object_fit="contain")
        self.caption = W.HTML()
        self.widget = W.VBox([W.VBox(list(controls.values())), self.image, self.caption])
        self.renders = 0            # images shown so far (tests and benchmarks read these)
        self.last_render_s = None   # time of the last render itself
        self.last_latency_s = None  # from the newest request to its image being shown
        self._cond = threading.Condition()
        self._wanted = self._done = 0
        self._t_wanted = time.perf_counter()
        self._closed = False
        for w in controls.values():
            w.observe(self._on_change, names="value")
        self._cell = _running_cell()
        _close_earlier_runs(self._cell)
        self._thread = threading.Thread(target=self._work, daemon=True, name=type(self).__name__)
        self._thread.start()
        _live.add(self)
        self.request()

    # ---- state and requests
    def state(self):
        """The current control values, as a dict."""
        return {k: w.value for k, w in self.controls.items()}

    def _on_change(self, change):
        self.request()

    def request(self):
        """Ask for a render of the current state; returns at once."""
        with self._cond:
            self._wanted += 1
            self._t_wanted = time.perf_counter()
            self._cond.notify_all()

    def _work(self):
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wanted != self._done)
                if self._closed:
                    return
            time.sleep(self.debounce)  # let a burst of slider events settle, then take the newest
            with self._cond:
                version, t0 = self._wanted, self._t_wanted
            try:
                self._show(self.state())
            except Exception as e:  # show the problem where the user looks, keep the thread alive
                self.caption.value = f"<span style='color:#b00'>render failed: {html.escape(repr(e))}</span>"
            with self._cond:
                self.last_latency_s = time.perf_counter() - t0
                self._done = version
                self._cond.notify_all()

    def wait(self, timeout=30.0):
        """Block until the newest requested state is shown; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done == self._wanted, timeout)

    def render_sync(self):
        """Render and show the current state in this thread; returns the PIL image."""
        return self._show(self.state())

    def close(self, timeout=60.0):
        """Stop the worker thread (waiting up to `timeout` s for a render in progress to finish: a
        process that exits while torch renders in a daemon thread aborts) and close the widgets."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        _live.discard(self)
        for w in _descendants(self.widget):  # closing a box leaves its children's comms open
            for part in (getattr(w, "layout", None), getattr(w, "style", None), w):
                if part is not None:
                    part.close()

    # ---- display
    def _show(self, state):
        t = time.perf_counter()
        img = to_pil(self.render(state))  # [H, W, 1] (grayscale networks) -> an 'L' image
        if max(img.size) < self.display_size:  # small models: enlarge with visible pixels
            k = self.display_size // max(img.size)
            img = img.resize((img.width * k, img.height * k), Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="png", compress_level=1)
        self.last_render_s = time.perf_counter() - t
        if self.image.width != str(img.width):
            self.image.width = str(img.width)
        self.image.value = buf.getvalue()
        self.caption.value = f"<code>{html.escape(self.describe(state))}</code>"
        self.renders += 1
        return img

    def describe(self, state):
        return " | ".join(f"{k} {_fmt(v)}" for k, v in state.items())

    def render(self, state):
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def display(self):
        from IPython.display import display
        display(self.widget)


def _descendants(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from _descendants(c)


def _running_cell():
    """(cell, run) of the notebook cell running now, None outside IPython. The cell is its id where
    the front end sends one (JupyterLab, Notebook 7), else its source text (e.g. the classic Notebook);
    the run is a weak reference to IPython's result object for this execution of it."""
    ipython = sys.modules.get("IPython")  # not imported: not in a notebook
    shell = ipython.get_ipython() if ipython else None
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    info = getattr(result, "info", None)
    if info is None:
        return None
    try:
        return (getattr(info, "cell_id", None) or info.raw_cell), weakref.ref(result)
    except TypeError:  # an IPython whose results take no weak reference: views are not replaced
        return None


def _close_earlier_runs(cell):
    """Running a cell again replaces the view its last run showed: close the views an earlier run
    of the same cell made (each kept its worker thread, the network and its images alive for the
    rest of the session). Views made by this run, or by other cells, stay."""
    if cell is None:
        return
    for view in list(_live):
        old = view._cell
        if old is not None and old[0] == cell[0] and old[1]() is not cell[1]():
            view.close()


@atexit.register
def _close_all():
    """At exit, stop the views still open, so no worker is inside torch when the interpreter ends."""
    for view in list(_live):
        view.close(timeout=30.0)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, tuple):
        return "-".join(map(str, v))
    return str(v)


class _SeedControl(W.HBox):
    """A seed: a slider over 0.._SEED_MAX to scrub through seeds, and a box beside it that takes
    any seed in [0, 2**32) (an IntSlider clamps what is typed into it to its max, which would
    silently show another seed). `.value` is the seed; above the slider's range the slider rests
    at its end and the box holds the seed."""
    value = traitlets.Int(0)

    def __init__(self, description, value=0):
        self._slider = W.IntSlider(value=0, min=0, max=_SEED_MAX, description=description, readout=False,
                                   continuous_update=True)
        self._box = W.BoundedIntText(value=0, min=0, max=2 ** 32 - 1, layout=W.Layout(width="9em"))
        self._syncing = False
        super().__init__([self._slider, self._box])
        self.observe(self._to_parts, names="value")
        self._slider.observe(self._from_part, names="value")
        self._box.observe(self._from_part, names="value")
        self.value = L._whole_seed(value)  # (int() made seed=7.9 seed 7, which the explore functions refuse)
        self._to_parts()  # value 0 fires no change

    @traitlets.validate("value")
    def _valid(self, proposal):
        v = int(proposal["value"])
        if not 0 <= v < 2 ** 32:
            raise traitlets.TraitError(f"seed {v} is out of range: seeds are integers in [0, 2**32)")
        return v

    def _to_parts(self, change=None):
        self._syncing = True
        try:
            self._box.value = self.value
            self._slider.value = min(self.value, self._slider.max)
        finally:
            self._syncing = False

    def _from_part(self, change):
        if not self._syncing:
            self.value = change["new"]


def _seed(desc, value):
    return _SeedControl(desc, value)


def _psi(value=0.7):
    lo, hi = min(_PSI_RANGE[0], value), max(_PSI_RANGE[1], value)  # a starting psi is kept, not clamped
    return W.FloatSlider(value=value, min=lo, max=hi, step=0.05, description="psi", continuous_update=True)


def _class_controls(G):
    if not G.c_dim:
        return {}
    return {"class": W.Dropdown(options=list(range(G.c_dim)), value=0, description="class"),
            "centre": W.Dropdown(options=["global", "class"], value="class", description="psi centre")}


def _map(G, seeds, s, cutoff=None):
    z = L.seeds_to_z(seeds, G.z_dim)
    return L.map_z(G, z, s.get("class"), s["psi"], cutoff, s.get("centre", "global"))


class LatentExplorer(_LiveView):
    """One image from a seed: psi, truncation cutoff, class (conditional nets), noise mode, and
    for StyleGAN3 translate x/y and rotate (through synthesis.input.transform)."""

    def __init__(self, G, seed=0, psi=0.7, display_size=256, debounce=0.01):
        c = {"seed": _seed("seed", seed), "psi": _psi(psi),
             "cutoff": W.IntSlider(value=G.num_ws, min=1, max=G.num_ws, description="cutoff"),
             **_class_controls(G),
             "noise": W.Dropdown(options=["const", "random", "none"], value="const", description="noise")}
        if L.is_stylegan3(G):
            c["x"] = W.FloatSlider(value=0.0, min=-1.0, max=1.0, step=0.01, description="translate x")
            c["y"] = W.FloatSlider(value=0.0, min=-1.0, max=1.0, step=0.01, description="translate y")
            c["rotate"] = W.FloatSlider(value=0.0, min=-180.0, max=180.0, step=1.0, description="rotate")
        super().__init__(G, c, display_size, debounce)

    def render(self, s):
        cutoff = None if s["cutoff"] >= self.G.num_ws else s["cutoff"]
        ws = _map(self.G, [s["seed"]], s, cutoff)
        tf = L.make_transform((s["x"], s["y"]), s["rotate"]) if "rotate" in s else None
        return synthesize(self.G, ws, s["noise"], transforms=tf)[0]


class Interpolator(_LiveView):
    """Between two seeds: t in [0, 1], lerp or slerp, in Z (then map) or in W. The method 'auto'
    (the default) follows the space: slerp in Z, lerp in W (latents.default_method); 'slerp' or
    'lerp', picked by the buttons or the `method` argument, is kept when the space changes.
    'auto' is a button of its own so that every pick is a change: clicking the button already
    selected sends nothing, so a followed 'slerp' could not be told from a picked one."""

    def __init__(self, G, seed_a=0, seed_b=1, psi=0.7, display_size=256, debounce=0.01, space="z",
                 method=None):
        c = {"seed_a": _seed("seed A", seed_a), "seed_b": _seed("seed B", seed_b),
             "t": W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, description="t"),
             "method": W.ToggleButtons(options=["auto", "slerp", "lerp"], value=method or "auto",
                                       description="method",
                                       tooltips=["slerp in Z, lerp in W", "spherical", "straight line"]),
             "space": W.ToggleButtons(options=["z", "w"], value=space, description="space"),
             "psi": _psi(psi), **_class_controls(G)}
        super().__init__(G, c, display_size, debounce)

    @staticmethod
    def resolved_method(s):
        """The interpolation a state renders with: 'auto' is the space's default."""
        return L.default_method(s["space"]) if s["method"] == "auto" else s["method"]

    def describe(self, state):  # the caption names the method rendered, 'slerp (auto)'
        if state["method"] == "auto":
            state = {**state, "method": f"{self.resolved_method(state)} (auto)"}
        return super().describe(state)

    def render(self, s):
        G, method = self.G, self.resolved_method(s)
        if s["space"] == "z":
            za, zb = L.seeds_to_z([s["seed_a"], s["seed_b"]], G.z_dim)
            z = L.interpolate(za[None], zb[None], s["t"], method)
            ws = L.map_z(G, z, s.get("class"), s["psi"], None, s.get("centre", "global"))
        else:
            wa, wb = _map(G, [s["seed_a"], s["seed_b"]], s)
            ws = L.interpolate(wa[None], wb[None], s["t"], method)
        return synthesize(G, ws, "const")[0]


class StyleMixer(_LiveView):
    """Base seed | style seed | mix: the mix takes the base's ws and the style seed's ws on the
    chosen layer range (presets coarse / middle / fine set the range slider)."""

    def __init__(self, G, base_seed=0, style_seed=1, layers="coarse", psi=0.7, display_size=256, debounce=0.01):
        lo, hi = L.layer_range(layers, G)
        self._presets = {k: (a, b - 1) for k, (a, b) in L.layer_ranges(G).items()}
        c = {"base": _seed("base seed", base_seed), "style": _seed("style seed", style_seed),
             "preset": W.Dropdown(options=list(self._presets) + ["custom"],
                                  value=layers if isinstance(layers, str) and layers in self._presets
                                  else self._preset_of((lo, hi - 1)), description="preset"),
             "layers": W.IntRangeSlider(value=(lo, hi - 1), min=0, max=G.num_ws - 1, description="ws layers"),
             "psi": _psi(psi), **_class_controls(G)}
        c["preset"].observe(self._on_preset, names="value")
        c["layers"].observe(self._on_layers, names="value")
        self._cache = {}  # ws bytes -> image, see _images
        super().__init__(G, c, display_size * 3, debounce)

    def _preset_of(self, layers):
        """The preset whose range is `layers` (inclusive), else 'custom': (0, 2) given as a tuple is
        'coarse' where that is coarse, and a list [lo, hi] is a range, not a dict key."""
        return next((k for k, r in self._presets.items() if r == tuple(layers)), "custom")

    def _on_preset(self, change):
        if change["new"] in self._presets:
            self.controls["layers"].value = self._presets[change["new"]]

    def _on_layers(self, change):  # a hand-picked range is no longer the preset
        if self._presets.get(self.controls["preset"].value) != tuple(change["new"]):
            self.controls["preset"].value = "custom"

    def render(self, s):
        lo, hi = s["layers"]
        wb, ws_ = _map(self.G, [s["base"], s["style"]], s)
        mix = wb.clone()
        mix[lo:hi + 1] = ws_[lo:hi + 1]
        return np.concatenate(self._images([wb, ws_, mix]), axis=1)

    def _images(self, ws_list):
        """Images for ws, remembering recent ones: moving the layer range re-renders only the
        mix, and changing one seed renders that seed's image and the mix, not all three."""
        keys = [w.cpu().numpy().tobytes() for w in ws_list]  # ws live on G's device (cuda)
        cache = self._cache
        todo = [i for i, k in enumerate(keys) if k not in cache and k not in keys[:i]]
        if todo:
            for i, img in zip(todo, synthesize(self.G, torch.stack([ws_list[i] for i in todo]), "const")):
                cache[keys[i]] = img
        for k in keys:  # most recently used last
            cache[k] = cache.pop(k)
        for k in list(cache)[:-8]:
            del cache[k]
        return [cache[k] for k in keys]
