"""Training objectives for the vision zoo: supervised, SimCLR, masked and denoising reconstruction.

Each objective is an `nn.Module` holding its own heads (projection MLP, pixel decoder), which are
discarded at save time: only the timm backbone (and its classifier, for supervised) is kept.
Inputs are normalised image batches (B, 3, S, S).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASK_PATCH = 4  # side of the square pixel patches masked by the "mae" objective
MASK_RATIO = 0.6
NOISE_STD = 0.6  # in normalised units (the data has unit std)
TEMPERATURE = 0.2


def pooled(model: nn.Module, x: Tensor) -> Tensor:
    """Pre-logits pooled features (B, D) of a timm model (CLS token for ViTs, average pool otherwise)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def token_grid(model: nn.Module, feats: Tensor) -> Tensor:
    """Final feature map as row-major spatial tokens (B, L, D): NCHW maps flattened, prefix tokens dropped."""
    if feats.ndim == 4:
        return feats.flatten(2).transpose(1, 2)
    return feats[:, int(getattr(model, "num_prefix_tokens", 0)) :]


def fold_patches(tokens: Tensor, side: int, patch: int) -> Tensor:
    """(B, side*side, 3*patch*patch) per-token pixels -> image (B, 3, side*patch, side*patch)."""
    b = tokens.shape[0]
    x = tokens.reshape(b, side, side, 3, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, 3, side * patch, side * patch)


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """SimCLR view: random resized crop (scale 0.35-1), horizontal flip, contrast/brightness jitter, noise."""
    b = x.shape[0]
    u = torch.rand(b, 6, generator=gen)
    scale = torch.sqrt(0.35 + 0.65 * u[:, 0])  # side fraction of the crop
    flip = torch.where(u[:, 1] < 0.5, -1.0, 1.0)
    tx, ty = (2 * u[:, 2] - 1) * (1 - scale), (2 * u[:, 3] - 1) * (1 - scale)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = scale * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = scale, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = (0.6 + 0.8 * u[:, 4]).view(b, 1, 1, 1)
    brightness = (u[:, 5] - 0.5).view(b, 1, 1, 1)
    return out * contrast + brightness + 0.1 * torch.randn(out.shape, generator=gen)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """NT-Xent (SimCLR) loss of two batches of projections (B, K); positives are the same row."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, targets)


def patch_mask(b: int, size: int, gen: torch.Generator, ratio: float = MASK_RATIO) -> Tensor:
    """Random mask (B, 1, size, size) of 1s over `ratio` of the MASK_PATCH x MASK_PATCH patches."""
    g = size // MASK_PATCH
    keys = torch.rand(b, g * g, generator=gen)
    n_masked = int(round(ratio * g * g))
    idx = keys.argsort(dim=1)[:, :n_masked]
    m = torch.zeros(b, g * g).scatter_(1, idx, 1.0).view(b, 1, g, g)
    return F.interpolate(m, scale_factor=MASK_PATCH, mode="nearest")


class Objective(nn.Module):
    """A training objective: `loss(model, x, y, gen)`; `evaluate` gives its held-out metric."""

    metric = "eval_loss"  # name of the held-out metric; lower is better unless it is an accuracy

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        """Scalar training loss on a batch."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 250, seed: int = 12345) -> float:
        """Held-out metric: mean loss over fixed batches with a fixed corruption seed (model in eval mode)."""
        gen = torch.Generator().manual_seed(seed)
        total, n = 0.0, 0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            total += float(self.loss(model, xb, yb, gen)) * len(xb)
            n += len(xb)
        return total / max(n, 1)


class Supervised(Objective):
    """Cross-entropy on the class label; held-out metric is accuracy."""

    metric = "eval_accuracy"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        """Cross-entropy of the timm classifier's logits."""
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 250, seed: int = 12345) -> float:
        """Top-1 accuracy of the classifier."""
        correct = sum(int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum()) for i in range(0, len(x), batch_size))
        return correct / max(len(x), 1)


class MultiTask(Objective):
    """One linear head per task on the pooled features, the mean of their cross-entropies; held-out metric is the
    mean accuracy over tasks. Labels are (B, T), one column per task."""

    metric = "eval_accuracy"

    def __init__(self, dim: int, classes: list[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(dim, c) for c in classes)

    def logits(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        """Each task head's logits on the pooled features."""
        z = pooled(model, x)
        return [head(z) for head in self.heads]

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        """Mean cross-entropy over the tasks."""
        return torch.stack([F.cross_entropy(lg, y[:, t]) for t, lg in enumerate(self.logits(model, x))]).mean()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 250, seed: int = 12345) -> float:
        """Top-1 accuracy averaged over tasks."""
        correct = torch.zeros(len(self.heads))
        for i in range(0, len(x), batch_size):
            for t, lg in enumerate(self.logits(model, x[i : i + batch_size])):
                correct[t] += float((lg.argmax(1) == y[i : i + batch_size, t]).sum())
        return float(correct.mean()) / max(len(x), 1)


class SimCLR(Objective):
    """NT-Xent between two augmented views' pooled features through a 2-layer projection MLP."""

    def __init__(self, dim: int, proj_dim: int = 64) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, proj_dim))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        """Contrastive loss of two views of `x`, encoded in one batch."""
        views = torch.cat([augment(x, gen), augment(x, gen)])
        z = self.proj(pooled(model, views))
        return nt_xent(*z.chunk(2))


class Reconstruction(Objective):
    """Reconstruct clean pixels from the final feature grid with a per-token linear decoder.

    `corruption="mask"`: zero (= dataset mean) 60% of 4x4 patches, loss on masked pixels (MAE/SimMIM-style).
    `corruption="noise"`: add Gaussian noise, loss on all pixels (denoising autoencoder).
    A CNN whose final map is 1x1 decodes the whole image from its pooled vector.
    """

    def __init__(self, dim: int, side: int, image_size: int, corruption: str) -> None:
        super().__init__()
        if image_size % side:
            raise ValueError(f"feature grid {side} does not divide image size {image_size}")
        self.side, self.patch, self.corruption = side, image_size // side, corruption
        self.decoder = nn.Linear(dim, 3 * self.patch * self.patch)

    def reconstruct(self, model: nn.Module, x: Tensor) -> Tensor:
        """Decoded image (B, 3, S, S) from the model's final features."""
        tokens = token_grid(model, model.forward_features(x))
        return fold_patches(self.decoder(tokens), self.side, self.patch)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        """Mean squared error on the corrupted (mask) or all (noise) pixels."""
        if self.corruption == "mask":
            m = patch_mask(x.shape[0], x.shape[-1], gen)
            err = (self.reconstruct(model, x * (1 - m)) - x) ** 2
            return (err * m).sum() / (m.sum() * 3).clamp_min(1.0)
        noisy = x + NOISE_STD * torch.randn(x.shape, generator=gen)
        return F.mse_loss(self.reconstruct(model, noisy), x)


@torch.no_grad()
def feature_shape(model: nn.Module, image_size: int) -> tuple[int, int, int]:
    """(token dim, grid side, pooled dim) of a model's final features on one blank image."""
    was_training = model.training
    model.eval()
    feats = model.forward_features(torch.zeros(1, 3, image_size, image_size))
    tokens, pooled_dim = token_grid(model, feats), model.forward_head(feats, pre_logits=True).shape[-1]
    model.train(was_training)
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ValueError(f"final feature map has {tokens.shape[1]} tokens, not a square grid")
    return int(tokens.shape[2]), side, int(pooled_dim)


def make_objective(kind: str, model: nn.Module, image_size: int, classes: list[int] | None = None) -> Objective:
    """Objective module for `kind` in supervised | multitask (``classes``: per task) | simclr | mae | denoise."""
    if kind == "supervised":
        return Supervised()
    dim, side, pooled_dim = feature_shape(model, image_size)
    if kind == "multitask":
        if not classes:
            raise ValueError("objective multitask needs the number of classes of each task")
        return MultiTask(pooled_dim, classes)
    if kind == "simclr":
        return SimCLR(pooled_dim)
    if kind in ("mae", "denoise"):
        return Reconstruction(dim, side, image_size, "mask" if kind == "mae" else "noise")
    raise ValueError(f"unknown objective {kind!r}")
