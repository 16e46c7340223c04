"""sg3lib: a notebook-first StyleGAN3 toolkit.

Public API (kept small; see README.md):
    sg3lib.load(path_or_url, device='cpu')  -> {'G', 'D', 'G_ema', 'meta'}
    sg3lib.ops                               numerical primitives (upfirdn2d, filtered_lrelu, bias_act)
    sg3lib.networks                          generator / discriminator modules
    sg3lib.data, sg3lib.train, sg3lib.explore, sg3lib.compat (official .pkl files)

The subpackages are imported when first used (`import sg3lib` stays cheap: no torch), so
`sg3lib.compat.official_pkl.write_official_pkl(...)` works after a plain `import sg3lib`.
"""
import importlib

__version__ = "0.1.0"

from .loader import LoadError  # noqa: F401  (stdlib-only import: cheap)

SUBPACKAGES = ("ops", "networks", "data", "train", "explore", "compat")


def load(path_or_url, device="cpu", **kwargs):
    """Load an official .pkl, an sg3lib snapshot or a URL of either. See sg3lib.loader.load."""
    from .loader import load as _load
    return _load(path_or_url, device=device, **kwargs)


def __getattr__(name):
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(SUBPACKAGES))
