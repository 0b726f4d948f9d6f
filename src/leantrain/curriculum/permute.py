"""Lazy seeded permutations: position -> shuffled position in O(1) per element, no array of n.

A 4-round Feistel network over mixed radix Z_a × Z_b (a = ceil(√n), b = ceil(n / a); the
right half is added modulo the left's radix, as in format-preserving encryption) is a bijection
of [0, a·b); cycle walking maps the fewer than a extra values back into [0, n), so almost every
element needs one pass. Keys, domain sizes and positions are per element, so one vectorised call
permutes a whole batch drawn from many clusters of different sizes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mix64", "permute"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S = np.uint64(31)
ROUNDS = 4  # even, so the halves end in their starting radices
_ROUND_C = [np.uint64(((r + 1) * 0x9E3779B97F4A7C15) % 2**64) for r in range(ROUNDS)]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic, a bijection)."""
    x = np.asarray(x, dtype=np.uint64) + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _radices(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.ceil(np.sqrt(sizes.astype(np.float64))).astype(np.int64)
    a += (a * a < sizes).astype(np.int64)  # guard float rounding
    a = np.maximum(a, 1)
    b = -(-sizes // a)
    return a.astype(np.uint64), b.astype(np.uint64)


def permute(offsets: np.ndarray, sizes: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Image of each offset (0 <= offset < size) under the permutation of [0, size) named by
    its key: same (size, key) -> same permutation, different keys -> independent-looking ones."""
    offsets = np.atleast_1d(np.asarray(offsets, dtype=np.int64))
    sizes = np.atleast_1d(np.asarray(sizes, dtype=np.int64))
    keys = np.atleast_1d(np.asarray(keys, dtype=np.uint64))
    a, b = _radices(sizes)
    rk = [mix64(keys + c) for c in _ROUND_C]
    n = sizes.astype(np.uint64)
    out = offsets.astype(np.uint64)
    x, todo = out.copy(), np.arange(len(out))
    while len(todo):
        left, right = x // b, x % b  # left in Z_a, right in Z_b
        for r in range(ROUNDS):
            f = (right ^ rk[r]) * _M1
            f = (f ^ (f >> _S)) * _M2
            left, right = right, (left + (f >> _S)) % (a if r % 2 == 0 else b)
        x = left * b + right
        done = x < n
        if done.all():
            out[todo] = x
            break
        out[todo[done]] = x[done]
        keep = ~done
        todo, x, n, a, b = todo[keep], x[keep], n[keep], a[keep], b[keep]
        rk = [k[keep] for k in rk]
    return out.astype(np.int64)
