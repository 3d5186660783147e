"""Neighbour-list metrics: mutual kNN, cycle kNN, LCS kNN and edit-distance kNN, per pair and batched over layer pairs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from prh.metrics.kernels import (
    duplicate_pairs,
    indicator,
    neighbours,
    ranking_depth,
    relabelled_neighbours,
    resampled_neighbours,
)
from prh.metrics.shared import one_layer, stacked

if TYPE_CHECKING:
    from prh.metrics.shared import KernelCache

_DP_ELEMENTS = 4_000_000


def knn_state(kernel: np.ndarray, k: int, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(n, n) kernel -> {"nbrs": (n, k) int32 ordered neighbour lists, "ind": (n, n) bool indicator}."""
    nbrs = neighbours(kernel, k, exclude)
    return knn_state_from(nbrs, indicator(nbrs, kernel.shape[0]))


def knn_state_from(nbrs: np.ndarray, ind: np.ndarray) -> dict[str, np.ndarray]:
    """Precomputed (n, k) neighbour lists and their (n, n) bool indicator -> kNN state."""
    return {"nbrs": nbrs.astype(np.int32), "ind": ind}


def knn_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's kNN state from the cache's shared neighbour lists and indicator."""
    k = params["k"]
    return knn_state_from(cache.neighbours(i, k), cache.indicator(i, k))


def knn_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """kNN state of layer i on the sorted bootstrap resample ``idx`` (copies of one input never neighbours)."""
    k = params["k"]
    m = ranking_depth(k, cache.n)
    nbrs = resampled_neighbours(cache.gram(i), idx, k, None if m is None else cache.neighbours(i, m))
    if nbrs is None:  # fewer than k + 1 distinct inputs: the masked full sort
        return knn_state(cache.gram(i)[np.ix_(idx, idx)], k, duplicate_pairs(idx))
    return knn_state_from(nbrs, indicator(nbrs, idx.size))


def knn_permuted(state: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    """kNN state of inputs x[perm] from that of x: lists relabelled, indicator rebuilt (O(n k), (..., n, .) stacks)."""
    nbrs = relabelled_neighbours(state["nbrs"], perm)
    out = {"nbrs": nbrs, "ind": indicator(nbrs, perm.size)}
    if "codes" in state:
        out["codes"] = neighbour_codes(nbrs)
    return out


def neighbour_codes(nbrs: np.ndarray) -> np.ndarray:
    """(L, n, k) neighbour lists -> (ceil(L / 8), n * n) uint8 layer codes: bit a % 8 of code a // 8 at i n + j is
    set when j is in layer a's N(i) (each layer's n k entries are distinct, so one OR per entry)."""
    la, n, _ = nbrs.shape
    codes = np.zeros((-(-la // 8), n * n), dtype=np.uint8)
    where = np.arange(n)[:, None] * n + nbrs
    for a in range(la):
        group = codes[a // 8]
        group[where[a].ravel()] |= np.uint8(1 << (a % 8))
    return codes


def knn_stack(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-layer kNN states -> one stacked state, with the layer codes :func:`mutual_knn_all` counts from."""
    out = stacked(states)
    out["codes"] = neighbour_codes(out["nbrs"])
    return out


_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.int64)  # (256, 8)


def mutual_knn_chance(n: int, params: dict[str, Any]) -> float:
    """Expected mutual kNN of unrelated kernels: k / (n - 1) (exact)."""
    return params["k"] / (n - 1)


def cycle_knn_chance(n: int, params: dict[str, Any]) -> float:
    """Approximate cycle kNN of unrelated kernels: 1 - (1 - k / (n - 1))^k (the k events taken as independent)."""
    return 1.0 - (1.0 - params["k"] / (n - 1)) ** params["k"]


def mutual_knn_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """Mean over i of |N_A(i) & N_B(i)| / k for one layer pair."""
    n, k = sb["nbrs"].shape
    hits = sa["ind"][np.arange(n)[:, None], sb["nbrs"]]
    return float(np.count_nonzero(hits) / (n * k))


def mutual_knn_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) mutual kNN: A's layer codes gathered at B's neighbour positions, one gather for 8 A layers (exact).

    For each B layer, the codes at (i, j in N_B(i)) are histogrammed over the 256 byte values; bit a of a value
    counts for A layer a. O(Lb n k) gathers instead of O(La Lb n k), B's indicator is never read, so a permuted B
    only needs its neighbour lists relabelled.
    """
    codes = sa["codes"] if "codes" in sa else neighbour_codes(sa["nbrs"])
    la = sa["nbrs"].shape[0]
    lb, n, k = sb["nbrs"].shape
    where = (np.arange(n)[:, None] * n + sb["nbrs"]).reshape(lb, n * k)
    counts = np.empty((codes.shape[0] * 8, lb), dtype=np.int64)
    for b in range(lb):
        for g, group in enumerate(codes):
            counts[8 * g : 8 * g + 8, b] = np.bincount(group[where[b]], minlength=256) @ _BITS
    return counts[:la] / (n * k)


def cycle_knn_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """Mean over i of 1[exists j in N_B(i) with i in N_A(j)] (A first) for one layer pair."""
    n = sb["nbrs"].shape[0]
    back = sa["ind"][sb["nbrs"], np.arange(n)[:, None]]
    return float(back.any(axis=1).mean())


def cycle_knn_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) cycle kNN: A's flattened indicators gathered at (N_B(i), i) for every B layer."""
    la, n = sa["ind"].shape[:2]
    lb, _, k = sb["nbrs"].shape
    flat_a = sa["ind"].reshape(la, n * n)
    back = (sb["nbrs"] * n + np.arange(n)[:, None]).reshape(lb, n * k)
    out = np.empty((la, lb), dtype=np.float64)
    for b in range(lb):
        out[:, b] = np.take(flat_a, back[b], axis=1).reshape(la, n, k).any(axis=2).mean(axis=1)
    return out


def _dp_dtype(k: int) -> type:
    """Smallest integer dtype holding DP values in [-k, 2k]."""
    return np.int16 if k < 10_000 else np.int32


def lcs_lengths(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(..., k), (..., k) broadcastable sequences -> (...) int longest-common-subsequence lengths (row DP)."""
    shape = np.broadcast_shapes(x.shape, y.shape)
    k = shape[-1]
    prev = np.zeros(shape[:-1] + (k + 1,), dtype=_dp_dtype(k))
    for p in range(k):
        eq = x[..., p : p + 1] == y
        t = np.where(eq, prev[..., :-1] + 1, prev[..., 1:])
        cur = np.zeros_like(prev)
        np.maximum.accumulate(t, axis=-1, out=cur[..., 1:])
        prev = cur
    return prev[..., k]


def levenshtein(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(..., k), (..., k) broadcastable sequences -> (...) int unit-cost edit distances (row DP with cummin)."""
    shape = np.broadcast_shapes(x.shape, y.shape)
    k = shape[-1]
    ramp = np.arange(k + 1, dtype=_dp_dtype(k))
    prev = np.broadcast_to(ramp, shape[:-1] + (k + 1,))
    for p in range(1, k + 1):
        cost = (x[..., p - 1 : p] != y).astype(ramp.dtype)
        t = np.empty(shape[:-1] + (k + 1,), dtype=ramp.dtype)
        t[..., 0] = p
        np.minimum(prev[..., 1:] + 1, prev[..., :-1] + cost, out=t[..., 1:])
        prev = np.minimum.accumulate(t - ramp, axis=-1) + ramp
    return prev[..., k]


def lcs_knn_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """Mean over i of LCS(N_A(i), N_B(i)) / k for one layer pair."""
    return float(lcs_knn_all(one_layer(sa), one_layer(sb))[0, 0])


def edit_distance_knn_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """1 - mean over i of Lev(N_A(i), N_B(i)) / k for one layer pair."""
    return float(edit_distance_knn_all(one_layer(sa), one_layer(sb))[0, 0])


def lcs_bits(masks: np.ndarray, k: int) -> np.ndarray:
    """(m, ...) match masks of an m-long text against a k-long pattern -> (...) LCS lengths (bit-parallel).

    ``masks[p]`` has bit q set where text[p] == pattern[q] (unsigned words of >= k bits). One pass over the text
    (Allison and Dix 1986): V starts all ones; per character U = V & mask, V = (V + U) | (V - U); the LCS is the
    number of zero bits among V's low k. Bits above k never reach the low ones (carries only move up).
    """
    word = masks.dtype.type
    v = np.full(masks.shape[1:], np.iinfo(word).max, dtype=word)
    for mask in masks:
        u = v & mask
        v = (v + u) | (v - u)
    return k - np.bitwise_count(v & word((1 << k) - 1))


def levenshtein_bits(masks: np.ndarray, k: int) -> np.ndarray:
    """(m, ...) match masks of a text against a k-long pattern (as in :func:`lcs_bits`) -> (...) edit distances.

    Myers' (1999) bit-vector column DP in Hyyro's (2003) global form: VP / VN hold the +1 / -1 vertical differences
    of the current DP column (all +1 at the start: D[q][0] = q), the top row steps by +1 (D[0][j] = j, the ``| 1``),
    and the bottom cell D[k][j], the distance so far, moves by the k-th bit of the horizontal differences.
    """
    word = masks.dtype.type
    one, top = word(1), word(1 << (k - 1))
    vp = np.full(masks.shape[1:], np.iinfo(word).max, dtype=word)
    vn = np.zeros_like(vp)
    dist = np.full(vp.shape, k, dtype=np.int64)
    for eq in masks:
        xv = eq | vn
        xh = (((eq & vp) + vp) ^ vp) | eq
        hp = vn | ~(xh | vp)
        hn = vp & xh
        dist += (hp & top) != 0
        dist -= (hn & top) != 0
        hp = (hp << one) | one
        hn = hn << one
        vp = hn | ~(xv | hp)
        vn = hp & xv
    return dist


def _word(k: int) -> type | None:
    """The smallest unsigned integer dtype with at least k bits; None above 64."""
    return next((w for w in (np.uint16, np.uint32, np.uint64) if np.iinfo(w).bits >= k), None)


def _ordered_sums(
    sa: dict[str, np.ndarray], sb: dict[str, np.ndarray], bits_fn: Callable[[np.ndarray, int], np.ndarray],
    dp: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:  # fmt: skip
    """(La, Lb) per-pair sums over samples of an ordered-list score: bit-parallel for k <= 64, else the row DP.

    Per A layer, its lists become an (n, n) table of position bits (bit q at [i, N_A(i)[q]]); gathering it at every
    B layer's lists gives the match masks of all B layers and samples at once, O(n k) per layer pair.
    """
    xa, xb = sa["nbrs"], sb["nbrs"]
    la, n, k = xa.shape
    word = _word(k)
    if word is None:
        return _dp_all(sa, sb, dp)
    where = xb.transpose(2, 0, 1) + (np.arange(n) * n)[None, None, :]  # (k, Lb, n) flat (i, N_B(i)[p])
    table, rows = np.zeros((n, n), dtype=word), np.arange(n)[:, None]
    weights = word(1) << np.arange(k, dtype=word)
    out = np.empty((la, xb.shape[0]), dtype=np.float64)
    for a in range(la):
        table[rows, xa[a]] = weights
        out[a] = bits_fn(np.take(table, where), k).sum(axis=-1, dtype=np.int64)
        table[rows, xa[a]] = 0
    return out


def _dp_all(
    sa: dict[str, np.ndarray], sb: dict[str, np.ndarray], dp: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """(La, Lb) per-pair sums over samples of ``dp`` on neighbour lists, vectorised over pairs and samples."""
    xa, xb = sa["nbrs"], sb["nbrs"]
    la, n, k = xa.shape
    lb = xb.shape[0]
    chunk = max(1, _DP_ELEMENTS // (lb * n * (k + 1)))
    out = np.empty((la, lb), dtype=np.float64)
    for a0 in range(0, la, chunk):
        vals = dp(xa[a0 : a0 + chunk, None], xb[None])
        out[a0 : a0 + chunk] = vals.sum(axis=-1, dtype=np.int64)
    return out


def lcs_knn_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) LCS kNN, vectorised over all layer pairs and samples."""
    n, k = sa["nbrs"].shape[1:]
    return _ordered_sums(sa, sb, lcs_bits, lcs_lengths) / (n * k)


def edit_distance_knn_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) edit-distance kNN, vectorised over all layer pairs and samples."""
    n, k = sa["nbrs"].shape[1:]
    return 1.0 - _ordered_sums(sa, sb, levenshtein_bits, levenshtein) / (n * k)


def jaccard_knn_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) Jaccard kNN (ReSi): mean over i of |N_A(i) & N_B(i)| / |N_A(i) | N_B(i)| = c_i / (2k - c_i).

    Per-input overlap counts c_i from A's flattened indicators gathered at B's neighbour positions (exact integers),
    then a lookup of c / (2k - c).
    """
    la, n = sa["ind"].shape[:2]
    lb, _, k = sb["nbrs"].shape
    flat_a = sa["ind"].reshape(la, n * n)
    where = (np.arange(n)[:, None] * n + sb["nbrs"]).reshape(lb, n * k)
    ratio = np.arange(k + 1) / (2 * k - np.arange(k + 1))
    out = np.empty((la, lb), dtype=np.float64)
    for b in range(lb):
        counts = np.take(flat_a, where[b], axis=1).reshape(la, n, k).sum(axis=2, dtype=np.int64)
        out[:, b] = ratio[counts].mean(axis=1)
    return out


def jaccard_knn_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """Mean over i of |N_A(i) & N_B(i)| / |N_A(i) | N_B(i)| for one layer pair."""
    return float(jaccard_knn_all(one_layer(sa), one_layer(sb))[0, 0])


def jaccard_knn_chance(n: int, params: dict[str, Any]) -> float:
    """Expected Jaccard kNN of unrelated kernels (exact): E[c / (2k - c)], c ~ Hypergeometric(n - 1, k, k) (the
    overlap of two independent uniformly drawn k-subsets of the n - 1 other inputs)."""
    from scipy.stats import hypergeom

    k = params["k"]
    c = np.arange(k + 1)
    return float(hypergeom.pmf(c, n - 1, k, k) @ (c / (2 * k - c)))


# ---------------------------------------------------------------- many-to-many (several captions per image)


def caption_item_neighbours(gram: np.ndarray, m: int, k: int) -> np.ndarray:
    """(n m, n m) caption kernel, item-major (row i m + j = caption j of item i) -> (n m, k) int64 item indices: each
    caption's k nearest OTHER items, an item's similarity being that of its most similar caption (ties: smaller
    item)."""
    rows = gram.shape[0]
    n = rows // m
    item_sim = gram.reshape(rows, n, m).max(axis=2)  # (n m, n): best caption of each item
    item_sim[np.arange(rows), np.arange(rows) // m] = -np.inf  # never the caption's own item
    return np.argsort(-item_sim, axis=1, kind="stable")[:, :k]


def many_to_many_knn_all(image_ind: np.ndarray, caption_nbrs: np.ndarray, m: int) -> np.ndarray:
    """Many-to-many mutual kNN of every layer pair.

    ``image_ind``: (L_x, n, n) bool image-neighbour indicators; ``caption_nbrs``: (L_y, n m, k) item neighbours of
    each caption (:func:`caption_item_neighbours`). A caption's score is the fraction of its k item neighbours
    among its image's k neighbours; an item's score the mean over its m captions; the result (L_x, L_y) the mean
    over items.
    """
    k = caption_nbrs.shape[2]
    owner = np.arange(caption_nbrs.shape[1]) // m
    out = np.empty((image_ind.shape[0], caption_nbrs.shape[0]), dtype=np.float64)
    for a, ind in enumerate(image_ind):
        rows = ind[owner]  # (n m, n): each caption's image-neighbour indicator
        for b, nb in enumerate(caption_nbrs):
            out[a, b] = np.take_along_axis(rows, nb, axis=1).sum() / (k * caption_nbrs.shape[1])
    return out


def many_to_many_mutual_knn(
    image_layers: list[np.ndarray], caption_layers: list[np.ndarray], m: int, k: int = 10
) -> np.ndarray:
    """(L_x, L_y) many-to-many mutual kNN of prepared (unit-row) image layers (n, d) and caption layers (n m, d),
    item-major, inner-product kernels; m = 1 is the one-to-one mutual kNN."""
    n = image_layers[0].shape[0]
    if any(c.shape[0] != n * m for c in caption_layers):
        raise ValueError(f"caption layers need n * m = {n * m} rows (item-major), got {[c.shape[0] for c in caption_layers]}")
    if not 1 <= k < n:
        raise ValueError(f"k = {k} must be in [1, n - 1 = {n - 1}]")
    ind = np.stack([indicator(neighbours(x @ x.T, k), n) for x in image_layers])
    nbrs = np.stack([caption_item_neighbours(c @ c.T, m, k) for c in caption_layers])
    return many_to_many_knn_all(ind, nbrs, m)
