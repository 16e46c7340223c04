"""Exponential moving average of the generator's weights (Karras et al. 2018/2020).

The half-life is `ema_kimg` thousand images; during the first part of training it is shortened
to `ema_rampup * images seen` so that the average is not dominated by the random initial weights
(0 or None: no ramp-up, for a run that starts from trained weights).
"""
import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn


def ema_beta(cur_nimg, batch, ema_kimg, ema_rampup=None):
    ema_nimg = ema_kimg * 1000
    if ema_rampup:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema, G, beta):
    """G_ema <- beta * G_ema + (1 - beta) * G; buffers (w_avg, magnitude EMA, filters) are copied."""
    # torch's multi-tensor EMA: a few fused launches on a GPU instead of one per parameter.
    get_ema_multi_avg_fn(beta)(list(G_ema.parameters()), [p.detach() for p in G.parameters()], None)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b.detach())
