"""Argument helpers shared by the domain modules."""

from __future__ import annotations

import argparse
from typing import List


def _floats(text: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> List[int]:
    return [int(v) for v in _floats(text)]
