"""One model's per-layer work shared across metrics: Gram and RBF kernels, neighbour lists, and any other per-layer object a
kernel module memoises under its own key (lazy, memoised). Imports only the kernel building blocks, so every metric
module may import it (one-way)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from prh.metrics._inputs import as_layers
from prh.metrics.kernels import indicator, linear_kernel, neighbours, rbf_from_gram


class KernelCache:
    """Prepared (n, d_l) float32 layers of one model; each per-layer object is computed once, on first use."""

    def __init__(self, layers: list[np.ndarray]) -> None:
        """Wrap already-validated float32 layers (use :func:`prepare_kernels` for raw input)."""
        self.layers: tuple[np.ndarray, ...] = tuple(layers)
        self.n: int = layers[0].shape[0]
        self.dims: tuple[int, ...] = tuple(x.shape[1] for x in layers)
        self._memo: dict[tuple[Any, ...], np.ndarray] = {}

    def __len__(self) -> int:
        """Number of layers."""
        return len(self.layers)

    def __repr__(self) -> str:
        """Short description (layer count, samples, cached objects)."""
        return f"KernelCache(layers={len(self)}, n={self.n}, cached={len(self._memo)})"

    def memo(self, key: tuple[Any, ...], make: Callable[[], np.ndarray]) -> np.ndarray:
        """The per-layer object named ``key``, made by ``make()`` on first use and kept read-only."""
        if key not in self._memo:
            value = make()
            value.flags.writeable = False
            self._memo[key] = value
        return self._memo[key]

    def grams(self) -> np.ndarray:
        """(L, n, n) float32 Gram matrices of all layers, one buffer (metrics share it as their stacked state)."""
        return self.memo(("grams",), lambda: self._stacked(lambda i, out: linear_kernel(self.layers[i], out)))

    def gram(self, i: int) -> np.ndarray:
        """(n, n) float32 Gram matrix of layer i (a view of :meth:`grams`)."""
        return self.memo(("gram", i), lambda: self.grams()[i])

    def rbfs(self, sigma: float) -> np.ndarray:
        """(L, n, n) float32 RBF kernels of all layers (from their Gram matrices), one buffer.

        Without cached Gram matrices each layer's Gram is formed in its own slice and turned into the RBF kernel in
        place (same values; no second (L, n, n) buffer to allocate and fault in).
        """
        have_grams = ("grams",) in self._memo

        def fill(i: int, out: np.ndarray) -> np.ndarray:
            gram = self.gram(i) if have_grams else linear_kernel(self.layers[i], out)
            return rbf_from_gram(gram, sigma, out)

        return self.memo(("rbfs", sigma), lambda: self._stacked(fill))

    def rbf(self, i: int, sigma: float) -> np.ndarray:
        """(n, n) float32 RBF kernel of layer i (a view of :meth:`rbfs`)."""
        return self.memo(("rbf", i, sigma), lambda: self.rbfs(sigma)[i])

    def _stacked(self, fill: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
        """(L, n, n) float32 buffer whose slice i is written by ``fill(i, out)``."""
        out = np.empty((len(self), self.n, self.n), dtype=np.float32)
        for i in range(len(self)):
            fill(i, out[i])
        return out

    def neighbours(self, i: int, k: int) -> np.ndarray:
        """(n, k) int64 ordered neighbour lists of layer i (spec tie rule)."""
        return self.memo(("nbrs", i, k), lambda: neighbours(self.gram(i), k))

    def indicator(self, i: int, k: int) -> np.ndarray:
        """(n, n) bool kNN indicator of layer i."""
        return self.memo(("ind", i, k), lambda: indicator(self.neighbours(i, k), self.n))

    def clear(self) -> None:
        """Drop every cached object (frees memory; the layers stay)."""
        self._memo.clear()


def stacked(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-layer states -> one state whose arrays are stacked over layers (axis 0)."""
    return {key: np.stack([s[key] for s in states]) for key in states[0]}


def one_layer(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A single layer's state as a stack of one layer (views)."""
    return {key: v[None] for key, v in state.items()}


def prepare_kernels(layers: Any) -> KernelCache:
    """One model's prepared layers (sequence of (n, d_l) arrays or (L, n, d)) -> KernelCache shared across metrics."""
    if isinstance(layers, KernelCache):
        return layers
    return KernelCache(as_layers(layers, "layers"))


def padded_stack(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-layer states whose arrays differ in size (a rank per layer) -> one stacked state, zero-padded to the largest."""
    out = {}
    for key in states[0]:
        arrays = [s[key] for s in states]
        shape = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
        buf = np.zeros((len(arrays), *shape), dtype=np.result_type(*arrays))
        for j, a in enumerate(arrays):
            buf[(j, *(slice(0, m) for m in a.shape))] = a
        out[key] = buf
    return out
