"""Duplicate indexes that hold only hashes, so memory stays small for millions of images.

Exact duplicates: a set of 16-byte pixel hashes. Near duplicates: 64-bit perceptual hashes
in a multi-index (Norouzi et al. 2012): split the hash into t+1 bands; two hashes within
Hamming distance t agree exactly on at least one band (pigeonhole), so a query only
compares against the hashes sharing one of its band values instead of all of them.
"""
from array import array


class ExactIndex:
    def __init__(self):
        self._seen = {}  # digest -> id of the first image (ids are small ints)

    def check(self, digest):
        """Return the id of an earlier identical image, or None."""
        return self._seen.get(digest)

    def add(self, digest, ident):
        self._seen.setdefault(digest, ident)


class NearIndex:
    def __init__(self, threshold=4, bits=64):
        self.threshold = int(threshold)
        nb = self.threshold + 1
        # Band edges: nb contiguous slices of the 64 bits, as even as possible.
        edges = [round(i * bits / nb) for i in range(nb + 1)]
        self._bands = [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:])]
        self._tables = [dict() for _ in self._bands]  # band value -> (hashes, ids) arrays

    def check_add(self, h, ident):
        """Return (id, distance) of an earlier image within the threshold, else None
        (and remember this hash)."""
        best = None
        for (shift, mask), table in zip(self._bands, self._tables):
            entry = table.get((h >> shift) & mask)
            if entry is None:
                continue
            for other, oid in zip(*entry):
                d = bin(other ^ h).count("1")
                if d <= self.threshold and (best is None or d < best[1]):
                    best = (oid, d)
        if best is None:
            for (shift, mask), table in zip(self._bands, self._tables):
                entry = table.setdefault((h >> shift) & mask, (array("Q"), array("q")))
                entry[0].append(h)
                entry[1].append(ident)
        return best
