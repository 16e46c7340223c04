"""sg3lib.explore: seeds, truncation, interpolation, paths and grids on tiny real networks."""
import numpy as np
import pytest
import torch

from sg3lib import explore as X
from test_explore_helpers import make_G


@pytest.fixture(scope="module")
def G():
    return make_G()


# ----------------------------------------------------------------------------- seeds and truncation

@pytest.mark.parametrize("seed", [0, 1, 42, 2 ** 32 - 1])
def test_seed_gives_the_official_z(seed):
    expected = np.random.RandomState(seed).randn(512)
    assert np.array_equal(X.seed_to_z(seed, 512), expected)
    z = X.seeds_to_z([seed, 7], 512)
    assert torch.equal(z[0], torch.from_numpy(expected).float())
    assert torch.equal(z[1], torch.from_numpy(np.random.RandomState(7).randn(512)).float())


def test_seed_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="2\\*\\*32"):
        X.seed_to_z(2 ** 32, 4)
    for bad in (1.5, "1", None, True, float("nan")):  # 1.5 was silently seed 1, "1" seed 1 too
        with pytest.raises(ValueError, match="seed"):
            X.seed_to_z(bad, 4)
        with pytest.raises(ValueError, match="seed"):
            X.seeds_to_z([0, bad], 4)
    assert np.array_equal(X.seed_to_z(np.int64(3), 4), X.seed_to_z(3.0, 4))  # whole numbers of any type


def test_parse_seeds():
    assert X.parse_seeds("0-3,7, 10") == [0, 1, 2, 3, 7, 10]
    assert X.parse_seeds([5, 6]) == [5, 6]
    with pytest.raises(ValueError, match="0-3,7,10"):
        X.parse_seeds("a-b")
    assert X.parse_seeds("5-5") == [5]
    with pytest.raises(ValueError, match="backwards.*'3-7'"):  # not silently no seeds at all
        X.parse_seeds("7-3")
    assert X.parse_seeds("4294967294-4294967295") == [2 ** 32 - 2, 2 ** 32 - 1]  # the last seeds there are
    with pytest.raises(ValueError, match="seed 4294967296 is out of range"):
        X.parse_seeds("4294967295-4294967296")


def test_seeds_as_arrays_and_whole_numbers_only():
    """np.arange(4) / torch.arange(4) as seeds were 'cannot read seeds array([0, 1, 2, 3])'; a seed 1.5
    was silently seed 1. Any sequence of whole numbers is seeds; anything else is refused by name."""
    assert X.parse_seeds(np.arange(3)) == X.parse_seeds(torch.arange(3)) == X.parse_seeds(range(3)) == [0, 1, 2]
    assert X.parse_seeds([np.int64(4), 5.0]) == [4, 5] and X.parse_seeds(7) == [7]
    G = make_G()
    assert np.array_equal(X.generate_arrays(G, np.array([1, 2]), progress=False),
                          X.generate_arrays(G, [1, 2], progress=False))
    for bad in ([1.5], [float("nan")], ["x"], np.array([0.5])):
        with pytest.raises(ValueError, match="whole number"):
            X.parse_seeds(bad)


def test_generate_is_the_official_forward_for_a_seed(G):
    z = torch.from_numpy(np.random.RandomState(3).randn(G.z_dim)).float()[None]
    ref = X.to_uint8(G(z, torch.zeros(1, 0), truncation_psi=0.6, noise_mode="const"))
    out = X.generate_arrays(G, [3], psi=0.6, progress=False)
    assert np.array_equal(out, ref)
    pil = X.generate(G, [3, 4], psi=0.6, progress=False)
    assert pil[0].size == (16, 16) and np.array_equal(np.asarray(pil[0]), ref[0])


@pytest.mark.parametrize("psi,cutoff", [(0.7, None), (0.5, 4), (-0.5, 2)])
def test_map_z_truncation_matches_the_mapping_network(G, psi, cutoff):
    z = X.seeds_to_z([0, 1, 2], G.z_dim)
    ref = G.mapping(z, torch.zeros(3, 0), truncation_psi=psi, truncation_cutoff=cutoff)
    assert torch.equal(X.map_z(G, z, psi=psi, cutoff=cutoff), ref)  # bit for bit (an ulp moved a pixel now and then)
    untruncated = X.map_z(G, z)
    if cutoff is not None:  # layers past the cutoff keep their own ws
        assert torch.equal(X.map_z(G, z, psi=psi, cutoff=cutoff)[:, cutoff:], untruncated[:, cutoff:])


def test_truncation_arguments_are_checked(G):
    """psi=nan gave black images without a word, psi='0.5' a TypeError about tensor indices, cutoff=2.5
    truncated 2 layers and cutoff=-1 all but the last (Python slicing); class_idx=1.5 was class 1 and
    centre='bogus' passed whenever psi was 1. Each is now a ValueError naming the argument."""
    z = X.seeds_to_z([0], G.z_dim)
    Gc = make_G(c_dim=3)
    for call, match in ((lambda: X.map_z(G, z, psi=float("nan")), "psi=nan"),
                        (lambda: X.map_z(G, z, psi=float("inf")), "psi=inf"),
                        (lambda: X.map_z(G, z, psi="0.5"), "psi='0.5'"),
                        (lambda: X.map_z(G, z, psi=0.5, cutoff=2.5), "cutoff=2.5"),
                        (lambda: X.map_z(G, z, psi=0.5, cutoff=-1), "cutoff=-1"),
                        (lambda: X.map_z(G, z, centre="bogus"), "centre='bogus'"),
                        (lambda: X.generate_arrays(Gc, [0], class_idx=1.5, progress=False), "class_idx=1.5")):
        with pytest.raises(ValueError, match=match):
            call()
    # what the official mapping takes still works: whole numbers of any type, a cutoff past the last layer
    torch.testing.assert_close(X.map_z(G, z, psi=np.float32(0.5), cutoff=np.int64(2)), X.map_z(G, z, psi=0.5, cutoff=2))
    torch.testing.assert_close(X.map_z(G, z, psi=0.5, cutoff=99), X.map_z(G, z, psi=0.5))
    # a one-number torch tensor, as a numpy scalar (it was refused); several numbers are not one psi
    torch.testing.assert_close(X.map_z(G, z, psi=torch.tensor(0.5)), X.map_z(G, z, psi=0.5))
    with pytest.raises(ValueError, match=r"psi=tensor\(\[0.5000, 0.6000\]\)"):
        X.map_z(G, z, psi=torch.tensor([0.5, 0.6]))
    assert torch.equal(X.class_labels(Gc, np.int64(2)), X.class_labels(Gc, 2.0))


def test_class_centre_truncation():
    Gc = make_G(c_dim=3)
    z = X.seeds_to_z([0, 1], Gc.z_dim)
    centre = X.class_center(Gc, 2, n=500)
    c = torch.zeros(500, 3)
    c[:, 2] = 1
    mean = Gc.mapping(torch.randn(500, Gc.z_dim, generator=torch.Generator().manual_seed(0)), c).mean(0)
    torch.testing.assert_close(centre, mean, rtol=1e-5, atol=1e-5)
    ws0 = X.map_z(Gc, z, class_idx=2, psi=0.0, centre="class")
    assert torch.allclose(ws0[0], ws0[1]) and torch.allclose(ws0[0], X.class_center(Gc, 2))
    other = X.map_z(Gc, z, class_idx=0, psi=0.0, centre="class")
    assert not torch.allclose(other, ws0)  # each class keeps its own centre
    with pytest.raises(ValueError, match="conditional"):
        X.map_z(Gc, z)
    for past_the_last in (3, 5):  # (3 was an IndexError from the one-hot row)
        with pytest.raises(ValueError, match="out of range: this network has classes 0..2"):
            X.class_labels(Gc, past_the_last)
    unconditional = make_G()
    assert X.class_labels(unconditional, 0).shape == X.class_labels(unconditional, None).shape == (1, 0)
    with pytest.raises(ValueError, match="class_idx=1 given but this network is unconditional"):
        X.class_labels(unconditional, 1)
    # New weights in the same G (a newer snapshot loaded into it): the class's mean of the new network,
    # not the cached one of the old
    Gc.load_state_dict({k: v * 1.5 for k, v in Gc.state_dict().items()})
    mean = Gc.mapping(torch.randn(500, Gc.z_dim, generator=torch.Generator().manual_seed(0)), c).mean(0)
    torch.testing.assert_close(X.class_center(Gc, 2, n=500), mean, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- interpolation

def test_slerp_endpoints_and_norms():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 512, generator=g), torch.randn(5, 512, generator=g)
    b = b / b.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)  # equal norms
    torch.testing.assert_close(X.slerp(a, b, 0.0), a)
    torch.testing.assert_close(X.slerp(a, b, 1.0), b, rtol=1e-5, atol=1e-5)
    for t in (0.1, 0.5, 0.77):
        torch.testing.assert_close(X.slerp(a, b, t).norm(dim=-1), a.norm(dim=-1), rtol=1e-5, atol=1e-4)
    # lerp cuts through the inside of the sphere: its midpoint is shorter (what slerp avoids)
    assert (X.lerp(a, b, 0.5).norm(dim=-1) < 0.9 * a.norm(dim=-1)).all()
    # per-sample t, and ws-shaped inputs [N, num_ws, w_dim]
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    out = X.slerp(a, b, t)
    torch.testing.assert_close(out[0], a[0]) and torch.testing.assert_close(out[-1], b[-1], rtol=1e-5, atol=1e-5)
    w = torch.randn(2, 6, 8, generator=g)
    assert X.slerp(w[:1], w[1:], 0.3).shape == (1, 6, 8)
    # parallel inputs fall back to lerp instead of dividing by zero
    assert torch.isfinite(X.slerp(a, 2 * a, 0.5)).all()
    torch.testing.assert_close(X.slerp(a, 2 * a, 0.5), 1.5 * a)
    # nearly opposite (1e-5 rad off): on the great circle, norm kept (acos in float32 took them as opposite,
    # and the middle came out at 0.02 of the norm); exactly opposite has no circle: the documented 0
    near = -a + 1e-5 * torch.randn(5, 512, generator=g)
    near = near / near.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(X.slerp(a, near, 0.5).norm(dim=-1), a.norm(dim=-1), rtol=1e-2, atol=0)
    assert X.slerp(a, -a, 0.5).norm() == 0


def test_keyframe_path_passes_through_the_seeds(G):
    seeds = [3, 5, 9]
    keys = X.map_z(G, X.seeds_to_z(seeds, G.z_dim), psi=0.7)
    for space in ("z", "w"):
        open_path = X.keyframe_path(G, seeds, 9, space=space, loop=False, psi=0.7)
        assert open_path.shape == (9, G.num_ws, G.w_dim)
        torch.testing.assert_close(open_path[0], keys[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(open_path[4], keys[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(open_path[8], keys[2], rtol=1e-5, atol=1e-5)
        # endpoint adds the loop's closing frame; a path that does not loop already ends on its last seed
        assert torch.equal(X.keyframe_path(G, seeds, 9, space=space, loop=False, psi=0.7, endpoint=True), open_path)
        loop = X.keyframe_path(G, seeds, 12, space=space, psi=0.7, endpoint=True)
        assert len(loop) == 13
        torch.testing.assert_close(loop[4], keys[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loop[12], loop[0], rtol=1e-5, atol=1e-5)


def test_keyframe_easing(G):
    """easing='smooth' (the default) times each segment by smoothstep 3t^2 - 2t^3, still at every key
    frame; 'linear' evenly."""
    keys = X.map_z(G, X.seeds_to_z([3, 5], G.z_dim))
    for easing, t in (("smooth", 0.15625), ("linear", 0.25), (None, 0.15625)):  # frame 1 of 5: s = 1/4
        kw = {} if easing is None else dict(easing=easing)
        path = X.keyframe_path(G, [3, 5], 5, space="w", loop=False, **kw)
        torch.testing.assert_close(path[1], X.lerp(keys[0], keys[1], t), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="easing='cubic'"):
        X.keyframe_path(G, [3, 5], 5, easing="cubic")


def test_loops_close(G):
    """Frame n of each periodic path (computed at phase 1, not copied) equals frame 0."""
    n = 10
    for ws in (X.circular_loop(G, n, seeds=(1, 2), endpoint=True, psi=0.8),
               X.random_walk(G, n, seed=3, endpoint=True),
               X.random_walk(G, n, seed=3, space="w", endpoint=True),
               X.style_mix_walk(G, 4, n, layers="fine", endpoint=True)):
        assert ws.shape == (n + 1, G.num_ws, G.w_dim)
        torch.testing.assert_close(ws[n], ws[0], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(ws[n // 2], ws[0])  # the path does move
    imgs = X.synthesize(G, X.circular_loop(G, n, seeds=(1, 2), endpoint=True))
    assert np.abs(imgs[n].astype(int) - imgs[0]).max() <= 1 and np.abs(imgs[n // 2].astype(int) - imgs[0]).max() > 10
    tf = X.transform_sweep(n, "rotate", endpoint=True)
    torch.testing.assert_close(tf[n], tf[0], rtol=1e-5, atol=1e-5)


def test_a_partial_rotation_still_loops():
    """rotate with amount=90 turned 0..78.75 degrees, then jumped back to 0 at the loop's seam: it now
    swings out to 90 and back. Whole turns still turn evenly; translate with any amount is a circle."""
    n = 8
    def angles(tf):  # the sweep stores the inverse of the rotation it shows
        return np.degrees(np.unwrap([np.arctan2(m[0, 1], m[0, 0]) for m in np.linalg.inv(tf.numpy())]))
    for amount in (90, -30, 45.5, 180):  # (a half turn too: turned evenly it would end upside down)
        tf = X.transform_sweep(n, "rotate", amount, endpoint=True)
        a = angles(tf)
        torch.testing.assert_close(tf[n], tf[0], rtol=1e-5, atol=1e-5)
        assert np.abs(a[:n]).max() == pytest.approx(abs(amount), abs=1e-3)  # it does reach the angle
        assert np.abs(np.diff(a)).max() <= abs(amount) / 2  # no jump anywhere, the seam included
    for amount in (None, 720, -360):
        a = angles(X.transform_sweep(n, "rotate", amount, endpoint=True))
        np.testing.assert_allclose(np.diff(a), (amount or 360) / n, atol=1e-3)  # an even turn
    tf = X.transform_sweep(n, "translate", -0.1, endpoint=True)
    torch.testing.assert_close(tf[n], tf[0], rtol=1e-5, atol=1e-5)


def test_paths_take_seeds_as_the_other_explore_functions_do(G):
    """keyframe_path(G, '0-2', n) and circular_loop(seeds='5-6') failed with "invalid literal for int()
    ... '-'" (the string was read a character at a time), and circular_loop with one seed with "not
    enough values to unpack": paths read seeds like generate does, and a loop names the two it needs."""
    torch.testing.assert_close(X.keyframe_path(G, "0-2", 6), X.keyframe_path(G, [0, 1, 2], 6))
    torch.testing.assert_close(X.keyframe_path(G, np.arange(3), 6), X.keyframe_path(G, [0, 1, 2], 6))
    torch.testing.assert_close(X.circular_loop(G, 6, seeds="5-6"), X.circular_loop(G, 6, seeds=(5, 6)))
    for method in (None, "lerp", "slerp"):  # space 'W' with a method was the z path, unmapped: [n, z_dim]
        with pytest.raises(ValueError, match="space='W': use 'z' or 'w'"):
            X.keyframe_path(G, [0, 1], 4, method=method, space="W")
    for seeds in ((5,), (5, 6, 7)):  # a third seed was silently dropped
        with pytest.raises(ValueError, match="two seeds"):
            X.circular_loop(G, 6, seeds=seeds)


def test_path_frame_counts_are_checked(G):
    """n_frames=0 with endpoint=True gave a NaN loop (phase 0/0) or an IndexError, -1 was refused as
    'sigma=-0.125', and 2.5 frames drew 3 frames at phases that did not close the loop: every path and
    sweep takes a whole number of at least 1 and names n_frames otherwise."""
    paths = {"walk": lambda n: X.random_walk(G, n, endpoint=True),
             "loop": lambda n: X.circular_loop(G, n, endpoint=True),
             "keyframes": lambda n: X.keyframe_path(G, [0, 1], n, endpoint=True),
             "mix": lambda n: X.style_mix_walk(G, 0, n, endpoint=True),
             "sweep": lambda n: X.transform_sweep(n, endpoint=True)}
    for name, path in paths.items():
        for n in (0, -1, 2.5, None):
            with pytest.raises(ValueError, match=f"n_frames={n}"):
                path(n)
        assert len(path(np.int64(3))) == 4  # whole numbers of any type


def test_sweep_amount_must_be_a_finite_number():
    """transform_sweep(amount=nan) made NaN transforms, so every frame of the video was black, and
    amount='30' failed inside numpy: the amount is a finite number or None."""
    for kind in ("translate", "rotate"):
        for bad in (float("nan"), float("inf"), "30"):
            with pytest.raises(ValueError, match="amount="):
                X.transform_sweep(4, kind, bad)
    torch.testing.assert_close(X.transform_sweep(4, "rotate", np.float32(90)), X.transform_sweep(4, "rotate", 90))


def test_circular_loop_starts_at_its_seed_and_stays_gaussian(G):
    ws = X.circular_loop(G, 8, seeds=(5, 6))
    torch.testing.assert_close(ws[0], X.map_z(G, X.seeds_to_z([5], G.z_dim))[0], rtol=1e-5, atol=1e-5)


def test_smooth_wrap_is_seamless():
    x = np.random.RandomState(0).randn(200, 64)
    y = X.smooth_wrap(x, sigma=10)
    steps = np.linalg.norm(np.diff(y, axis=0), axis=1)
    wrap = np.linalg.norm(y[0] - y[-1])
    assert wrap < 2 * steps.max()  # the seam is an ordinary step ...
    assert steps.max() < 0.5 * np.linalg.norm(np.diff(x, axis=0), axis=1).mean()  # ... of a smooth path
    assert 0.8 < y.std() < 1.2  # rescaled: still unit variance like a seed's z
    # zero-padded (non-wrapping) smoothing has a visible jump at the seam; ours does not
    assert np.allclose(X.smooth_wrap(np.roll(x, 7, axis=0), 10), np.roll(y, 7, axis=0))


def test_style_mix_walk_moves_only_its_layers(G):
    lo, hi = X.layer_range("fine", G.num_ws)
    ws = X.style_mix_walk(G, 4, 6, layers="fine")
    base = X.map_z(G, X.seeds_to_z([4], G.z_dim))[0]
    assert torch.equal(ws[:, :lo], base[None, :lo].expand(6, -1, -1))
    assert not torch.allclose(ws[1, lo:hi], ws[3, lo:hi])


def test_layer_ranges():
    assert X.layer_ranges(18) == {"coarse": (0, 4), "middle": (4, 8), "fine": (8, 18)}
    assert X.layer_ranges(16) == {"coarse": (0, 4), "middle": (4, 8), "fine": (8, 16)}  # 2/9 and 4/9 of 16, up
    assert X.layer_range("coarse+middle", 18) == (0, 8)
    assert X.layer_range("2-5", 18) == (2, 6)
    assert X.layer_range("fine+middle", 18) == (4, 18)
    with pytest.raises(ValueError, match="contiguous"):  # not widened over the middle layers to 0..17
        X.layer_range("coarse+fine", 18)
    with pytest.raises(ValueError, match="0..17"):
        X.layer_range((3, 30), 18)
    for empty in ((5, 5), "5-4"):  # no layer at all: mixing or moving it would silently do nothing
        with pytest.raises(ValueError, match="outside"):
            X.layer_range(empty, 18)


def test_stylegan2_layer_ranges_are_the_papers_resolution_bands():
    """A StyleGAN2 ws index feeds the same resolution at every output size (ws 0-3: 4-8 px, 4-7:
    16-32 px, 8 up: 64 px up). Scaled from 18 ws, 64 px's 'fine' (ws 5-9) changed 16 and 32 px
    structure and notebook 03's 'coarse' cutoff missed ws 3. StyleGAN3 keeps the proportions."""
    G2 = make_G("sg2", resolution=64)
    assert G2.num_ws == 10
    assert X.layer_ranges(G2) == {"coarse": (0, 4), "middle": (4, 8), "fine": (8, 10)}
    assert X.layer_range("fine", G2) == (8, 10) and X.layer_range("2-9", G2) == (2, 10)
    with pytest.raises(ValueError, match="0..9"):
        X.layer_range((3, 11), G2)
    G3 = make_G("sg3")
    assert X.layer_ranges(G3) == X.layer_ranges(G3.num_ws)
    grid = np.asarray(X.style_mix_grid(G2, [1], [2], layers="fine", labels=False, progress=False))
    ws = X.map_z(G2, X.seeds_to_z([1, 2], G2.z_dim))
    ws[:1, 8:] = ws[1:, 8:]  # row seed 1 with seed 2's ws 8-9: the grid's mixed cell
    res = G2.img_resolution
    assert (grid[res:, res:] == X.synthesize(G2, ws[:1])[0]).all()


def test_translate_and_rotate_use_the_input_transform(G):
    base = X.generate_arrays(G, [0], progress=False)
    before = G.synthesis.input.transform.clone()
    moved = X.generate_arrays(G, [0], transform=X.make_transform((0.5, 0), 0), progress=False)
    turned = X.generate_arrays(G, [0], transform=X.make_transform((0, 0), 90), progress=False)
    assert np.abs(moved.astype(int) - base).mean() > 1 and np.abs(turned.astype(int) - base).mean() > 1
    assert torch.equal(G.synthesis.input.transform, before)  # restored afterwards
    # the buffer holds the inverse of rotate+translate (official visualizer convention)
    m = X.make_transform((0.25, -0.1), 30)
    a = np.radians(30)
    fwd = np.array([[np.cos(a), np.sin(a), 0.25], [-np.sin(a), np.cos(a), -0.1], [0, 0, 1]])
    np.testing.assert_allclose(m.numpy() @ fwd, np.eye(3), atol=1e-6)
    with pytest.raises(ValueError, match="StyleGAN3"):
        X.generate_arrays(make_G("sg2"), [1], transform=m, progress=False)


def test_synthesize_takes_a_list_of_transforms_and_checks_their_count(G):
    """A list of make_transform matrices failed with "only one element tensors can be converted", and
    per-image transforms that did not match the ws in number failed with an IndexError midway (fewer)
    or were silently dropped (more)."""
    ws = X.map_z(G, X.seeds_to_z([0, 1, 2], G.z_dim))
    tfs = [X.make_transform((0.1 * i, 0), 10 * i) for i in range(3)]
    want = np.concatenate([X.synthesize(G, ws[i:i + 1], transforms=tfs[i]) for i in range(3)])
    assert np.array_equal(X.synthesize(G, ws, transforms=tfs), want)
    assert np.array_equal(X.synthesize(G, ws, transforms=torch.stack(tfs)), want)
    for bad in (tfs[:2], tfs + tfs[:1], torch.eye(2)):
        with pytest.raises(ValueError, match="transform"):
            X.synthesize(G, ws, transforms=bad)


def test_use_transform_keeps_a_widget_render_out_of_its_block(G):
    """synthesize (what a widget's worker thread calls) took the render lock, use_transform did not:
    a render in another thread drew inside the block with its own transform, and the two saves and
    restores interleaved, leaving a stale transform in the network for every later image."""
    import threading
    ws = X.map_z(G, X.seeds_to_z([0], G.z_dim))
    M, T = X.make_transform((0.3, 0), 0), X.make_transform((0, 0.2), 10)
    done = []
    worker = threading.Thread(target=lambda: done.append(X.synthesize(G, ws, transforms=T)))
    with X.use_transform(G, M):
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not done  # waits for the block
        assert torch.equal(G.synthesis.input.transform, torch.as_tensor(M, dtype=torch.float32))
    worker.join(10)
    assert done and torch.equal(G.synthesis.input.transform, torch.eye(3))
    assert np.array_equal(done[0], X.synthesize(G, ws, transforms=T))


def test_layer_range_refuses_what_is_not_a_pair_of_whole_layers():
    """layers=3 failed with "'int' object is not subscriptable", (3,) with an IndexError, and
    (2.5, 6) became layers 2..5 without a word."""
    for bad in (3, (3,), (1, 2, 3), (2.5, 6), ("a", 4), None):
        with pytest.raises(ValueError, match="layers="):
            X.layer_range(bad, 18)
    assert X.layer_range([2, 6], 18) == X.layer_range(np.array([2, 6]), 18) == (2, 6)


def test_make_transform_checks_its_arguments():
    """make_transform(0.1) (one number for translate) failed with "'float' object is not subscriptable",
    (0.1,) with an IndexError; a nan gave a nan matrix, so a black image without a word."""
    for bad in (0.1, (0.1,), (0.1, 0.2, 0.3), "0.1,0", (float("nan"), 0), (0, float("inf")), None):
        with pytest.raises(ValueError, match="translate="):
            X.make_transform(bad)
    for bad in (float("nan"), None, "30"):
        with pytest.raises(ValueError, match="angle="):
            X.make_transform((0, 0), bad)
    assert torch.equal(X.make_transform([0.25, -0.1], 30), X.make_transform(np.array([0.25, -0.1]), 30))


# ----------------------------------------------------------------------------- grids

def test_psi_grid_layout_and_columns(G):
    seeds, psis = [0, 1, 2], [1.0, 0.5, 0.0]
    plain = X.psi_grid(G, seeds, psis, labels=False, progress=False)
    assert plain.size == (len(psis) * 16, len(seeds) * 16)  # (width, height)
    a = np.asarray(plain).astype(int)
    cell = lambda r, c: a[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16]  # noqa: E731
    assert np.abs(cell(0, 0) - cell(0, 2)).mean() > 1     # psi=1 differs from psi=0
    assert np.abs(cell(0, 0) - cell(1, 0)).mean() > 1     # seeds differ at psi=1 ...
    assert np.abs(cell(0, 2) - cell(1, 2)).max() <= 1     # ... and meet at psi=0 (all at w_avg)
    ref = X.generate_arrays(G, [1], psi=0.5, progress=False)[0]
    assert np.array_equal(cell(1, 1), ref)                # row = seed, column = psi
    labelled = X.psi_grid(G, seeds, psis, progress=False)
    W_, H_ = labelled.size
    left, top = W_ - 3 * 16, H_ - 3 * 16
    assert left > 0 and top > 0                           # label bands on the left and on top
    assert np.array_equal(np.asarray(labelled)[top:, left:], np.asarray(plain))
    assert np.asarray(labelled)[:top, left:].min() < 128  # some text was drawn in the band


def test_psi_grid_reads_psis_as_the_command_line_does(G):
    """psis='1,0.5' (as typed for sg3 generate --psis) failed with "could not convert string to float: ','",
    and psis='10' drew two columns, psi 1 and psi 0, one per character; one number failed as not iterable."""
    want = np.asarray(X.psi_grid(G, [0], [1.0, 0.5], labels=False, progress=False))
    assert np.array_equal(np.asarray(X.psi_grid(G, [0], "1, 0.5", labels=False, progress=False)), want)
    assert X.psi_grid(G, [0], "10", labels=False, progress=False).size == (16, 16)  # one column, psi 10
    one = np.asarray(X.psi_grid(G, [0], 0.5, labels=False, progress=False))
    assert np.array_equal(one, want[:, 16:])
    for bad in ("1,x", [1, None], [1, "a"], "1,nan", [True]):
        with pytest.raises(ValueError, match="psi"):
            X.psi_grid(G, [0], bad, progress=False)


def test_psi_grid_corner_names_the_cutoff(G, monkeypatch):
    """A psi grid truncated with a cutoff (or a class centre) looked like one truncated everywhere:
    its corner says what else shaped the truncation."""
    from sg3lib.explore import grids
    corners, real = [], grids.image_grid
    monkeypatch.setattr(grids, "image_grid", lambda *a, **k: corners.append(a[5] if len(a) > 5 else None) or real(*a, **k))
    X.psi_grid(G, [0, 1], [1.0, 0.5], progress=False)
    X.psi_grid(G, [0, 1], [1.0, 0.5], cutoff=2, progress=False)
    X.psi_grid(G, [0, 1], [1.0, 0.5], centre="class", progress=False)  # unconditional: w_avg is the centre
    X.psi_grid(make_G(c_dim=3), [0], [0.5], class_idx=1, centre="class", progress=False)
    X.psi_grid(make_G(c_dim=3), [0], [0.5], class_idx=0, cutoff=0, progress=False)  # zeros are named too
    assert corners == [None, "cutoff 2", None, "class 1, class centre", "class 0, cutoff 0"]


def test_style_mix_grid(G):
    rows, cols = [0, 1], [2, 3, 4]
    img = np.asarray(X.style_mix_grid(G, rows, cols, layers=(0, G.num_ws), labels=False, progress=False)).astype(int)
    assert img.shape == (3 * 16, 4 * 16, 3)
    cell = lambda r, c: img[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16]  # noqa: E731
    # all layers from the column seed: the mixed cell is the column seed's image
    assert np.abs(cell(1, 2) - cell(0, 2)).max() <= 1
    assert np.abs(cell(2, 3) - cell(0, 3)).max() <= 1
    coarse = np.asarray(X.style_mix_grid(G, rows, cols, layers="coarse", labels=False, progress=False)).astype(int)
    c2 = lambda r, c: coarse[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16]  # noqa: E731
    assert np.abs(c2(1, 1) - c2(1, 0)).mean() > 0.5 and np.abs(c2(1, 1) - c2(0, 1)).mean() > 0.5
    assert np.array_equal(c2(1, 0), X.generate_arrays(G, [0], progress=False)[0])  # row seed image
    assert (c2(0, 0) == 255).all()  # the corner cell is blank white
    # a cell is the row seed's ws with exactly ws lo..hi-1 taken from the column seed
    lo, hi = 1, 3
    part = np.asarray(X.style_mix_grid(G, rows, cols, layers=(lo, hi), labels=False, progress=False))
    w_row, w_col = (X.map_z(G, X.seeds_to_z([s], G.z_dim)) for s in (rows[1], cols[0]))
    w = w_row.clone()
    w[:, lo:hi] = w_col[:, lo:hi]
    assert np.array_equal(part[2 * 16:3 * 16, 16:32], X.synthesize(G, w)[0])


def test_translate_moves_the_content_by_image_widths():
    """StyleGAN3-T is translation equivariant: translate (0.25, 0) shifts a 32 px image 8 px right."""
    G32 = make_G(resolution=32)
    a = X.generate_arrays(G32, [1], progress=False)[0].astype(int)
    right = X.generate_arrays(G32, [1], transform=X.make_transform((0.25, 0), 0), progress=False)[0].astype(int)
    down = X.generate_arrays(G32, [1], transform=X.make_transform((0, 0.25), 0), progress=False)[0].astype(int)
    assert np.abs(right[:, 8:] - a[:, :-8]).mean() < 1 < np.abs(right - a).mean()
    assert np.abs(down[8:] - a[:-8]).mean() < 1 < np.abs(down - a).mean()


def test_to_pil_takes_one_uint8_image_and_says_what_it_got():
    """to_pil of a grey + alpha image, a [H, W] array or a torch tensor failed inside Pillow ("tuple
    index out of range", "Cannot handle this data type"), as did a float image or a whole batch,
    with nothing saying what to pass."""
    rgba = np.random.default_rng(0).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    assert np.array_equal(np.asarray(X.to_pil(rgba)), rgba[..., :3])
    assert np.array_equal(np.asarray(X.to_pil(rgba[..., :2])), rgba[..., 0])  # grey + alpha: the grey
    assert np.array_equal(np.asarray(X.to_pil(rgba[..., 0])), rgba[..., 0])
    assert np.array_equal(np.asarray(X.to_pil(torch.from_numpy(rgba))), rgba[..., :3])
    with pytest.raises(ValueError, match=r"float32 \[6, 5, 3\]; float images of G .* to_uint8 first"):
        X.to_pil(rgba[..., :3].astype(np.float32))
    with pytest.raises(ValueError, match=r"uint8 \[2, 6, 5, 4\]: index a batch, e.g. images\[0\]"):
        X.to_pil(np.stack([rgba, rgba]))
    with pytest.raises(ValueError, match=r"uint8 \[6, 5, 5\]"):
        X.to_pil(np.concatenate([rgba, rgba[..., :1]], axis=-1))


@pytest.mark.parametrize("channels", [2, 4])
def test_grids_of_networks_with_alpha(channels):
    """Networks trained on grey+alpha or RGBA datasets (which training takes) crashed every grid with
    "cannot reshape array": a grid shows the colour channels (grey for LA) and leaves alpha out, as
    to_pil does for RGBA."""
    Ga = make_G(img_channels=channels)
    imgs = X.generate_arrays(Ga, [0, 1], psi=0.5, progress=False)
    colour = imgs[..., :1].repeat(3, axis=-1) if channels == 2 else imgs[..., :3]
    grid = np.asarray(X.psi_grid(Ga, [0, 1], [0.5], labels=False, progress=False))
    assert np.array_equal(grid, np.concatenate(list(colour), axis=0))
    assert X.psi_grid(Ga, [0, 1], [1, 0.5], progress=False).mode == "RGB"
    assert X.style_mix_grid(Ga, [0], [1, 2], progress=False).mode == "RGB"


def test_image_grid_takes_labels_as_an_array():
    """`if not row_labels` failed on a numpy array of labels ('truth value of an array is ambiguous')."""
    imgs = np.zeros([4, 8, 8, 3], np.uint8)
    a = X.image_grid(imgs, 2, 2, row_labels=np.array(["a", "b"]), col_labels=np.array([0.5, 1.0]))
    b = X.image_grid(imgs, 2, 2, row_labels=["a", "b"], col_labels=["0.5", "1.0"])
    assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_image_grid_puts_each_label_by_its_cell_and_inside_the_picture():
    """Column labels are centred over their cells and shrink until they fit them; row labels are
    centred on their rows and end just left of the images; the left band is wide enough for the
    longest of the row labels and the (grey) corner label, whose text is not cut at the edge."""
    H = W = 32
    imgs = np.full([4, H, W, 3], 200, np.uint8)
    g = np.asarray(X.image_grid(imgs, 2, 2, ["a", "bbbb"], ["psi=0.75", "psi=1"], "corner label long")).min(-1)
    top, left = g.shape[0] - 2 * H, g.shape[1] - 2 * W
    assert top > 0 and left > 0
    ink_above = lambda j: g[:top, left + j * W:left + (j + 1) * W] < 160  # noqa: E731  (column j's label)
    for j in range(2):  # 'psi=0.75' is wider than 30 px at the starting size
        ys, xs = np.nonzero(ink_above(j))
        assert abs(xs.mean() - W / 2) < 3 and xs.min() >= 1 and xs.max() <= W - 2
    assert (g[:top, left:] < 160).sum() == sum(ink_above(j).sum() for j in range(2))
    for i in range(2):
        ys, xs = np.nonzero(g[top + i * H:top + (i + 1) * H, :left] < 160)
        assert abs(ys.mean() - H / 2) < 3 and left - 10 <= xs.max() < left
        assert g[top + i * H:top + (i + 1) * H, :left].min() < 60  # black
    corner = g[:top, :left]
    assert 100 < corner.min() < 200 and np.nonzero(corner < 250)[1].min() >= 2  # grey, all of it inside


def test_image_grid_draws_a_corner_label_only_with_both_bands():
    """Without column labels there is no top band: the corner label is not drawn over the first row's
    label; and the bands are sized by the images' shorter side (wide images get no taller band)."""
    imgs = np.full([4, 32, 32, 3], 200, np.uint8)
    plain = X.image_grid(imgs, 2, 2, row_labels=["a", "b"])
    assert np.array_equal(np.asarray(X.image_grid(imgs, 2, 2, row_labels=["a", "b"], corner_label="c")),
                          np.asarray(plain))
    wide = np.full([4, 32, 256, 3], 200, np.uint8)
    assert X.image_grid(wide, 2, 2, col_labels=["a", "b"]).size[1] - 64 == \
        X.image_grid(imgs, 2, 2, col_labels=["a", "b"]).size[1] - 64 > 0


def test_seeds_to_z_takes_seeds_as_the_other_explore_functions_do():
    """seeds_to_z('0-3', ...) was 'seed 0 is out of range' and seeds_to_z(5, ...) a TypeError; a seed
    that is no whole number was called out of range too."""
    torch.testing.assert_close(X.seeds_to_z("0-2", 4), X.seeds_to_z([0, 1, 2], 4))
    torch.testing.assert_close(X.seeds_to_z(5, 4), X.seeds_to_z([5], 4))
    torch.testing.assert_close(X.seeds_to_z(torch.arange(2), 4), X.seeds_to_z(range(2), 4))
    for bad in (1.5, "7"):
        with pytest.raises(ValueError, match=rf"seed {bad!r} is not a whole number"):
            X.seed_to_z(bad, 4)
    with pytest.raises(ValueError, match=r"seed 4294967296 is out of range"):
        X.seed_to_z(2 ** 32, 4)


def test_to_uint8_is_the_official_conversion():
    """uint8 = clamp(x * 127.5 + 128, 0, 255), truncated: 0 is 128 (not 127.5 -> 127), -1 is 0, 0.996 is
    254, 1 and above 255; NCHW in, NHWC out."""
    x = torch.tensor([-1.5, -1.0, 0.0, 0.5, 0.996, 1.0, 2.0]).reshape(1, 1, 1, 7).repeat(1, 3, 1, 1)
    out = X.to_uint8(x)
    assert out.shape == (1, 1, 7, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 191, 254, 255, 255]


def test_parse_seeds_allows_exactly_max_seeds(monkeypatch):
    from sg3lib.explore import latents
    monkeypatch.setattr(latents, "MAX_SEEDS", 5)
    assert X.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert X.parse_seeds("0-2,7-8") == [0, 1, 2, 7, 8]
    for over in ("0-5", "0-2,7-9"):
        with pytest.raises(ValueError, match="more than 5"):
            X.parse_seeds(over)


def test_truncate_towards_a_centre_per_layer(G):
    """A centre [num_ws, w_dim] (one w per layer) truncates each of the first `cutoff` layers towards
    its own row; psi 0 gives those rows exactly, later layers keep their ws."""
    z = X.seeds_to_z([0, 1], G.z_dim)
    ws = X.map_z(G, z)
    centre = torch.randn(G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(1))
    cut = 3
    out = X.map_z(G, z, psi=0.0, cutoff=cut, centre=centre)
    assert torch.equal(out[:, :cut], centre[:cut].expand(2, -1, -1))
    assert torch.equal(out[:, cut:], ws[:, cut:])
    half = X.truncate(ws, centre, 0.5, cut)
    torch.testing.assert_close(half[:, :cut], (centre[:cut] + ws[:, :cut]) / 2)


def test_smooth_wrap_is_centred_on_each_frame():
    """The wrapping Gaussian reaches both ways: a pulse stays where it was and spreads evenly to
    both sides, across the seam too (a one-sided kernel moved the walk late by about sigma frames)."""
    for at in (20, 1):  # (at 1 the pulse's left side wraps to the end)
        x = np.zeros([64, 1])
        x[at] = 1
        y = X.smooth_wrap(x, sigma=4)[:, 0]
        assert y.argmax() == at
        for d in (1, 3, 6):
            assert y[(at - d) % 64] == pytest.approx(y[(at + d) % 64], rel=1e-9)


def test_a_style_mix_loop_starts_on_the_style_mix_of_its_seeds(G):
    """Frame 0 of a style-mixing loop is the base seed with `seed`'s ws on the layers (the cell of
    style_mix_grid for those seeds); the other layers are the base's in every frame."""
    for layers in ("coarse", "middle"):
        lo, hi = X.layer_range(layers, G)
        ws = X.style_mix_walk(G, 4, 6, layers=layers, seed=9)
        base = X.map_z(G, X.seeds_to_z([4], G.z_dim))[0]
        style = X.map_z(G, X.seeds_to_z([9], G.z_dim))[0]
        torch.testing.assert_close(ws[0, lo:hi], style[lo:hi], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ws[:, lo:hi], X.circular_loop(G, 6, seeds=(9, 10))[:, lo:hi])
        for frame in ws:
            assert torch.equal(frame[:lo], base[:lo]) and torch.equal(frame[hi:], base[hi:])


def test_a_translate_sweep_starts_on_the_unmoved_image():
    """Frame 0 of every sweep is the identity (the video starts on the image as generated); the
    translate circle (of radius `amount`, 0.25 image widths by default) goes at most twice that from it,
    and comes back."""
    for kind in ("translate", "rotate"):
        tf = X.transform_sweep(8, kind, endpoint=True)
        torch.testing.assert_close(tf[0], torch.eye(3), rtol=0, atol=1e-6)
        torch.testing.assert_close(tf[-1], torch.eye(3), rtol=0, atol=1e-5)
    moves = [torch.linalg.inv(t)[:2, 2].norm().item() for t in X.transform_sweep(8, "translate")]
    assert moves[0] == pytest.approx(0, abs=1e-6) and max(moves) == pytest.approx(0.5, abs=1e-6)


def test_style_mix_grid_names_the_layers_it_mixes(G, monkeypatch):
    from sg3lib.explore import grids
    seen = {}
    real = grids.image_grid
    monkeypatch.setattr(grids, "image_grid", lambda *a, **k: seen.setdefault("rows", a[3]) and real(*a, **k))
    X.style_mix_grid(G, [0, 1], [2], layers=(2, 5), progress=False)
    assert seen["rows"] == ["styles 2-4", "seed 0", "seed 1"]  # (lo, hi) is hi exclusive: ws 2, 3 and 4


def test_synthesize_of_no_ws_has_the_networks_shape_and_batch_size_is_a_count():
    """No ws give no images of the network's own channels (an RGBA network's empty batch is
    [0, H, W, 4], as its full ones); batch_size=True is refused, not read as 1."""
    Ga = make_G(img_channels=4)
    assert X.synthesize(Ga, torch.zeros([0, Ga.num_ws, Ga.w_dim])).shape == (0, 16, 16, 4)
    assert X.synthesize(Ga, X.map_z(Ga, X.seeds_to_z([0], Ga.z_dim))).shape == (1, 16, 16, 4)
    with pytest.raises(ValueError, match="batch_size=True"):
        X.generate_arrays(Ga, [0], batch_size=True, progress=False)


def test_tiny_generator_has_the_synthesis_layers_asked_for():
    assert X.tiny_generator(num_layers=3).num_ws == 5 and X.tiny_generator(num_layers=6).num_ws == 8


def test_tiny_generator_truncates_towards_its_mean_w():
    """w_avg of the tiny networks is their mapping's mean (at 0 it would truncate towards a w no seed
    comes near): the mean of fresh samples is close to it."""
    G = X.tiny_generator(resolution=16, seed=3)
    w = G.mapping(torch.randn(4000, G.z_dim, generator=torch.Generator().manual_seed(5)), torch.zeros(4000, 0))[:, 0]
    spread = w.std(0).mean()
    assert (G.mapping.w_avg - w.mean(0)).norm() < 0.15 * spread * G.w_dim ** 0.5
    assert G.mapping.w_avg.norm() > 0.5 * w.mean(0).norm()


def test_load_generator_takes_the_ema_generator_and_else_g(tmp_path):
    """A training snapshot holds G and G_ema: exploring shows G_ema (the smoothed weights the papers
    show), in eval mode without gradients; a file with only G gives G."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    G, G_ema = make_G(seed=1), make_G(seed=2)
    both = save_snapshot(tmp_path / "both.pt", snapshot_from_networks({"G": G, "G_ema": G_ema}))
    only_g = save_snapshot(tmp_path / "g.pt", snapshot_from_networks({"G": G}))
    z = X.seeds_to_z([0], G.z_dim)
    for path, want in ((both, G_ema), (only_g, G)):
        loaded = X.load_generator(path)
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        assert torch.equal(loaded.mapping(z, None), want.mapping(z, None))


def test_a_random_walk_in_w_keeps_the_spread_of_its_ws():
    """The walk's ws are their mean plus smoothed deviations: each frame varies as much as the ws it
    was made from (smoothing noise and taking the mean out both shrink it; the rescale undoes both)."""
    from sg3lib.explore.latents import _smooth_deviations
    rnd = np.random.RandomState(0)
    for n, sigma in ((64, 8), (64, 32), (16, 2)):
        x = rnd.randn(n, 20000)
        mean = x.mean(0, keepdims=True)
        y = mean + _smooth_deviations(x - mean, sigma)
        assert y.var() == pytest.approx(x.var(), rel=0.05), (n, sigma)
        assert np.abs(np.diff(y, axis=0)).mean() < 0.5 * np.abs(np.diff(x, axis=0)).mean()  # and smoother


def test_a_random_walks_smoothing_is_an_eighth_of_its_frames_by_default(G):
    torch.testing.assert_close(X.random_walk(G, 16, seed=3), X.random_walk(G, 16, seed=3, sigma=2))
    assert not torch.allclose(X.random_walk(G, 16, seed=3), X.random_walk(G, 16, seed=3, sigma=4))


def test_a_partial_rotation_swings_out_and_back_on_a_cosine():
    """Slowing at both ends: 0, 45, 90, 45 degrees over four frames of a 90 degree swing."""
    want = torch.stack([X.make_transform((0, 0), a) for a in (0, 45, 90, 45)])
    torch.testing.assert_close(X.transform_sweep(4, "rotate", 90), want)


@pytest.mark.parametrize("n", [8, 10])
def test_an_image_grid_takes_exactly_one_image_per_cell(n):
    with pytest.raises(ValueError, match=f"image_grid: {n} images for a 3x3 grid"):
        X.image_grid(np.zeros([n, 4, 4, 3], np.uint8), 3, 3)
    assert X.image_grid(np.zeros([9, 4, 4, 3], np.uint8), 3, 3).size == (12, 12)
