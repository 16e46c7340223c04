"""Datasets: curate raw images into the official StyleGAN format, and read that format.

    curate(src, dest, resolution, **options)   messy folder/zip -> dataset zip + report
    ImageDataset(path, resolution=None, use_labels=False, xflip=False)   torch Dataset

ImageDataset is imported on first use, so `sg3 curate` (and its worker processes) do not
pay for importing torch.
"""
from .curate import CurateError, curate

__all__ = ["curate", "CurateError", "ImageDataset", "DatasetError"]


def __getattr__(name):
    if name in ("ImageDataset", "DatasetError"):
        from . import dataset
        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
