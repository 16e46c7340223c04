"""The duplicate indexes against a brute-force search: the multi-index must miss nothing."""
import random

import pytest

from sg3lib.data.dedupe import ExactIndex, NearIndex


def flip(h, n, rng):
    """`h` with `n` distinct bits of its 64 flipped."""
    for b in rng.sample(range(64), n):
        h ^= 1 << b
    return h


@pytest.mark.parametrize("threshold", [0, 1, 4, 10, 32])
def test_near_index_finds_the_closest_earlier_hash_within_the_threshold_like_a_full_search(threshold):
    rng = random.Random(threshold)
    index, kept, seen = NearIndex(threshold), [], []  # kept: (hash, id) of the images it remembers
    for i in range(400):
        if seen and rng.random() < 0.6:  # a neighbour of an earlier image, at or around the threshold
            h = flip(rng.choice(seen), min(64, max(0, threshold + rng.randint(-2, 2))), rng)
        else:
            h = rng.getrandbits(64)
        seen.append(h)
        near = [(bin(h ^ k).count("1"), ident) for k, ident in kept]
        best = min((d for d, _ in near if d <= threshold), default=None)
        hit = index.check_add(h, i)
        if best is None:
            assert hit is None, (i, hit)
            kept.append((h, i))
        else:  # the closest one (of equally close ones, any)
            assert hit is not None and hit[1] == best and (best, hit[0]) in near, (i, hit, best)
    assert len(kept) >= 5 and len(seen) - len(kept) >= 10, len(kept)  # both answers were checked


def test_a_rejected_near_duplicate_is_not_remembered():
    index = NearIndex(2)
    assert index.check_add(0b0, 0) is None
    assert index.check_add(0b11, 1) == (0, 2)  # within 2 bits of image 0: rejected
    assert index.check_add(0b1111, 2) is None  # 2 bits from the rejected image 1, 4 from image 0


def test_exact_index_names_the_first_image_of_a_digest():
    index = ExactIndex()
    assert index.check(b"x") is None
    index.add(b"x", 0)
    index.add(b"x", 5)
    assert index.check(b"x") == 0 and index.check(b"y") is None
