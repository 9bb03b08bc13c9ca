"""Network building blocks written in torch (no torchvision)."""

from .losses import soft_dice_loss
from .unet3d import CoordConv3d, ResBlock3d, ResUNet3d, coord_channels

__all__ = ["CoordConv3d", "ResBlock3d", "ResUNet3d", "coord_channels", "soft_dice_loss"]
