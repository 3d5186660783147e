"""Model zoo: small timm vision models trained offline on Fashion-MNIST, cached by recipe hash."""

from prh.zoo.vision import (
    DEFAULT_VISION_ZOO,
    ZOO_CODE_VERSION,
    ensure_trained,
    normalise_recipe,
    recipe_hash,
    train_vision,
)

__all__ = ["DEFAULT_VISION_ZOO", "ZOO_CODE_VERSION", "ensure_trained", "normalise_recipe", "recipe_hash", "train_vision"]
