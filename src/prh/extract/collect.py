"""Pooled batch outputs gathered into per-layer host arrays without stalling the device.

A blocking ``.cpu()`` per layer and batch makes the host wait for the device, and the device then idles while the
host prepares the next batch. On CUDA each batch's pooled layers are instead concatenated on the device and copied
once, without blocking, into pinned host memory; the host arrays are filled when ``flush_bytes`` of copies are
pending and at the end. On the CPU the rows are written straight into the host arrays (no extra copy).
"""

from __future__ import annotations

import numpy as np
import torch

from prh.errors import PrhError

Rows = slice | list[int] | np.ndarray


class PooledRows:
    """Per-layer (n, d_l) float32 host arrays filled batch by batch from (B, d_l) pooled device tensors."""

    def __init__(self, n: int, device: str | torch.device, label: str, flush_bytes: int = 256 * 2**20,
                 deferred: bool | None = None) -> None:  # fmt: skip
        """``deferred``: queue copies and fill the arrays at flushes (default: on CUDA only)."""
        self.n, self.label, self.flush_bytes = n, label, flush_bytes
        self.layers: list[np.ndarray] = []
        self._device = torch.device(device)
        self._cuda = self._device.type == "cuda"
        self._deferred = self._cuda if deferred is None else deferred
        self._pending: list[tuple[Rows, torch.Tensor]] = []
        self._pending_bytes = 0

    def add(self, rows: Rows, pooled: list[torch.Tensor]) -> None:
        """One batch: dataset ``rows`` and its per-layer (B, d_l) pooled tensors (any float dtype, any device)."""
        widths = [int(p.shape[1]) for p in pooled]
        if not self.layers:
            self.layers = [np.empty((self.n, d), dtype=np.float32) for d in widths]
        elif widths != [a.shape[1] for a in self.layers]:
            raise PrhError(f"{self.label}: layer widths changed between batches ({[a.shape[1] for a in self.layers]} -> {widths})")
        if not self._deferred:
            for dst, p in zip(self.layers, pooled):
                dst[rows] = p.float().cpu().numpy()
            return
        flat = torch.cat([p.float() for p in pooled], dim=1)
        host = torch.empty(flat.shape, dtype=torch.float32, pin_memory=self._cuda)
        host.copy_(flat, non_blocking=True)
        self._pending.append((rows, host))
        self._pending_bytes += host.numel() * host.element_size()
        if self._pending_bytes >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Wait for the pending copies and write them into the host arrays."""
        if not self._pending:
            return
        if self._cuda:
            torch.cuda.synchronize(self._device)
        bounds = np.cumsum([0] + [a.shape[1] for a in self.layers])
        for rows, host in self._pending:
            flat = host.numpy()
            for dst, lo, hi in zip(self.layers, bounds[:-1], bounds[1:]):
                dst[rows] = flat[:, lo:hi]
        self._pending, self._pending_bytes = [], 0

    def result(self) -> list[np.ndarray]:
        """The filled per-layer arrays (after the last batch)."""
        self.flush()
        return self.layers
