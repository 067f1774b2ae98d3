"""liquidator: flatten Clear Street positions, each closed exactly once."""

__version__ = "0.1.0"
