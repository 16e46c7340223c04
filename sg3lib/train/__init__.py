"""Training: StyleGAN3-T/-R and StyleGAN2 with ADA, exact resume, multi-process (torchrun).

    from sg3lib.train import train
    train('dataset.zip', 'runs/cats', cfg='stylegan3-t', kimg=1000, resume='latest')

Files: config (presets), loss (losses per phase), augment (ADA), ema, loop (train),
distributed (devices, torchrun), stats (stats.jsonl), cli (`sg3 train`).
"""
from .config import PRESETS, make_config
from .loop import TrainError, TrainingInterrupted, train

__all__ = ["train", "TrainError", "TrainingInterrupted", "make_config", "PRESETS"]
