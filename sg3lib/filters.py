"""Low-pass filter design for alias-free synthesis (Karras et al. 2021, sec. 3 and appendix C).

Every StyleGAN3 layer up- and downsamples with windowed-sinc low-pass filters whose cutoff and
transition band follow the layer schedule. The filters are designed here, in float64 with numpy,
from the constructor arguments alone (they are also saved in checkpoints, as buffers):

- separable: Kaiser-windowed sinc, h[n] = 2 f_c/f_s sinc(2 f_c/f_s m) w_K[n], normalised to unit DC gain;
- radial (config R): the 2-D rotation-invariant counterpart, a jinc (J1(2 pi f_c r) / (pi r))
  windowed by the outer product of two 1-D Kaiser windows, normalised to unit DC gain.

The Kaiser window's beta comes from Kaiser's empirical formulas for a transition band of
`width` (Hz, i.e. twice the paper's half-width) and `numtaps` taps.
"""
import math

import numpy as np
import torch


def kaiser_attenuation(numtaps, width_rel):
    """Stop-band attenuation (dB) reached by a Kaiser FIR of numtaps taps and relative transition
    width width_rel (fraction of Nyquist): A = 2.285 (N - 1) pi width + 7.95 (Kaiser 1974)."""
    return 2.285 * (numtaps - 1) * math.pi * width_rel + 7.95


def kaiser_beta(atten):
    """Kaiser window shape parameter for a stop-band attenuation of atten dB (Kaiser 1974)."""
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def kaiser_window(numtaps, width, fs):
    """1-D Kaiser window for a filter at sampling rate fs with a transition band `width` Hz wide."""
    beta = kaiser_beta(kaiser_attenuation(numtaps, width / (fs / 2)))
    return np.kaiser(numtaps, beta)


def _jinc(r, cutoff):
    """J1(2 pi cutoff r) / (pi r): the ideal radial low-pass of radius `cutoff`; equals cutoff at r = 0."""
    arg = torch.as_tensor(2 * cutoff * np.pi * r, dtype=torch.float64, device="cpu")  # (also under a meta or cuda default)
    j1 = torch.special.bessel_j1(arg).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = j1 / (np.pi * r)
    return np.where(r == 0, cutoff, out)


def design_lowpass(numtaps, cutoff, width, fs, radial=False):
    """Design a low-pass FIR filter (float64 numpy array); None when numtaps == 1 (identity).

    numtaps: filter length; cutoff: cutoff frequency f_c; width: transition band width
    (2 x the half-width f_h); fs: sampling rate. Separable filters are 1-D (applied along both
    axes), radial filters are 2-D [numtaps, numtaps]. Both have unit DC gain.
    """
    numtaps = int(numtaps)
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    if not fs > 0:
        raise ValueError(f"fs (sampling rate) must be > 0, got {fs}")
    if not 0 < cutoff < fs / 2:  # at or above Nyquist the "low-pass" passes aliases (sinc(c m), c >= 1)
        raise ValueError(f"cutoff must lie strictly between 0 and fs / 2 = {fs / 2:g}, got {cutoff:g}")
    window = kaiser_window(numtaps, width, fs)
    m = np.arange(numtaps) - (numtaps - 1) / 2
    if not radial:
        c = cutoff / (fs / 2)  # cutoff relative to Nyquist
        h = c * np.sinc(c * m) * window
        return h / h.sum()
    x = m / fs
    r = np.hypot(*np.meshgrid(x, x))
    h = _jinc(r, cutoff) * np.outer(window, window)
    return h / h.sum()


def design_lowpass_filter(numtaps, cutoff, width, fs, radial=False):
    """design_lowpass() as a float32 torch tensor (or None), ready to register as a buffer."""
    h = design_lowpass(numtaps, cutoff, width, fs, radial)
    return None if h is None else torch.as_tensor(h, dtype=torch.float32)


def setup_filter(f, normalize=True, gain=1):
    """A small FIR filter such as [1, 3, 3, 1] as a float32 tensor for upfirdn2d (StyleGAN2 blur).

    1-D filters shorter than 8 taps become their 2-D outer product (as the official networks store
    them, e.g. resample_filter [4, 4]); normalize scales to unit sum; gain multiplies the DC gain."""
    f = torch.as_tensor([1] if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    return f * (gain ** (f.ndim / 2))
