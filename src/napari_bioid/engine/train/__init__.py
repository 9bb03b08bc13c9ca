"""Shared training pieces: optimiser/schedule and self-describing checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .optim import make_adamw_onecycle, pick_device, seed_everything, training_layout

__all__ = ["load_checkpoint", "make_adamw_onecycle", "pick_device", "save_checkpoint", "seed_everything", "training_layout"]
