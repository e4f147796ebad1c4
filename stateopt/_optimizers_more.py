"""Optimizers from papers and optax, and the newer ones: each is its hyper-parameters and its algorithm."""

from __future__ import annotations

__all__: list[str] = []
