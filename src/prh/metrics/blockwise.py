"""Bounded-memory metric building blocks for large n, in torch (CPU or CUDA): never an n x n matrix in memory.

Neighbour lists come from row blocks of the Gram (float32 blocks, exact top-k with the spec tie rule); the kNN metrics
and CKNNA are sums over those (n, k) lists; linear CKA and unbiased CKA come from their feature-space forms (float64
sums of X'Y, X'1, X'r and r's over sample chunks, r the squared row norms: O(n d^2) time, O(d^2) memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from prh.errors import PrhError
from prh.metrics.kernels import ratio_or_nan
from prh.metrics.knn import lcs_lengths, levenshtein

if TYPE_CHECKING:  # torch is imported where it is used: config validation reads the registry without it
    import torch

BLOCK_BYTES = 64 * 2**20  # float32 Gram row block on the CPU
CUDA_BLOCK_BYTES = 2**30  # on a GPU: fewer, larger blocks (kernel launches and host syncs per block)
CHUNK_BYTES = 32 * 2**20  # float64 sample chunk of the CKA sums
FeatureSource = Union[np.ndarray, "torch.Tensor", Iterable[Union[np.ndarray, "torch.Tensor"]]]


def resident(x: FeatureSource, device: str | torch.device, name: str = "x") -> torch.Tensor:
    """Features as one (n, d) float32 tensor on ``device``: from an array, a tensor, or an iterable of sample chunks.

    Chunks are moved one at a time, so a zarr reader never holds more than one chunk on the host.
    """
    import torch

    parts = [x] if isinstance(x, (np.ndarray, torch.Tensor)) else x
    out = torch.cat([_tensor(p).to(device=device, dtype=torch.float32) for p in parts])
    if out.ndim != 2 or out.shape[0] < 2 or out.shape[1] < 1:
        raise PrhError(f"{name}: expected (n, d) features with n >= 2 and d >= 1, got shape {tuple(out.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise PrhError(f"{name}: features contain NaN or infinite values")
    return out.contiguous()


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor sharing a writable array's memory, else a float32 copy (read-only zarr chunks)."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach()
    arr = np.asarray(x)
    return torch.from_numpy(arr) if arr.flags.writeable else torch.tensor(arr, dtype=torch.float32)


def block_rows(n: int, budget: int = BLOCK_BYTES) -> int:
    """Rows of a float32 (rows, n) Gram block within ``budget`` bytes (at least 1)."""
    return max(1, budget // (4 * n))


# ----------------------------------------------------------------------------- neighbour lists


def top_k_block(g: torch.Tensor, k: int) -> torch.Tensor:
    """(r, n) similarities -> (r, k) int64 columns of the k largest per row, by decreasing value, ties to smaller index.

    torch.topk of k + 1 gives a candidate set whose order is fixed by (value desc, index asc); a row whose (k+1)-th
    candidate equals its k-th may hide a tied smaller index outside the set, so those rows are sorted in full (stable).
    """
    import torch

    m = min(k + 1, g.shape[1])
    vals, idx = torch.topk(g, m, dim=1, largest=True, sorted=False)
    idx, order = torch.sort(idx, dim=1)
    vals = torch.gather(vals, 1, order)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    out = torch.gather(idx, 1, order)[:, :k]
    if m > k:
        tied = torch.nonzero(vals[:, k] == vals[:, k - 1]).flatten()
        if tied.numel():
            out[tied] = torch.sort(g[tied], dim=1, descending=True, stable=True).indices[:, :k]
    return out


def neighbour_lists(
    x: torch.Tensor, k: int, rows: int | None = None, progress: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 tensor -> ((n, k) int64 neighbour lists, (n, k) float32 Gram values at them), self excluded.

    Equal to ``prh.metrics.kernels.neighbours(x @ x.T, k)`` wherever the two Grams agree bitwise (ties included);
    memory O(rows n + n k).
    """
    import torch

    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise PrhError(f"k: must satisfy 1 <= k <= n - 1 = {n - 1}, got {k}")
    if not bool(torch.isfinite((x * x).sum(1)).all()):  # |x_i . x_j| <= ||x_i|| ||x_j||: the Gram stays finite
        raise PrhError("features: squared row norms overflow float32; rescale the features")
    rows = rows or block_rows(n, CUDA_BLOCK_BYTES if x.is_cuda else BLOCK_BYTES)
    nbrs = np.empty((n, k), dtype=np.int64)
    vals = np.empty((n, k), dtype=np.float32)
    starts = range(0, n, rows)
    for i0 in _progress(starts, progress):
        i1 = min(i0 + rows, n)
        g = x[i0:i1] @ x.T
        local = torch.arange(i1 - i0, device=x.device)
        g[local, local + i0] = -torch.inf
        top = top_k_block(g, k)
        nbrs[i0:i1] = top.cpu().numpy()
        vals[i0:i1] = torch.gather(g, 1, top).cpu().numpy()
    return nbrs, vals


def _progress(it: range, desc: str | None) -> Iterable[int]:
    """``it`` wrapped in a tqdm bar when ``desc`` is given."""
    if desc is None:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="block", mininterval=2)


# ----------------------------------------------------------------------------- metrics from neighbour lists


def _codes(nbrs: np.ndarray) -> np.ndarray:
    """(n, k) lists -> (n, k) int64 codes i * n + N(i) of the pairs (i, j in N(i))."""
    n = nbrs.shape[0]
    return np.arange(n, dtype=np.int64)[:, None] * n + nbrs


def _transposed_codes(nbrs: np.ndarray) -> np.ndarray:
    """(n, k) lists -> (n, k) int64 codes N(i) * n + i of the pairs (j in N(i), i)."""
    n = nbrs.shape[0]
    return nbrs.astype(np.int64) * n + np.arange(n, dtype=np.int64)[:, None]


def _member(codes: np.ndarray, sorted_codes: np.ndarray) -> np.ndarray:
    """Boolean array: which ``codes`` occur in the ascending array ``sorted_codes``."""
    pos = np.minimum(np.searchsorted(sorted_codes, codes), sorted_codes.size - 1)
    return sorted_codes[pos] == codes


def mutual_knn_lists(na: np.ndarray, nb: np.ndarray) -> float:
    """Mean over i of |N_A(i) & N_B(i)| / k from (n, k) neighbour lists."""
    n, k = na.shape
    return float(np.count_nonzero(_member(_codes(nb), np.sort(_codes(na), axis=None))) / (n * k))


def cycle_knn_lists(na: np.ndarray, nb: np.ndarray) -> float:
    """Mean over i of 1[exists j in N_B(i) with i in N_A(j)] (A first) from (n, k) neighbour lists."""
    back = _member(_transposed_codes(nb), np.sort(_codes(na), axis=None))
    return float(back.any(axis=1).mean())


def lcs_knn_lists(na: np.ndarray, nb: np.ndarray) -> float:
    """Mean over i of LCS(N_A(i), N_B(i)) / k from (n, k) neighbour lists."""
    n, k = na.shape
    return float(sum(int(lcs_lengths(na[s], nb[s]).sum(dtype=np.int64)) for s in _row_slices(n, k)) / (n * k))


def edit_distance_knn_lists(na: np.ndarray, nb: np.ndarray) -> float:
    """1 - mean over i of Lev(N_A(i), N_B(i)) / k from (n, k) neighbour lists."""
    n, k = na.shape
    return 1.0 - sum(int(levenshtein(na[s], nb[s]).sum(dtype=np.int64)) for s in _row_slices(n, k)) / (n * k)


def _row_slices(n: int, k: int) -> list[slice]:
    """Row slices keeping a (rows, k + 1) dynamic programme near 2^22 elements."""
    step = max(1, 2**22 // (k + 1))
    return [slice(i, i + step) for i in range(0, n, step)]


def hsic1_terms(trace: float, sum_k: float, sum_l: float, cross: float, n: int) -> float:
    """Unbiased HSIC_1 from tr(K~L~), 1'K~1, 1'L~1 and 1'K~L~1 (Song et al. 2012)."""
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def masked_hsic1(na: np.ndarray, va: np.ndarray, nb: np.ndarray, vb: np.ndarray) -> float:
    """HSIC_1(M o K, M o L), M = M_K o M_L the mutual-neighbour mask, from lists and kernel values at them.

    X = M o K and Y = M o L are non-zero only on the pairs (i, j) in both lists, so every term is a sum over those:
    tr(XY) = sum over pairs whose transpose is also in M of K_ij L_ji (L symmetric), 1'XY1 = sum X_ij (Y 1)_j.
    """
    n = na.shape[0]
    codes_a, codes_b = _codes(na).ravel(), _codes(nb).ravel()
    order_b = np.argsort(codes_b)
    sorted_b = codes_b[order_b]
    in_m = _member(codes_a, sorted_b)
    pair = codes_a[in_m]
    x = va.ravel()[in_m].astype(np.float64)
    y = vb.ravel()[order_b[np.searchsorted(sorted_b, pair)]].astype(np.float64)  # L at the same pairs
    rows, cols = pair // n, pair % n
    back = _member(cols * n + rows, np.sort(pair))  # the transpose (j, i) is in M too
    y_rows = np.bincount(rows, weights=y, minlength=n)
    trace = float((x * y)[back].sum())
    cross = float((x * y_rows[cols]).sum())
    return hsic1_terms(trace, float(x.sum()), float(y.sum()), cross, n)


def cknna_lists(na: np.ndarray, va: np.ndarray, nb: np.ndarray, vb: np.ndarray) -> float:
    """CKNNA from neighbour lists and Gram values: S(K, L) / sqrt(S(K, K) S(L, L)) (NaN with a warning if <= 0)."""
    num = masked_hsic1(na, va, nb, vb)
    prod = masked_hsic1(na, va, na, va) * masked_hsic1(nb, vb, nb, vb)
    return float(ratio_or_nan(np.array(num), np.array(prod), "cknna"))


# ----------------------------------------------------------------------------- CKA from feature sums


@dataclass(frozen=True)
class LayerSums:
    """float64 sums over samples of one layer X (n, d) and its squared row norms r, as views of Z'Z (on its device)."""

    n: int
    xx: torch.Tensor  # (d, d) X'X
    x1: torch.Tensor  # (d,) X'1
    xr: torch.Tensor  # (d,) X'r
    rr: float  # r'r
    r1: float  # 1'r


def _z_chunks(layers: Sequence[torch.Tensor], rows: int) -> Iterator[torch.Tensor]:
    """float64 (rows, D) chunks of Z = [X_1 .. X_L, r_1 .. r_L, 1], r_l the squared row norms of layer l."""
    import torch

    n = layers[0].shape[0]
    for i0 in range(0, n, rows):
        xs = [x[i0 : i0 + rows].double() for x in layers]
        norms = [(x * x).sum(1, keepdim=True) for x in xs]
        yield torch.cat([*xs, *norms, torch.ones_like(norms[0])], dim=1)


def _chunk_rows(width: int) -> int:
    """Sample rows of a float64 (rows, width) chunk within CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (8 * width))


def _z_columns(dims: Sequence[int], i: int) -> tuple[slice, int, int]:
    """Columns of layer i in Z = [X_1 .. X_L, r_1 .. r_L, 1]: its features, its row norms, the ones column."""
    offsets = np.cumsum([0, *dims])
    return slice(int(offsets[i]), int(offsets[i + 1])), int(offsets[-1]) + i, int(offsets[-1]) + len(dims)


def _sq_minus_outer(m: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None, n: int = 1) -> float:
    """||M - a b'/n||_F^2 (||M||_F^2 without a, b) in float64, in row blocks: no second (d_a, d_b) matrix."""
    rows = max(1, 2**22 // max(1, m.shape[1]))
    total = m.new_zeros(())
    for i0 in range(0, m.shape[0], rows):
        block = m[i0 : i0 + rows]
        if a is not None and b is not None:
            block = block - a[i0 : i0 + rows, None] * (b[None, :] / n)
        total += (block * block).sum()
    return float(total)


def _hsic1_features(xy: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor, xs: torch.Tensor, yr: torch.Tensor,
                    rs: float, r1: float, s1: float, n: int) -> float:  # fmt: skip
    """HSIC_1(K~, L~) of K = XX', L = YY' from feature sums (K~, L~ with zeroed diagonals r, s).

    tr(K~L~) = ||X'Y||^2 - r's; 1'K~1 = ||X'1||^2 - 1'r; 1'K~L~1 = (X X'1 - r)'(Y Y'1 - s).
    """
    trace = _sq_minus_outer(xy) - rs
    cross = float(x1 @ xy @ y1) - float(x1 @ xs) - float(y1 @ yr) + rs
    return hsic1_terms(trace, float(x1 @ x1) - r1, float(y1 @ y1) - s1, cross, n)


def _self_linear(t: LayerSums) -> float:
    """||Xc'Xc||_F^2, Xc the column-centred layer."""
    return _sq_minus_outer(t.xx, t.x1, t.x1, t.n)


def _self_hsic1(t: LayerSums) -> float:
    """HSIC_1(K, K) of the layer's linear kernel."""
    return _hsic1_features(t.xx, t.x1, t.x1, t.xr, t.xr, t.rr, t.r1, t.r1, t.n)


# ----------------------------------------------------------------------------- one model's layers at large n


class LargeLayers:
    """One model's (n, d_l) layers resident on a device; neighbour lists per (layer, k) and Z'Z made once, on use."""

    def __init__(self, layers: Sequence[FeatureSource], device: str | torch.device = "cpu", rows: int | None = None,
                 progress: str | None = None) -> None:  # fmt: skip
        """``layers``: arrays, tensors or iterables of sample chunks; ``rows``: Gram block rows (default: 64 MiB on
        the CPU, 1 GiB on a GPU)."""

        if len(layers) == 0:
            raise PrhError("layers: expected at least one (n, d) layer")
        self.layers = [resident(x, device, f"layers[{i}]") for i, x in enumerate(layers)]
        ns = {x.shape[0] for x in self.layers}
        if len(ns) != 1:
            raise PrhError(f"layers: all layers must have the same number of samples, got {sorted(ns)}")
        self.n: int = ns.pop()
        self.dims: list[int] = [x.shape[1] for x in self.layers]
        self.rows, self.progress = rows, progress
        self._nbrs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._zz: torch.Tensor | None = None

    def __len__(self) -> int:
        """Number of layers."""
        return len(self.layers)

    def neighbours(self, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Layer i's ((n, k) int64 neighbour lists, (n, k) float32 Gram values at them), spec tie rule."""
        if (i, k) not in self._nbrs:
            desc = f"{self.progress} layer {i}" if self.progress else None
            self._nbrs[(i, k)] = neighbour_lists(self.layers[i], k, self.rows, desc)
        return self._nbrs[(i, k)]

    def zz(self) -> torch.Tensor:
        """float64 Z'Z of Z = [X_1 .. X_L, r_1 .. r_L, 1] summed over sample chunks (on the layers' device)."""
        import torch

        if self._zz is None:
            width = sum(self.dims) + len(self) + 1
            acc = torch.zeros((width, width), dtype=torch.float64, device=self.layers[0].device)
            for z in _z_chunks(self.layers, _chunk_rows(width)):
                acc += z.T @ z
            self._zz = acc
        return self._zz

    def sums(self, i: int) -> LayerSums:
        """Layer i's float64 sums (views of Z'Z)."""
        zz = self.zz()
        x, r, one = _z_columns(self.dims, i)
        return LayerSums(n=self.n, xx=zz[x, x], x1=zz[x, one], xr=zz[x, r], rr=float(zz[r, r]), r1=float(zz[r, one]))


def cross_zz(a: LargeLayers, b: LargeLayers) -> torch.Tensor:
    """float64 Z_A'Z_B over aligned sample chunks (on A's device): every layer pair's cross sums in one pass."""
    import torch

    if a.n != b.n:
        raise PrhError(f"b: A has {a.n} samples but B has {b.n}; rows must describe the same inputs")
    wa, wb = sum(a.dims) + len(a) + 1, sum(b.dims) + len(b) + 1
    rows = _chunk_rows(wa + wb)
    acc = torch.zeros((wa, wb), dtype=torch.float64, device=a.layers[0].device)
    for za, zb in zip(_z_chunks(a.layers, rows), _z_chunks(b.layers, rows)):
        acc += za.T @ zb.to(za.device)
    return acc


def pair_sums(a: LargeLayers, b: LargeLayers) -> tuple[torch.Tensor, list[LayerSums], list[LayerSums]]:
    """Z_A'Z_B and every layer's own sums of A and of B: what the CKA-family scores of all layer pairs read."""
    return cross_zz(a, b), [a.sums(i) for i in range(len(a))], [b.sums(j) for j in range(len(b))]


def _knn_all(score: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[LargeLayers, LargeLayers, dict], np.ndarray]:
    """All-layer-pairs scorer of a neighbour-list metric ``score(N_A, N_B)``."""

    def all_pairs(a: LargeLayers, b: LargeLayers, params: dict) -> np.ndarray:
        k = params["k"]
        return np.array([[score(a.neighbours(i, k)[0], b.neighbours(j, k)[0]) for j in range(len(b))]
                         for i in range(len(a))])  # fmt: skip

    all_pairs.__doc__ = f"(La, Lb) {score.__name__.removesuffix('_lists')} of every layer pair from neighbour lists."
    return all_pairs


mutual_knn_large = _knn_all(mutual_knn_lists)
cycle_knn_large = _knn_all(cycle_knn_lists)
lcs_knn_large = _knn_all(lcs_knn_lists)
edit_distance_knn_large = _knn_all(edit_distance_knn_lists)


def cknna_large(a: LargeLayers, b: LargeLayers, params: dict) -> np.ndarray:
    """(La, Lb) CKNNA of every layer pair from neighbour lists and Gram values (sparse mask sums)."""
    k = params["k"]
    return np.array([[cknna_lists(*a.neighbours(i, k), *b.neighbours(j, k)) for j in range(len(b))]
                     for i in range(len(a))])  # fmt: skip


def cka_large(a: LargeLayers, b: LargeLayers, params: dict) -> np.ndarray:
    """(La, Lb) linear CKA of every layer pair from feature sums, ||Xc'Yc||^2 / (||Xc'Xc|| ||Yc'Yc||): the self
    terms once per layer, one centred cross block per pair; the RBF kernel has no feature-space form."""
    if params.get("kernel", "linear") != "linear":
        raise PrhError("kernel: the large-n path computes linear CKA only (an RBF kernel needs the n x n matrix)")
    g, sa, sb = pair_sums(a, b)
    num = np.array([[_sq_minus_outer(g[_z_columns(a.dims, i)[0], _z_columns(b.dims, j)[0]], ta.x1, tb.x1, a.n)
                     for j, tb in enumerate(sb)] for i, ta in enumerate(sa)])  # fmt: skip
    prod = np.outer([_self_linear(t) for t in sa], [_self_linear(t) for t in sb])
    return ratio_or_nan(num, prod, "cka")


def unbiased_cka_large(a: LargeLayers, b: LargeLayers, params: dict) -> np.ndarray:
    """(La, Lb) unbiased CKA of every layer pair from feature sums: HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)),
    the self terms once per layer."""
    g, sa, sb = pair_sums(a, b)

    def cross(i: int, j: int) -> float:
        (x, ra, _), (y, rb, _) = _z_columns(a.dims, i), _z_columns(b.dims, j)
        return _hsic1_features(g[x, y], sa[i].x1, sb[j].x1, g[x, rb], g[ra, y], float(g[ra, rb]), sa[i].r1,
                               sb[j].r1, a.n)  # fmt: skip

    num = np.array([[cross(i, j) for j in range(len(b))] for i in range(len(a))])
    prod = np.outer([_self_hsic1(t) for t in sa], [_self_hsic1(t) for t in sb])
    return ratio_or_nan(num, prod, "unbiased_cka")
