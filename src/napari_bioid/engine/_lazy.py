"""Lazy package attributes (PEP 562), so that importing a light submodule does not import torch."""

from __future__ import annotations

import importlib
from typing import Callable, Dict


def lazy_getattr(package: str, where: Dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``name`` from ``package.<where[name]>`` on first use and caches it."""

    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(f".{where[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
