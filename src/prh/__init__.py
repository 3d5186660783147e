"""prh: measure whether neural networks converge to a shared representation of the world."""

__version__ = "0.1.0"
