"""Colour from co-occurrence (the paper's Fig. 8): distances between colours from pixel co-occurrence in images and
from language models' embeddings of colour names, each compared with perceptual distances in CIELAB.

- Pixels: every pixel's sRGB value falls in one of ``levels``^3 cells of a uniform RGB grid (binned in device RGB,
  not CIELAB, so the perceptual metric is not built into the pixel side). Two cells co-occur when a pixel of one and
  a pixel of the other lie at most ``radius`` pixels apart (Chebyshev distance, ``radius`` >= 1; pairs counted in
  both orders). PMI(a, b) = log p(a, b) - log p(a) - log p(b) on counts with one pseudo-count per cell pair, and the
  distance is max off-diagonal PMI - PMI (zero on the diagonal): monotone in -PMI.
- Colours compared: one XKCD name per grid cell that holds at least ``min_share`` of all pixels and at least one
  XKCD colour: the name nearest (CIELAB, CIE76) to the cell's centre. Each colour then has a name (for the language
  models), a cell (for PMI) and its own sRGB value (for CIELAB).
- Language: cosine distance between a language model's pooled features of the names at one fixed layer
  (``middle``: stored layer L // 2 of L, ``last``, or an index), stated in advance, so no maximum over layers needs
  its own null; every layer's rho is kept for inspection only.
- Statistic: Spearman rho between the condensed (upper-triangle) distance matrices, the representational-similarity
  statistic; the paper's Fig. 8 shows the three layouts and prints no statistic. Its p-value is a one-sided Mantel
  test of that same rho: rows and columns of one matrix permuted jointly, p = (1 + #{rho_perm >= rho}) / (1 + K).
- Layout: metric MDS of each distance matrix (scikit-learn, classical-MDS start), rotated / reflected / scaled onto
  the CIELAB layout by orthogonal Procrustes for display only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.distance import cdist, pdist, squareform
from scipy.stats import rankdata

if TYPE_CHECKING:
    import pandas as pd


# -- pixels ----------------------------------------------------------------------------------------
def rgb_cells(images: np.ndarray, levels: int) -> np.ndarray:
    """(n, H, W) int64 cell index r * levels^2 + g * levels + b of each pixel of (n, H, W, 3) uint8 images."""
    q = images.astype(np.int64) * levels // 256
    return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]


def cell_centres(levels: int) -> np.ndarray:
    """(levels^3, 3) float64 sRGB (0-255) centre of every RGB grid cell, in cell-index order."""
    centre = (np.arange(levels) + 0.5) * 256 / levels
    r, g, b = np.meshgrid(centre, centre, centre, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)


def window_offsets(radius: int) -> list[tuple[int, int]]:
    """(dy, dx) offsets of one half of the (2 radius + 1)^2 window without its centre: each pixel pair once."""
    return [(dy, dx) for dy in range(radius + 1) for dx in range(-radius, radius + 1) if dy > 0 or dx > 0]


def cooccurrence(cells: np.ndarray, n_cells: int, radius: int) -> np.ndarray:
    """(C, C) float64 symmetric counts of pixel pairs at Chebyshev distance 1..radius, by the cells of the two pixels
    (every unordered pair counted once in each order), over (n, H, W) cell indices."""
    _, h, w = cells.shape
    counts = np.zeros(n_cells * n_cells, dtype=np.int64)
    for dy, dx in window_offsets(radius):
        x0, x1 = max(0, -dx), w - max(0, dx)  # pixel (y, x) pairs with (y + dy, x + dx)
        a, b = cells[:, : h - dy, x0:x1], cells[:, dy:, x0 + dx : x1 + dx]
        counts += np.bincount((a * n_cells + b).ravel(), minlength=n_cells * n_cells)
    square = counts.reshape(n_cells, n_cells).astype(np.float64)
    return square + square.T


def pmi(counts: np.ndarray, pseudo: float = 1.0) -> np.ndarray:
    """(C, C) pointwise mutual information log p(a, b) / (p(a) p(b)) of symmetric pair counts plus a pseudo-count."""
    joint = (counts + pseudo) / (counts + pseudo).sum()
    marginal = joint.sum(axis=1)
    return np.log(joint) - np.log(marginal)[:, None] - np.log(marginal)[None, :]


def pmi_distance(values: np.ndarray) -> np.ndarray:
    """(m, m) distance max off-diagonal PMI - PMI, zero on the diagonal, of an (m, m) PMI matrix."""
    off = ~np.eye(len(values), dtype=bool)
    out = values[off].max() - values
    np.fill_diagonal(out, 0.0)
    return out


# -- colours ---------------------------------------------------------------------------------------
def cielab(rgb: np.ndarray) -> np.ndarray:
    """(m, 3) CIELAB (D65) coordinates of (m, 3) sRGB values in 0-255."""
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb, dtype=np.float64).reshape(-1, 1, 3) / 255.0).reshape(-1, 3)


def lab_distance(rgb: np.ndarray) -> np.ndarray:
    """(m, m) CIE76 colour difference (Euclidean distance in CIELAB) between (m, 3) sRGB colours."""
    return squareform(pdist(cielab(rgb)))


def cosine_distance(features: np.ndarray) -> np.ndarray:
    """(m, m) cosine distance 1 - cos between the rows of (m, d) features."""
    return squareform(pdist(np.asarray(features, dtype=np.float64), metric="cosine"), checks=False)


def pick_colours(rgb: np.ndarray, cell_pixels: np.ndarray, levels: int, min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices into rgb, their cells): for each grid cell holding >= min_share of all pixels and at least one of the
    (n, 3) sRGB colours, the colour nearest in CIELAB to the cell centre (ties: lowest index); ordered by cell."""
    cells = rgb_cells(np.asarray(rgb, dtype=np.uint8)[None, :, None, :], levels)[0, :, 0]
    lab, centres = cielab(rgb), cielab(cell_centres(levels))
    populated = np.flatnonzero(cell_pixels >= min_share * cell_pixels.sum())
    chosen, kept = [], []
    for cell in populated:
        members = np.flatnonzero(cells == cell)
        if members.size:
            chosen.append(members[np.argmin(cdist(centres[cell][None], lab[members])[0])])
            kept.append(cell)
    return np.array(chosen, dtype=np.int64), np.array(kept, dtype=np.int64)


def stored_layer(rule: str | int, n_layers: int) -> int:
    """The stored layer index a layer rule names: 'middle' -> n_layers // 2, 'last' -> n_layers - 1, or an index."""
    if rule == "middle":
        return n_layers // 2
    if rule == "last":
        return n_layers - 1
    return int(rule) % n_layers


# -- statistics ------------------------------------------------------------------------------------
def spearman_condensed(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho between the upper triangles (i < j) of two (m, m) symmetric distance matrices."""
    return float(np.corrcoef(rankdata(squareform(a, checks=False)), rankdata(squareform(b, checks=False)))[0, 1])


def mantel(a: np.ndarray, b: np.ndarray, permutations: int, seed: int) -> tuple[float, float, np.ndarray]:
    """(rho, one-sided p, (K,) null rhos): Spearman rho of the condensed matrices and its Mantel p-value, rows and
    columns of ``a`` permuted jointly K times (permutation k from ``default_rng(seed)``, drawn in order)."""
    m = len(a)
    iu = np.triu_indices(m, 1)
    rank_a = np.zeros((m, m))
    rank_a[iu] = rankdata(a[iu])
    rank_a = rank_a + rank_a.T  # ranks of a permuted jointly = the permuted rank matrix (ties keep their mid-rank)
    rank_b = rankdata(b[iu])
    rank_b = (rank_b - rank_b.mean()) / np.linalg.norm(rank_b - rank_b.mean())
    rng = np.random.default_rng(seed)

    def rho(perm: np.ndarray) -> float:
        x = rank_a[perm][:, perm][iu]
        x = x - x.mean()
        return float(x @ rank_b / np.linalg.norm(x))

    observed = rho(np.arange(m))
    null = np.array([rho(rng.permutation(m)) for _ in range(permutations)])
    return observed, float((1 + np.sum(null >= observed)) / (1 + permutations)), null


# -- layouts ---------------------------------------------------------------------------------------
def mds_layout(distance: np.ndarray, seed: int) -> np.ndarray:
    """(m, 2) metric MDS coordinates of an (m, m) distance matrix (SMACOF from the classical-MDS solution)."""
    from sklearn.manifold import MDS

    mds = MDS(n_components=2, metric="precomputed", init="classical_mds", n_init=1, random_state=seed)
    return mds.fit_transform(distance)


def procrustes_onto(xy: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(m, 2) xy rotated / reflected and scaled onto the centred reference by least squares (orthogonal Procrustes)."""
    from scipy.linalg import orthogonal_procrustes

    x, ref = xy - xy.mean(axis=0), reference - reference.mean(axis=0)
    rotation, scale = orthogonal_procrustes(x, ref)
    return x @ rotation * (scale / np.sum(x**2))


# -- the experiment --------------------------------------------------------------------------------
def pixel_statistics(image_sets: list[np.ndarray], levels: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """((C, C) co-occurrence counts, (C,) pixels per cell) summed over image arrays of (n, H, W, 3) uint8."""
    n_cells = levels**3
    counts, pixels = np.zeros((n_cells, n_cells)), np.zeros(n_cells)
    for images in image_sets:
        cells = rgb_cells(images, levels)
        counts += cooccurrence(cells, n_cells, radius)
        pixels += np.bincount(cells.ravel(), minlength=n_cells)
    return counts, pixels


def compare(distance: np.ndarray, reference: np.ndarray, permutations: int, seed: int) -> dict:
    """Spearman rho of a distance matrix with the reference and its Mantel p-value, as table columns."""
    rho, p, _ = mantel(distance, reference, permutations, seed)
    return {"statistic": "spearman", "rho": rho, "p_value": p, "permutations": permutations}


def colour_tables(names: list[str], rgb: np.ndarray, image_sets: list[np.ndarray], features: dict[str, list[np.ndarray]],
                  layer_names: dict[str, list[str]], params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(alignment, layout) tables of the colour experiment: one alignment row per source (pixels; plain sRGB distance
    as a baseline, how much of CIELAB any RGB-local measure gets for free; every layer of every language model, its
    fixed layer with a Mantel p-value), and each compared source's 2-D layout of the chosen colours.

    names, rgb: the (n,) colour names and (n, 3) sRGB values; features: model -> its layers, each (n, d);
    params: levels, radius, min_share, layer, permutations, seed."""
    import pandas as pd

    levels, radius, seed, k = params["levels"], params["radius"], params["seed"], params["permutations"]
    counts, pixels = pixel_statistics(image_sets, levels, radius)
    idx, cells = pick_colours(rgb, pixels, levels, params["min_share"])
    reference = lab_distance(rgb[idx])
    common = {"n_colours": len(idx), "levels": levels, "radius": radius, "min_share": params["min_share"]}
    distances = {"cielab": reference, "pixels": pmi_distance(pmi(counts)[np.ix_(cells, cells)])}
    rows = [{"source": "pixels", "kind": "pixels", "layer": "", "layer_index": -1, "chosen": True,
             **compare(distances["pixels"], reference, k, seed), **common},
            {"source": "srgb", "kind": "baseline", "layer": "", "layer_index": -1, "chosen": True,
             **compare(squareform(pdist(rgb[idx].astype(np.float64))), reference, k, seed), **common}]
    for model, layers in features.items():
        chosen = stored_layer(params["layer"], len(layers))
        for i, layer in enumerate(layers):
            d = cosine_distance(layer[idx])
            stats = compare(d, reference, k, seed) if i == chosen else {
                "statistic": "spearman", "rho": spearman_condensed(d, reference), "p_value": np.nan, "permutations": 0}
            rows.append({"source": model, "kind": "language", "layer": layer_names[model][i], "layer_index": i,
                         "chosen": i == chosen, **stats, **common})
            if i == chosen:
                distances[model] = d
    hexes = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb[idx]]
    base = mds_layout(reference, seed)
    layout = []
    for source, d in distances.items():
        xy = base if source == "cielab" else procrustes_onto(mds_layout(d, seed), base)
        layout.append(pd.DataFrame({"source": source, "name": [names[i] for i in idx], "hex": hexes, "cell": cells,
                                    "pixel_share": pixels[cells] / pixels.sum(), "x": xy[:, 0], "y": xy[:, 1]}))
    return pd.DataFrame(rows), pd.concat(layout, ignore_index=True)
