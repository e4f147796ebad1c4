"""The catalogue's torch-named adaptive optimizers: each is its hyper-parameters and its algorithm."""

from __future__ import annotations

__all__: list[str] = []
