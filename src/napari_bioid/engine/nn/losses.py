"""Segmentation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, include_background: bool = False) -> torch.Tensor:
    """Soft Dice loss over softmax probabilities, averaged over classes.

    Parameters
    ----------
    logits : (B, C, ...) float tensor
        C = background + K classes.
    target : (B, ...) int64 tensor
        Class index per voxel, 0 = background.
    smooth : float
        Added to numerator and denominator (default 1, METHODS.md §1).
    include_background : bool
        Count the background channel too (default: excluded).

    Returns
    -------
    Scalar tensor ``1 - mean_c (2 Σ p_c t_c + s) / (Σ p_c + Σ t_c + s)``, with
    the sums over the whole batch (Milletari et al., V-Net, 3DV 2016).
    """
    probs = torch.softmax(logits, dim=1)
    n_classes = logits.shape[1]
    onehot = F.one_hot(target.long(), n_classes).movedim(-1, 1).to(probs.dtype)
    dims = (0,) + tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    if not include_background:
        dice = dice[1:]
    return 1.0 - dice.mean()
