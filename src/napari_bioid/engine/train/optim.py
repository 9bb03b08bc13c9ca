"""Optimiser, schedule, seeding and device choice."""

from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch


def make_adamw_onecycle(model: torch.nn.Module, lr: float, total_steps: int, weight_decay: float = 0.01):
    """AdamW with a one-cycle learning-rate schedule (Smith & Topin 2019).

    ``lr`` is the peak rate (METHODS.md §1: 5e-4 to 1e-3), reached after 30 %
    of ``total_steps`` optimiser steps. Returns ``(optimizer, scheduler)``;
    call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(2, int(total_steps)), pct_start=0.3)
    return opt, sched


def seed_everything(seed: Optional[int]) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy generator for the caller."""
    if seed is not None:
        random.seed(seed)
        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def pick_device(device: Optional[str] = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
