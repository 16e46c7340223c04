"""Low-pass filter design (sg3lib.filters): the paper's filters from the layer facts, and their properties."""
import json

import numpy as np
import pytest
import torch

from sg3lib.filters import _jinc, design_lowpass, design_lowpass_filter, kaiser_attenuation, kaiser_beta, setup_filter


def test_kaiser_formulas_known_values():
    # Values from Kaiser's formulas as tabulated in common DSP references.
    assert kaiser_attenuation(211, 0.0375) == pytest.approx(64.48099630593983, rel=1e-12)
    assert kaiser_beta(65) == pytest.approx(6.20426, rel=1e-6)
    assert kaiser_beta(30) == pytest.approx(0.5842 * 9 ** 0.4 + 0.07886 * 9, rel=1e-12)
    assert kaiser_beta(23) == pytest.approx(0.5842 * 2 ** 0.4 + 0.07886 * 2, rel=1e-12)  # just past 21 dB
    assert kaiser_beta(10) == 0.0


@pytest.mark.parametrize("name", ["sg3t_64", "sg3r_64", "sg3t_256_cond"])
def test_filters_from_layer_facts_equal_official_buffers(fixtures_dir, name):
    """Each layer's up/down filter, designed from the published facts (taps, cutoff, half-width,
    rate, radial), equals the official network's buffer."""
    facts = json.loads((fixtures_dir / f"{name}.json").read_text())["synthesis_facts"]
    state = np.load(fixtures_dir / f"{name}.npz")
    n = 0
    for f in facts["layers"]:
        for kind, cutoff, hw, radial in [("up", f["in_cutoff"], f["in_half_width"], False),
                                         ("down", f["out_cutoff"], f["out_half_width"], f["down_radial"])]:
            h = design_lowpass_filter(f[f"{kind}_taps"], cutoff, hw * 2, f["tmp_sampling_rate"], radial=radial)
            key = f"state/synthesis.{f['name']}.{kind}_filter"
            if h is None:
                assert f[f"{kind}_taps"] == 1 and key not in state.files
                continue
            ref = torch.from_numpy(state[key])
            assert h.shape == ref.shape and torch.allclose(h, ref, rtol=0, atol=1e-7), key
            n += 1
    assert n == 28


def _response(h, freqs, fs):
    """|H(f)| of a 1-D FIR at frequencies f (Hz) for sampling rate fs."""
    m = np.arange(len(h)) - (len(h) - 1) / 2
    return np.abs(np.exp(-2j * np.pi * np.outer(freqs, m) / fs) @ h)


@pytest.mark.parametrize("numtaps,cutoff,half_width,fs", [(12, 2, 6, 32), (24, 4, 10.96, 64), (12, 32, 7.4, 128)])
def test_separable_filter_is_a_lowpass_with_the_designed_stopband(numtaps, cutoff, half_width, fs):
    h = design_lowpass(numtaps, cutoff, half_width * 2, fs)
    assert h.shape == (numtaps,) and h.sum() == pytest.approx(1, abs=1e-12)
    assert np.allclose(h, h[::-1])  # linear phase
    atten = kaiser_attenuation(numtaps, half_width * 2 / (fs / 2))
    ripple = 10 ** (-atten / 20)
    stop = np.linspace(cutoff + half_width, fs / 2, 200)
    assert _response(h, stop, fs).max() < 3 * ripple + 1e-4
    assert _response(h, [0], fs)[0] == pytest.approx(1, abs=1e-12)
    if cutoff > half_width:  # a real passband: flat to the ripple, and halfway down at the cutoff
        assert np.abs(_response(h, np.linspace(0, cutoff - half_width, 50), fs) - 1).max() < 3 * ripple + 1e-4
        assert _response(h, [cutoff], fs)[0] == pytest.approx(0.5, abs=0.05)


def test_radial_filter_is_symmetric_unit_gain_and_nearly_isotropic():
    numtaps, cutoff, half_width, fs = 12, 20.16, 11.84, 128
    h = design_lowpass(numtaps, cutoff, half_width * 2, fs, radial=True)
    assert h.shape == (numtaps, numtaps) and h.sum() == pytest.approx(1, abs=1e-12)
    assert np.allclose(h, h.T) and np.allclose(h, h[::-1]) and np.allclose(h, h[:, ::-1])
    m = np.arange(numtaps) - (numtaps - 1) / 2

    def resp(fx, fy):
        e = np.exp(-2j * np.pi * (fx * m[None, :] + fy * m[:, None]) / fs)
        return abs((h * e).sum())

    for r in [0.5 * cutoff, cutoff, cutoff + half_width]:
        along_axis, diagonal = resp(r, 0), resp(r / np.sqrt(2), r / np.sqrt(2))
        assert abs(along_axis - diagonal) < 0.05, (r, along_axis, diagonal)
    # a separable filter is not isotropic at the cutoff: the radial one must beat it there
    s = design_lowpass(numtaps, cutoff, half_width * 2, fs)
    s2 = np.outer(s, s)
    e = lambda fx, fy: abs((s2 * np.exp(-2j * np.pi * (fx * m[None, :] + fy * m[:, None]) / fs)).sum())
    assert abs(e(cutoff, 0) - e(cutoff / np.sqrt(2), cutoff / np.sqrt(2))) > 0.1


def test_radial_filter_with_odd_taps_has_finite_centre():
    h = design_lowpass(7, 4, 8, 32, radial=True)
    assert np.isfinite(h).all() and h[3, 3] == h.max()
    # J1(2 pi c r) / (pi r) -> c as r -> 0: the centre tap is the limit, continuous with its neighbourhood
    near = _jinc(np.array([0.0, 1e-6, 1e-3]), 4.0)
    assert near[0] == 4.0 and near[1:] == pytest.approx([4.0, 4.0], rel=1e-3)


def test_identity_and_setup_filter():
    assert design_lowpass(1, 2, 4, 16) is None and design_lowpass_filter(1, 2, 4, 16) is None
    with pytest.raises(ValueError, match="numtaps"):
        design_lowpass(0, 2, 4, 16)
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and torch.allclose(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert setup_filter([1, 3, 3, 1], gain=4).sum().item() == pytest.approx(4)
    t = torch.tensor([1., 2, 1])
    assert torch.equal(setup_filter([1, 2, 1], normalize=False), torch.outer(t, t))
    # 8 taps or more stay 1-D, applied along both axes: each axis carries sqrt(gain)
    long = setup_filter([1] * 8, gain=4)
    assert long.shape == (8,) and long.sum().item() ** 2 == pytest.approx(4)
    assert setup_filter(np.array([1.0, 3, 3, 1])).dtype == torch.float32  # whatever the input's dtype
    for identity in (None, 2.0):  # no filter, or a scalar: the 1x1 identity
        assert torch.equal(setup_filter(identity), torch.ones(1, 1))


@pytest.mark.parametrize("cutoff,fs", [(8, 16), (10, 16), (0, 16), (-1, 16), (2, 0)])
def test_cutoff_outside_zero_to_nyquist_is_refused(cutoff, fs):
    """A cutoff at or above fs/2 (or a non-positive one) is no low-pass: refuse it instead of
    returning a filter that passes aliases (sinc(c m) with c >= 1)."""
    for radial in (False, True):
        with pytest.raises(ValueError, match="cutoff" if fs > 0 else "fs \\(sampling rate\\) must be > 0"):
            design_lowpass(6, cutoff, 2, fs, radial=radial)
