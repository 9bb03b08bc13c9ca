"""Picker configuration: everything a saved picking model needs to be used.

Defaults follow ``METHODS.md`` section 1 (DeepETPicker, Liu et al. 2024).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..errors import BioidInputError
from ..io.atomic import PathLike
from ..nn.unet3d import ResUNet3d
from ..train.checkpoint import load_checkpoint, save_checkpoint

MODEL_KIND = "napari-bioid/tomo-picker"
DEFAULT_MODEL_NAME = "tomo_picker_default.pt"


def default_model_path() -> Path:
    """Path of the picking model shipped in the package.

    Raises
    ------
    BioidInputError
        No default model is installed (pass a model file instead).
    """
    path = Path(__file__).resolve().parents[2] / "models" / DEFAULT_MODEL_NAME
    if not path.is_file():
        raise BioidInputError(f"no default picking model is installed ({path}); pass --model / a model file")
    return path
LABEL_SHAPES = ("sphere", "gaussian", "cube")


@dataclass
class ParticleClass:
    """One particle class.

    Attributes
    ----------
    class_id : int
        1..K.
    name : str
    diameter : float
        Particle diameter d in voxels (point size in the viewer; radius for
        pruning and evaluation tolerances).
    label_radius : int or None
        Weak-label radius r in voxels; default from d = 2r + 1.
    """

    class_id: int
    name: str
    diameter: float
    label_radius: Optional[int] = None

    def __post_init__(self):
        if not self.diameter > 0:
            raise BioidInputError(f"class {self.class_id} ({self.name}): diameter must be positive, got {self.diameter}")
        if self.label_radius is not None and self.label_radius < 0:
            raise BioidInputError(f"class {self.class_id} ({self.name}): label radius must be ≥ 0")

    @property
    def radius(self) -> int:
        """Particle radius in voxels, from d = 2r + 1."""
        return max(1, int(round((self.diameter - 1) / 2)))

    @property
    def weak_label_radius(self) -> int:
        """Radius of the weak label painted around each centre."""
        return self.radius if self.label_radius is None else int(self.label_radius)


@dataclass
class PickerConfig:
    """Architecture, sampling, labelling and inference settings of a picker.

    Attributes
    ----------
    classes : list of ParticleClass
        Class ids must be 1..K in order.
    block_size : int
        Sub-tomogram edge N in voxels (default 72); a multiple of 2**(levels-1).
    pad_size : int
        Sliding-window margin discarded per block side (default 12); stride = N - 2·pad.
    channels : tuple of int
        U-Net channels per level (default 24, 48, 72, 108).
    coordconv : bool
        CoordConv channels at every block input.
    label_shape : str
        ``sphere``, ``gaussian`` or ``cube``.
    voxel_size : float or None
        Å per voxel of the training tomograms.
    normalization : str
        ``zscore`` (default) or ``minmax``, per tomogram.
    lowpass_sigma : float
        Optional Gaussian low-pass σ in voxels before the network (0 = off).
    """

    classes: List[ParticleClass] = field(default_factory=lambda: [ParticleClass(1, "particle", 11.0)])
    block_size: int = 72
    pad_size: int = 12
    channels: tuple = (24, 48, 72, 108)
    coordconv: bool = True
    label_shape: str = "sphere"
    voxel_size: Optional[float] = None
    normalization: str = "zscore"
    lowpass_sigma: float = 0.0

    def __post_init__(self):
        self.classes = [c if isinstance(c, ParticleClass) else ParticleClass(**c) for c in self.classes]
        self.channels = tuple(int(c) for c in self.channels)
        ids = [c.class_id for c in self.classes]
        if ids != list(range(1, len(ids) + 1)):
            raise BioidInputError(f"class ids must be 1..K in order, got {ids}")
        if self.label_shape not in LABEL_SHAPES:
            raise BioidInputError(f"label_shape must be one of {LABEL_SHAPES}, got {self.label_shape!r}")
        if self.normalization not in ("zscore", "minmax"):
            raise BioidInputError(f"normalization must be 'zscore' or 'minmax', got {self.normalization!r}")
        div = 2 ** (len(self.channels) - 1)
        if self.block_size % div:
            raise BioidInputError(f"block_size {self.block_size} must be a multiple of {div} for {len(self.channels)} U-Net levels")
        if not 0 <= 2 * self.pad_size < self.block_size:
            raise BioidInputError(f"pad_size {self.pad_size} must be ≥ 0 and < block_size/2 ({self.block_size / 2:g})")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def label_radii(self) -> Dict[int, int]:
        """Weak-label radius per class id."""
        return {c.class_id: c.weak_label_radius for c in self.classes}

    @property
    def max_diameter(self) -> float:
        return max(c.diameter for c in self.classes)

    @property
    def n_pools(self) -> int:
        """Average-pool repetitions k ≈ max diameter / 4 + 1 (METHODS.md §1)."""
        return int(self.max_diameter // 4) + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PickerConfig":
        return cls(**d)

    def build_network(self) -> ResUNet3d:
        return ResUNet3d(1, self.n_classes + 1, self.channels, self.coordconv)


@dataclass
class PickerModel:
    """A trained network with its :class:`PickerConfig` and the metrics it reached."""

    network: torch.nn.Module
    config: PickerConfig
    metrics: dict = field(default_factory=dict)
    path: Optional[Path] = None

    def check_voxel_size(self, voxel_size: Optional[float]) -> None:
        """Warn (:class:`UserWarning`) when a tomogram's voxel size (Å) is more than 5 % off the model's."""
        vs = self.config.voxel_size
        if voxel_size and vs and abs(voxel_size - vs) > 0.05 * vs:
            warnings.warn(
                f"model {self.path} was trained at {vs:g} Å/voxel but the tomogram has {voxel_size:g} Å/voxel; "
                "particles will have the wrong size in voxels: bin or rescale the tomogram to the model's voxel size",
                stacklevel=3,
            )

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write weights + config + metrics to one ``.pt`` file, atomically."""
        return save_checkpoint(path, MODEL_KIND, self.config.to_dict(), self.network.state_dict(), self.metrics, overwrite=overwrite)


def load_picker(path: PathLike, voxel_size: Optional[float] = None) -> PickerModel:
    """Load a picking model saved by :meth:`PickerModel.save`.

    Warns (:class:`UserWarning`) when ``voxel_size`` (Å, of the tomogram to be
    picked) differs by more than 5 % from the voxel size the model was
    trained at: rescale the tomogram first.

    Raises
    ------
    BioidInputError
        Missing file or not a picking model.
    """
    payload = load_checkpoint(path, MODEL_KIND)
    config = PickerConfig.from_dict(payload["config"])
    net = config.build_network()
    net.load_state_dict(payload["state_dict"])
    net.eval()
    model = PickerModel(net, config, payload.get("metrics", {}), Path(path))
    model.check_voxel_size(voxel_size)
    return model
