"""Metrics vs brute-force definitions from METRICS.md (python loops, explicit H, scipy SVD), invariances, errors."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def bf_neighbours(kernel: np.ndarray, k: int) -> list[list[int]]:
    """For each i, the k indices j != i with the largest kernel[i, j], ties to smaller j (python sort)."""
    n = kernel.shape[0]
    return [sorted((j for j in range(n) if j != i), key=lambda j: (-float(kernel[i, j]), j))[:k] for i in range(n)]


def gram64(x: np.ndarray) -> np.ndarray:
    """Linear kernel in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def bf_mutual(na: list[list[int]], nb: list[list[int]], k: int) -> float:
    """(1/n) sum_i |N_A(i) & N_B(i)| / k."""
    return sum(len(set(a) & set(b)) for a, b in zip(na, nb)) / (len(na) * k)


def bf_cycle(na: list[list[int]], nb: list[list[int]]) -> float:
    """(1/n) sum_i 1[exists j in N_B(i) with i in N_A(j)]."""
    n = len(na)
    return sum(any(i in na[j] for j in nb[i]) for i in range(n)) / n


def bf_lcs(x: list[int], y: list[int]) -> int:
    """Classic 2-D LCS dynamic programme."""
    d = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for p in range(1, len(x) + 1):
        for q in range(1, len(y) + 1):
            d[p][q] = d[p - 1][q - 1] + 1 if x[p - 1] == y[q - 1] else max(d[p - 1][q], d[p][q - 1])
    return d[-1][-1]


def bf_lev(x: list[int], y: list[int]) -> int:
    """Classic Levenshtein dynamic programme (unit costs)."""
    d = [[p + q if p == 0 or q == 0 else 0 for q in range(len(y) + 1)] for p in range(len(x) + 1)]
    for p in range(1, len(x) + 1):
        for q in range(1, len(y) + 1):
            d[p][q] = min(d[p - 1][q] + 1, d[p][q - 1] + 1, d[p - 1][q - 1] + (x[p - 1] != y[q - 1]))
    return d[-1][-1]


def bf_lcs_knn(na, nb, k) -> float:
    return sum(bf_lcs(a, b) for a, b in zip(na, nb)) / (len(na) * k)


def bf_edit_knn(na, nb, k) -> float:
    return 1 - sum(bf_lev(a, b) for a, b in zip(na, nb)) / (len(na) * k)


def bf_knn_metric(metric: str, a: np.ndarray, b: np.ndarray, k: int) -> float:
    na, nb = bf_neighbours(gram64(a), k), bf_neighbours(gram64(b), k)
    if metric == "mutual_knn":
        return bf_mutual(na, nb, k)
    if metric == "cycle_knn":
        return bf_cycle(na, nb)
    if metric == "lcs_knn":
        return bf_lcs_knn(na, nb, k)
    return bf_edit_knn(na, nb, k)


def bf_rbf(x: np.ndarray, sigma: float) -> np.ndarray:
    n = x.shape[0]
    x = np.asarray(x, dtype=np.float64)
    return np.array([[np.exp(-np.sum((x[i] - x[j]) ** 2) / (2 * sigma**2)) for j in range(n)] for i in range(n)])


def bf_cka(k: np.ndarray, l: np.ndarray) -> float:
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    hsic = lambda x, y: np.trace(x @ h @ y @ h)  # noqa: E731
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def bf_hsic1(k: np.ndarray, l: np.ndarray) -> float:
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ kt @ lt @ one) / (
        n * (n - 3)
    )


def bf_unbiased_cka(k: np.ndarray, l: np.ndarray) -> float:
    return bf_hsic1(k, l) / np.sqrt(bf_hsic1(k, k) * bf_hsic1(l, l))


def bf_cknna(a: np.ndarray, b: np.ndarray, k: int) -> float:
    ka, kb = gram64(a), gram64(b)
    n = ka.shape[0]
    ma, mb = np.zeros((n, n)), np.zeros((n, n))
    for i, (ra, rb) in enumerate(zip(bf_neighbours(ka, k), bf_neighbours(kb, k))):
        ma[i, ra] = 1
        mb[i, rb] = 1
    m = ma * mb
    return bf_hsic1(m * ka, m * kb) / np.sqrt(bf_hsic1(ma * ka, ma * ka) * bf_hsic1(mb * kb, mb * kb))


def bf_svcca(a: np.ndarray, b: np.ndarray, dim: int) -> float:
    def std(x):
        x = np.asarray(x, dtype=np.float64)
        z = x - x.mean(0)
        s = z.std(0, ddof=1)
        return np.where(s > 0, z / np.where(s > 0, s, 1), 0.0)

    ua = scipy.linalg.svd(std(a), full_matrices=False)[0][:, :dim]
    ub = scipy.linalg.svd(std(b), full_matrices=False)[0][:, :dim]
    return float(np.mean(scipy.linalg.svd(ua.T @ ub, compute_uv=False)))


def bf_metric(metric: str, a: np.ndarray, b: np.ndarray, **p) -> float:
    """Brute-force value of any metric with METRICS.md defaults."""
    if metric in ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn"):
        return bf_knn_metric(metric, a, b, p.get("k", 10))
    if metric == "cka":
        if p.get("kernel", "linear") == "rbf":
            return bf_cka(bf_rbf(a, p.get("sigma", 1.0)), bf_rbf(b, p.get("sigma", 1.0)))
        return bf_cka(gram64(a), gram64(b))
    if metric == "unbiased_cka":
        return bf_unbiased_cka(gram64(a), gram64(b))
    if metric == "cknna":
        return bf_cknna(a, b, p.get("k", 10))
    return bf_svcca(a, b, p.get("dim", 10))


# ----------------------------------------------------------------------------- tests

import warnings  # noqa: E402

import pytest  # noqa: E402

from prh.errors import PrhError  # noqa: E402
from prh.metrics import METRICS, layerwise, pairwise  # noqa: E402
from prh.metrics.kernels import neighbours  # noqa: E402

KNN = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn")
SYMMETRIC = ("mutual_knn", "lcs_knn", "edit_distance_knn", "cka", "unbiased_cka", "svcca")  # cknna: 1^T K~ L~ 1 is ordered


def rand(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


def data_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random, noisy-copy, rotated-and-scaled, and clustered pairs (n = 40)."""
    a = rand(40, 12, 1)
    centres = rand(4, 6, 7) * 4
    clustered = (centres[np.arange(40) % 4] + 0.3 * rand(40, 6, 8)).astype(np.float32)
    return {
        "random": (a, rand(40, 9, 2)),
        "noisy": (a, (a + 0.5 * rand(40, 12, 3)).astype(np.float32)),
        "rotated": (a, (2.5 * a @ rotation(12, 4)).astype(np.float32)),
        "clustered": (clustered, (clustered @ rand(6, 5, 9) + 0.5 * rand(40, 5, 10)).astype(np.float32)),
    }


@pytest.mark.parametrize("kind", ["random", "noisy", "rotated", "clustered"])
@pytest.mark.parametrize("metric", KNN)
@pytest.mark.parametrize("k", [1, 4, 10])
def test_knn_metrics_match_brute_force(metric: str, kind: str, k: int) -> None:
    a, b = data_pairs()[kind]
    assert pairwise(metric, a, b, k=k) == pytest.approx(bf_knn_metric(metric, a, b, k), abs=1e-12)


@pytest.mark.parametrize("kind", ["random", "noisy", "rotated", "clustered"])
@pytest.mark.parametrize(
    "metric,params",
    [("cka", {}), ("cka", {"kernel": "rbf", "sigma": 3.0}), ("unbiased_cka", {}), ("cknna", {"k": 5}), ("svcca", {"dim": 4})],
)
def test_kernel_metrics_match_brute_force(metric: str, params: dict, kind: str) -> None:
    a, b = data_pairs()[kind]
    assert pairwise(metric, a, b, **params) == pytest.approx(bf_metric(metric, a, b, **params), abs=2e-6)


def test_neighbour_ties_broken_by_lower_index() -> None:
    x = np.random.default_rng(0).integers(-1, 2, size=(60, 3)).astype(np.float32)  # many exact ties
    kern = x @ x.T
    for k in (1, 5, 20, 59):
        assert neighbours(kern, k).tolist() == bf_neighbours(kern.astype(np.float64), k)


@pytest.mark.parametrize("metric", KNN + ("cknna",))
def test_knn_metrics_with_exact_ties_match_brute_force(metric: str) -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(-1, 2, size=(50, 3)).astype(np.float32)
    b = (a + rng.integers(0, 2, size=(50, 3))).astype(np.float32)
    assert pairwise(metric, a, b, k=6) == pytest.approx(bf_metric(metric, a, b, k=6), abs=1e-9)


@pytest.mark.parametrize("metric", ["cycle_knn", "cknna"])
def test_asymmetric_metrics_are_oriented_a_first(metric: str) -> None:
    a, b = data_pairs()["noisy"]
    forward, backward = pairwise(metric, a, b, k=3), pairwise(metric, b, a, k=3)
    assert forward != backward
    assert forward == pytest.approx(bf_metric(metric, a, b, k=3), abs=2e-6)
    assert backward == pytest.approx(bf_metric(metric, b, a, k=3), abs=2e-6)


@pytest.mark.parametrize("metric", SYMMETRIC)
def test_symmetric_metrics_are_symmetric(metric: str) -> None:
    a, b = data_pairs()["noisy"]
    p = {"dim": 5} if metric == "svcca" else {}
    assert pairwise(metric, a, b, **p) == pytest.approx(pairwise(metric, b, a, **p), abs=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_identical_inputs_score_one(metric: str) -> None:
    a = rand(40, 12, 11)
    p = {"dim": 5} if metric == "svcca" else {}
    assert pairwise(metric, a, a, **p) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("metric", ["mutual_knn", "lcs_knn", "edit_distance_knn", "cycle_knn", "cka", "unbiased_cka", "cknna"])
def test_rotation_and_isotropic_scaling_invariance(metric: str) -> None:
    a, b = data_pairs()["noisy"]
    b2 = (3.0 * b @ rotation(12, 12)).astype(np.float32)
    assert pairwise(metric, a, b2) == pytest.approx(pairwise(metric, a, b), abs=1e-5)


def test_rbf_cka_is_not_scale_invariant_but_rotation_invariant() -> None:
    a, b = data_pairs()["noisy"]
    base = pairwise("cka", a, b, kernel="rbf", sigma=3.0)
    assert pairwise("cka", a, (b @ rotation(12, 2)).astype(np.float32), kernel="rbf", sigma=3.0) == pytest.approx(base, abs=1e-5)
    assert abs(pairwise("cka", a, 3 * b, kernel="rbf", sigma=3.0) - base) > 1e-3


def test_cknna_with_k_n_minus_1_equals_unbiased_cka() -> None:
    a, b = data_pairs()["noisy"]
    assert pairwise("cknna", a, b, k=39) == pytest.approx(pairwise("unbiased_cka", a, b), abs=1e-9)


def test_unbiased_cka_nan_with_warning_when_self_hsic_is_zero() -> None:
    a, b = np.ones((10, 3), np.float32), rand(10, 3, 0)
    with pytest.warns(RuntimeWarning):
        assert np.isnan(pairwise("unbiased_cka", a, b))
    with pytest.warns(RuntimeWarning):
        assert np.isnan(layerwise("unbiased_cka", [a], [b])[0, 0])


def test_returns_python_float_and_accepts_torch() -> None:
    torch = pytest.importorskip("torch")
    a, b = data_pairs()["noisy"]
    for metric in METRICS:
        p = {"dim": 4} if metric == "svcca" else {}
        got = pairwise(metric, torch.from_numpy(a).double(), torch.from_numpy(b), **p)
        assert type(got) is float
        assert got == pairwise(metric, a, b, **p)


@pytest.mark.parametrize("metric", METRICS)
def test_deterministic_bit_identical(metric: str) -> None:
    a, b = data_pairs()["clustered"]
    p = {"dim": 3, "seed": 1} if metric == "svcca" else {}
    first = layerwise(metric, [a, b], [b], **p)
    assert np.array_equal(first, layerwise(metric, [a, b], [b], **p))
    assert pairwise(metric, a, b, **p) == pairwise(metric, a, b, **(p | {"seed": 2} if metric == "svcca" else p))


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda a, b: pairwise("mutual_knn", a, b[:-1]), "samples"),
        (lambda a, b: pairwise("mutual_knn", a, b, k=0), "k:"),
        (lambda a, b: pairwise("mutual_knn", a, b, k=40), "k:"),
        (lambda a, b: pairwise("cknna", a, b, k=40), "k:"),
        (lambda a, b: pairwise("cka", np.where(a > 1, np.nan, a), b), "a:"),
        (lambda a, b: pairwise("cka", a, np.where(b > 1, np.inf, b)), "b:"),
        (lambda a, b: pairwise("unbiased_cka", a[:3], b[:3]), "n:"),
        (lambda a, b: pairwise("cknna", a[:3], b[:3], k=1), "n:"),
        (lambda a, b: pairwise("svcca", a, b[:, :5], dim=6), "dim:"),
        (lambda a, b: pairwise("nope", a, b), "mutual_knn, cycle_knn"),
        (lambda a, b: pairwise("cka", a, b, kernel="poly"), "kernel:"),
        (lambda a, b: pairwise("cka", a, b, kk=3), "kk"),
        (lambda a, b: pairwise("cka", a[0], b), "a:"),
    ],
)
def test_bad_input_raises_prh_error(call, needle: str) -> None:
    a, b = data_pairs()["random"]
    with pytest.raises(PrhError, match=needle) as err:
        call(a, b)
    assert "\n" not in str(err.value)


def test_irrelevant_known_params_are_ignored() -> None:
    a, b = data_pairs()["noisy"]
    assert pairwise("cka", a, b, k=5) == pairwise("cka", a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(pairwise("unbiased_cka", a, b, k=5))


def test_topk_path_ties_match_stable_sort_for_small_k() -> None:
    x = np.random.default_rng(3).integers(-1, 2, size=(300, 4)).astype(np.float32)  # heavy ties, 4k < n
    kern = x @ x.T
    want = np.argsort(np.diag(np.full(300, np.inf)) - kern.astype(np.float64), axis=1, kind="stable")
    for k in (1, 3, 10, 40):
        np.testing.assert_array_equal(neighbours(kern, k), want[:, :k])


def match_masks(text: np.ndarray, pattern: np.ndarray, word: type) -> np.ndarray:
    """(m, ...) masks: bit q of [p, ...] set where text[..., p] == pattern[..., q] (brute force)."""
    eq = text[..., :, None] == pattern[..., None, :]
    return np.moveaxis((eq * (word(1) << np.arange(pattern.shape[-1], dtype=word))).sum(axis=-1, dtype=word), -1, 0)


@pytest.mark.parametrize("k", [1, 2, 7, 16, 17, 32, 33, 64])
def test_bit_parallel_lcs_and_levenshtein_equal_the_dp(k: int) -> None:
    from prh.metrics.knn import lcs_bits, levenshtein_bits

    rng = np.random.default_rng(k)
    word = np.uint16 if k <= 16 else np.uint32 if k <= 32 else np.uint64
    for alphabet in (2, k, 4 * k):  # repeated symbols, some, and mostly distinct ones
        x, y = rng.integers(0, alphabet, (60, k)), rng.integers(0, alphabet, (60, k))
        masks = match_masks(x, y, word)
        assert lcs_bits(masks, k).tolist() == [bf_lcs(list(a), list(b)) for a, b in zip(x, y)]
        assert levenshtein_bits(masks, k).tolist() == [bf_lev(list(a), list(b)) for a, b in zip(x, y)]


@pytest.mark.parametrize("metric", ["lcs_knn", "edit_distance_knn"])
def test_ordered_metrics_beyond_64_neighbours_match_brute_force(metric: str) -> None:
    a, b = rand(80, 6, 11), rand(80, 5, 12)  # k = 70 > 64 bits: the row DP
    assert layerwise(metric, [a], [b], k=70)[0, 0] == pytest.approx(bf_knn_metric(metric, a, b, 70), abs=1e-12)


@pytest.mark.parametrize("offset", [0.0, 4.0])
def test_hsic_from_row_sums_equals_explicit_centring(offset: float) -> None:
    """CKA and unbiased CKA from uncentred kernels, row sums and diagonals == explicit H K H L / K~ L~ (float64)."""
    rng = np.random.default_rng(13)
    z = rng.standard_normal((70, 5))
    xs = [(z @ rng.standard_normal((5, d)) + rng.standard_normal((70, d)) + offset).astype(np.float32) for d in (9, 14)]
    ys = [(z @ rng.standard_normal((5, d)) + 2 * rng.standard_normal((70, d)) + offset).astype(np.float32) for d in (6, 11)]
    ka, kb = ([(x @ x.T).astype(np.float64) for x in side] for side in (xs, ys))
    for metric, explicit in (("cka", bf_cka), ("unbiased_cka", bf_unbiased_cka)):
        want = [[explicit(k, l) for l in kb] for k in ka]
        np.testing.assert_allclose(layerwise(metric, xs, ys), want, rtol=0, atol=1e-12)


def test_gram_matrix_is_exactly_symmetric() -> None:
    from prh.metrics.kernels import linear_kernel

    rng = np.random.default_rng(14)
    for n, d in ((1, 3), (37, 5), (300, 64), (513, 1000)):
        x = rng.standard_normal((n, 2 * d)).astype(np.float32)
        for view in (x, x[:, ::2]):  # contiguous, and a strided view (copied to contiguous first)
            g = linear_kernel(view)
            np.testing.assert_array_equal(g, g.T)


def test_rbf_kernel_in_place_and_cached_paths_agree_bit_for_bit() -> None:
    """rbf_from_gram(g, out=g) == rbf_from_gram(g); the cache's RBF kernels are the same with or without cached Grams."""
    from prh.metrics.kernels import linear_kernel, rbf_from_gram
    from prh.metrics.shared import KernelCache

    rng = np.random.default_rng(15)
    for n in (1, 5, 300, 1100):  # 1100: more than one row block
        x = rng.standard_normal((n, 24)).astype(np.float32)
        g = linear_kernel(x)
        want = rbf_from_gram(g, 2.5)
        np.testing.assert_allclose(want, bf_rbf(x, 2.5), rtol=0, atol=2e-5)
        np.testing.assert_array_equal(rbf_from_gram(g, 2.5, out=g), want)
    layers = [rng.standard_normal((200, d)).astype(np.float32) for d in (7, 30)]
    fresh, warm = KernelCache(layers), KernelCache(layers)
    warm.grams()
    np.testing.assert_array_equal(fresh.rbfs(3.0), warm.rbfs(3.0))
    np.testing.assert_array_equal(fresh.rbfs(3.0)[1], rbf_from_gram(linear_kernel(layers[1]), 3.0))
