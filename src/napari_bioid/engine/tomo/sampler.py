"""Training sub-tomograms: one block per annotated particle per epoch, with augmentation.

Reference: DeepETPicker (Liu et al., Nat. Commun. 2024); METHODS.md §1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage as ndi

from .preprocess import extract_block


@dataclass
class Augmenter:
    """Random augmentations of an (image, labels) block pair.

    * mirroring on each axis with p = 0.5;
    * with probability ``p_affine`` a rotation of ±``max_rotation_deg`` about a
      random axis combined with a scaling in ``scale_range``;
    * with probability ``p_elastic`` an elastic deformation (displacement
      field of σ ``elastic_sigma`` voxels, amplitude ``elastic_alpha`` voxels).

    Image voxels are interpolated linearly, labels by nearest neighbour, with
    mirror boundaries for both, so labels stay aligned with their particles.
    """

    p_mirror: float = 0.5
    p_affine: float = 0.15
    max_rotation_deg: float = 15.0
    scale_range: Tuple[float, float] = (0.95, 1.05)
    p_elastic: float = 0.1
    elastic_sigma: float = 6.0
    elastic_alpha: float = 2.0

    def __call__(self, img: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        for axis in range(3):
            if rng.random() < self.p_mirror:
                img = np.flip(img, axis)
                lab = np.flip(lab, axis)
        if rng.random() < self.p_affine:
            img, lab = self._affine(img, lab, rng)
        if rng.random() < self.p_elastic:
            img, lab = self._elastic(img, lab, rng)
        return np.ascontiguousarray(img), np.ascontiguousarray(lab)

    def _affine(self, img, lab, rng):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(rng.uniform(-self.max_rotation_deg, self.max_rotation_deg))
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k  # Rodrigues
        mat = rot / rng.uniform(*self.scale_range)
        centre = (np.asarray(img.shape) - 1) / 2.0
        offset = centre - mat @ centre
        img = ndi.affine_transform(img, mat, offset, order=1, mode="mirror")
        lab = ndi.affine_transform(lab, mat, offset, order=0, mode="mirror")
        return img, lab

    def _elastic(self, img, lab, rng):
        shape = img.shape
        disp = [ndi.gaussian_filter(rng.normal(size=shape), self.elastic_sigma) for _ in range(3)]
        disp = [d / (np.abs(d).max() + 1e-8) * self.elastic_alpha for d in disp]
        grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
        coords = [g + d for g, d in zip(grid, disp)]
        img = ndi.map_coordinates(img, coords, order=1, mode="mirror")
        lab = ndi.map_coordinates(lab, coords, order=0, mode="mirror")
        return img, lab


class SubtomogramSampler:
    """One N³ sub-tomogram per annotated particle per epoch.

    Each block is centred on its particle shifted by a random offset of at most
    ``max_shift`` voxels per axis (default N/5), so every block holds at least
    one particle and every particle is seen once per epoch. Blocks leaving the
    tomogram are mirrored at its border.

    Parameters
    ----------
    images : list of float32 arrays (Z, Y, X)
        Normalised tomograms.
    labels : list of uint8 arrays (Z, Y, X)
        Weak-label volumes of the same shapes.
    centres : list of (n_i, 3) arrays
        Particle centres [z, y, x] in voxels, per tomogram.
    block_size : int
    augment : Augmenter or None
    max_shift : int, optional
    """

    def __init__(self, images: List[np.ndarray], labels: List[np.ndarray], centres: List[np.ndarray], block_size: int,
                 augment: Optional[Augmenter] = None, max_shift: Optional[int] = None):
        if not (len(images) == len(labels) == len(centres)):
            raise ValueError("images, labels and centres must have the same length")
        self.images, self.labels = images, labels
        self.block_size = int(block_size)
        self.max_shift = int(block_size // 5 if max_shift is None else max_shift)
        self.augment = augment
        self.index = [(t, np.asarray(c[i], dtype=float)) for t, c in enumerate(centres) for i in range(len(c))]

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, i: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Block ``i`` of the epoch: float32 image (N, N, N) and int64 labels (N, N, N)."""
        t, centre = self.index[i]
        n = self.block_size
        shift = rng.integers(-self.max_shift, self.max_shift + 1, size=3) if self.max_shift else np.zeros(3, int)
        start = np.rint(centre).astype(int) + shift - n // 2
        img = extract_block(self.images[t], start, (n, n, n))
        lab = extract_block(self.labels[t], start, (n, n, n))
        if self.augment is not None:
            img, lab = self.augment(img, lab, rng)
        return img.astype(np.float32, copy=False), lab.astype(np.int64)

    def epoch(self, batch_size: int, rng: np.random.Generator):
        """Yield shuffled batches ``(images (B,1,N,N,N) float32, labels (B,N,N,N) int64)`` as NumPy arrays."""
        order = rng.permutation(len(self))
        for b in range(0, len(order), batch_size):
            pairs = [self.sample(i, rng) for i in order[b : b + batch_size]]
            yield np.stack([p[0] for p in pairs])[:, None], np.stack([p[1] for p in pairs])
