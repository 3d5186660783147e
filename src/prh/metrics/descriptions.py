"""What docs/metrics.md says about each measure beyond its registry record: formula, range, cost and the peer libraries
that implement it (with where their definitions differ). Data only; ``prh.metrics.reference`` renders the page."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    """A library implementing the same measure: its name, the function, and how its definition differs (or "")."""

    library: str
    function: str
    difference: str = ""


@dataclass(frozen=True)
class MetricDoc:
    """The documentation of one measure: formula, range, cost in n, d and layers, and its peers."""

    formula: str
    value_range: str
    cost: str
    peers: tuple[Peer, ...] = ()


REFERENCE_LOOP = Peer("platonic-rep (reference-style loop in benchmarks/align_speed.py)", "metrics.py per pair")
ARISTOTELIAN = "Aristotelian (mlbio-epfl/Aristotelian, `aristotelian.metrics`; not on PyPI)"
KNN_COST = ("per layer: Gram n^2 d, exact top-k; per layer pair O(n k) gathers. Memory: float32 Gram + bool "
            "indicator, 5 n^2 bytes per layer (bounded-memory form: O(n k))")  # fmt: skip
KERNEL_COST = ("per layer: Gram n^2 d and its float64 row sums; per layer pair one float64 inner product of the "
               "upper triangles, n^2 / 2. Memory: 4 n^2 bytes per layer")  # fmt: skip
SVD_COST = ("per layer: centred SVD via the smaller Gram, min(n, d)^2 max(n, d); per layer pair U_x'U_y (n r_x r_y) "
            "and the singular values of an r_x x r_y matrix (r^3), r = rank <= min(n - 1, d). Memory: 8 r (n + d) "
            "bytes per layer")  # fmt: skip
UNIT_COST = (" Unit weights (CCA without the ridge, the shape metric at alpha = 0): where both ranks exceed (n - 1) / 2 "
             "the pair takes the complements instead (CS decomposition: ||U_x'U_y||_* = ||W_x'W_y||_* + r_x + r_y - "
             "(n - 1)), the singular values of an (n - 1 - r_x) x (n - 1 - r_y) matrix; per layer a Gaussian block "
             "projected off span(1, U) twice, "
             "4 n r (n - 1 - r) (CCA: not for layers at least n wide, whose pairs all take the ridge)")  # fmt: skip
RSA_COST = ("per layer: RDM n^2 d and a sort of its m = n (n - 1) / 2 entries (m log m); per layer pair one float64 "
            "inner product of length m (Kendall tau-a: one Fenwick-tree discordance count, m log m). Memory: 16 n^2 "
            "bytes per layer")  # fmt: skip

DOCS: dict[str, MetricDoc] = {
    "mutual_knn": MetricDoc(
        "(1/n) sum_i |N_A(i) & N_B(i)| / k, N(i) the k most cosine-similar other inputs (ties to the smaller index)",
        "[0, 1]", KNN_COST,
        (REFERENCE_LOOP, Peer(ARISTOTELIAN, "MutualKNN", "unstable torch.topk tie order; float32"))),
    "cycle_knn": MetricDoc(
        "(1/n) sum_i 1[exists j in N_B(i) with i in N_A(j)]", "[0, 1]", KNN_COST,
        (REFERENCE_LOOP, Peer(ARISTOTELIAN, "CycleKNN", "unstable torch.topk tie order"))),
    "lcs_knn": MetricDoc(
        "(1/n) sum_i LCS(N_A(i), N_B(i)) / k over the ordered neighbour lists", "[0, 1]",
        KNN_COST + "; bit-parallel LCS, O(n k) words per pair",
        (Peer("platonic-rep", "lcs_knn", "does not divide by k"),)),
    "edit_distance_knn": MetricDoc(
        "1 - (1/n) sum_i Lev(N_A(i), N_B(i)) / k, unit-cost Levenshtein distance of the ordered lists", "[0, 1]",
        KNN_COST + "; bit-parallel Levenshtein (Myers / Hyyro)", (REFERENCE_LOOP,)),
    "jaccard_knn": MetricDoc(
        "(1/n) sum_i |N_A(i) & N_B(i)| / |N_A(i) | N_B(i)| = (1/n) sum_i c_i / (2k - c_i)", "[0, 1]", KNN_COST,
        (Peer("ReSi (mklabunde/resi, `repsim.measures`; not on PyPI)", "jaccard_similarity",
              "sklearn's neighbour search, whose first neighbour is dropped as the input itself (differs only where "
              "a copy of an input ties with it)"),)),
    "cka": MetricDoc(
        "HSIC_b(K, L) / sqrt(HSIC_b(K, K) HSIC_b(L, L)), HSIC_b = tr(K H L H), K = A A' (linear) or "
        "exp(-|a_i - a_j|^2 / (2 sigma^2)) (RBF)", "[0, 1]",
        KERNEL_COST + " (RBF: one exp pass per layer)",
        (REFERENCE_LOOP, Peer(ARISTOTELIAN, "CKALinear / CKARBF", "float32 feature-space Grams (on the sampled "
                              "pairs with a 9,984- or 19,200-wide concatenated layer at n = 1024 its linear CKA is off "
                              "by up to 6e-2, reaching 1.015; within 3e-6 on 768-wide layers); epsilon in the "
                              "denominator; its RBF sigma is a median heuristic"), Peer("netrep", "LinearCKA"))),
    "unbiased_cka": MetricDoc(
        "HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)), HSIC_1 the unbiased estimator of Song et al. (2012)",
        "[-1, 1] (NaN where a self term is <= 0)", KERNEL_COST,
        (REFERENCE_LOOP, Peer(ARISTOTELIAN, "CKAUnbiased", "float32; epsilon in the denominator"))),
    "cknna": MetricDoc(
        "HSIC_1(M o K, M o L) / sqrt(S(K, K) S(L, L)), M the mutual k-NN mask; k = n - 1 gives unbiased CKA",
        "unbounded above on anisotropic features (see prh.metrics.cka.cknna_pair); [-1, 1] at k = n - 1",
        KNN_COST + "; per pair O(n k) sparse mask sums",
        (REFERENCE_LOOP, Peer(ARISTOTELIAN, "CKNNA", "epsilon 1e-6 in the denominator; unstable tie order"))),
    "svcca": MetricDoc(
        "mean singular value of U_a' U_b, U the top-dim left singular vectors of column-standardised features",
        "[0, 1]", "per layer: standardised SVD (top dim); per pair dim^2 n and a dim x dim SVD",
        (REFERENCE_LOOP, Peer(ARISTOTELIAN, "SVCCA", "top-10 principal directions of centred, not standardised, "
                              "features; float32"))),
    "rsa": MetricDoc(
        "compare(triu(RDM_A), triu(RDM_B)); RDM: 1 - Pearson r (correlation), 1 - cosine, or Euclidean distance; "
        "compare: Spearman, Pearson, cosine or Kendall tau-a = (concordant - discordant) / (m (m - 1) / 2)",
        "[-1, 1]", RSA_COST,
        (Peer("rsatoolbox", "rdm.compare(method='spearman' | 'corr' | 'cosine' | 'tau-a') on calc_rdm('correlation')",
              "its 'euclidean' RDM is the squared distance / d: equal under Spearman and tau-a, not under Pearson or "
              "cosine"),
         Peer("scipy", "pdist + spearmanr / pearsonr / kendalltau", "kendalltau is tau-b (tie-corrected)"),
         Peer(ARISTOTELIAN, "RSA", "Euclidean RDMs compared by Spearman (prh rdm=euclidean); float32"))),
    "procrustes": MetricDoc(
        "||Xc' Yc||_* / (||Xc||_F ||Yc||_F) = 1 - (1/2) min_Q ||Xc/|Xc| - Yc/|Yc| Q||_F^2 over orthogonal Q; the "
        "angular Procrustes distance is arccos of it", "[0, 1]", SVD_COST,
        (Peer("netrep (ahwillia/netrep; not on PyPI)", "LinearMetric(alpha=1, score_method='angular')",
              "reports the angle: prh = cos(angle)"),
         Peer(ARISTOTELIAN, "Procrustes", "another quantity: 1 - ||Xc Q - Yc||_F / ||Yc||_F of unnormalised "
              "features"))),
    "shape_metric": MetricDoc(
        "cos of netrep's angle: ||M||_* / (||t_x|| ||t_y||), M = diag(t_x) U_x' U_y diag(t_y), t = alpha s + "
        "(1 - alpha): the partial whitening Xc (alpha I + (1 - alpha) (Xc'Xc)^(-1/2)); alpha = 1 Procrustes, alpha = "
        "0 sum of canonical correlations / sqrt(r_x r_y)", "[0, 1]", SVD_COST + "." + UNIT_COST,
        (Peer("netrep (ahwillia/netrep; not on PyPI)", "LinearMetric(alpha, score_method='angular')", "angle, not its cosine; whitening clamps "
              "eigenvalues at 1e-7 where prh drops float32-rank-zero directions"),)),
    "cca": MetricDoc(
        "mean of the min(r_x, r_y) canonical correlations of Xc and Yc (singular values of U_x' U_y); where either "
        "width is >= n both covariances Xc'Xc / (n - 1) get + reg I", "[0, 1]", SVD_COST + "." + UNIT_COST,
        (Peer(ARISTOTELIAN, "cca_mean", "always adds reg = 1e-6 and averages over min(d_x, d_y) correlations"),
         Peer("scikit-learn", "cross_decomposition.CCA", "iterative (NIPALS), a few components; not compared"))),
    "pwcca": MetricDoc(
        "sum_i alpha_i rho_i / sum_i alpha_i, alpha_i = sum_j |<h_i, x_j>| (h_i the i-th canonical variate of X = "
        "model_x, x_j its j-th centred column; Morcos et al. 2018)", "[0, 1]", SVD_COST + "; plus d r^2 per pair",
        (Peer(ARISTOTELIAN, "pwcca_mean", "weights by the sample L1 norm of the canonical variates, ||h_i||_1"),
         Peer("google/svcca", "pwcca.compute_pwcca", "not on PyPI; Morcos' own definition"))),
    "rv_coefficient": MetricDoc(
        "tr(Xc Xc' Yc Yc') / sqrt(tr((Xc Xc')^2) tr((Yc Yc')^2)) = linear CKA (the adjusted RV of Smilde et al. 2009 "
        "is another estimator)", "[0, 1]", KERNEL_COST,
        (Peer(ARISTOTELIAN, "rv_coefficient", "epsilon 1e-8 in the denominator"),)),
    "distance_correlation": MetricDoc(
        "sqrt(dCov^2(X, Y) / sqrt(dVar^2(X) dVar^2(Y))), dCov^2 = mean(A o B) of the double-centred Euclidean "
        "distance matrices (V-statistic)", "[0, 1]",
        "per layer: distances n^2 d and double centring; per pair one inner product of length n^2 / 2. Memory: "
        "12 n^2 bytes per layer",
        (Peer("dcor", "distance_correlation", "the same V-statistic; its u_distance_correlation_sqr is the "
              "bias-corrected U-statistic"),)),
    "linear_predictivity": MetricDoc(
        "1 - sum_j SSE_j / sum_j SST_j of model_y's columns predicted out of fold by ridge from model_x (folds "
        "seeded; alpha per fold by GCV from ridge_alphas)", "(-inf, 1]",
        "per layer: the centred Gram n^2 d; as predictor, per fold one Cholesky (one alpha) or eigendecomposition of "
        "the centred training Gram, n^3, and per alpha its smoother's n^3 products; per pair folds x alphas x n^2 "
        "(one product of flattened Gram blocks for all pairs; B enters through its Gram only). Memory: "
        "8 (3 n^2 + 5 n min(n, d)) bytes per layer",
        (Peer("scikit-learn", "RidgeCV in cross_val_predict + r2_score(multioutput='variance_weighted')",
              "RidgeCV chooses alpha by exact leave-one-out, prh by GCV; with one alpha (Ridge) they agree"),
         Peer("Brain-Score", "linear / ridge regression metrics", "Pearson r per neuroid, median; not compared"))),
}
