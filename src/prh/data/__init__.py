"""Datasets: real images and text from offline packages, generated image-caption scenes, and hub loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Modality = Literal["image", "text"]


@dataclass(frozen=True)
class Dataset:
    """A materialised dataset; row i of every field describes the same input i."""

    name: str
    images: np.ndarray | None  # (n, H, W, 3) uint8 RGB
    texts: list[str] | None  # n strings
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n,) int64
    is_train: np.ndarray | None = None  # (n,) bool probe split
    image_digest: str | None = None  # sha256 hex of the image bytes and shape
    text_digest: str | None = None  # sha256 hex of the utf-8 texts
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of samples."""
        if self.images is not None:
            return int(self.images.shape[0])
        return len(self.texts or [])

    def digest(self, modality: Modality) -> str:
        """Content digest of the part of the dataset a model of that modality reads."""
        d = self.image_digest if modality == "image" else self.text_digest
        if d is None:
            from prh.errors import PrhError

            raise PrhError(f"dataset {self.name!r} has no {modality} data")
        return d
