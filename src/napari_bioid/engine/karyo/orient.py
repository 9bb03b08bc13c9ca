"""The whole chain: rotate upright → classify polarity → turn 180° if "down".

METHODS.md §2. Input crops may arrive at any angle. For each crop:

1. ``a`` = :func:`~.rotate.upright_angle` (counter-clockwise, [0°, 180°));
2. the upright crop goes to the polarity classifier → ``p_up``; a crop it is
   unsure of (confidence below the model's ``turns_below``) goes through
   steps 1–2 again with the input turned by each of its ``turn_angles``, and
   the log-odds are averaged (:func:`turned_log_odds`);
3. polarity "down" (``p_up`` < 0.5) adds 180°.

The output image is the input rotated counter-clockwise by
``total_rotation_deg`` = a (+ 180° if down), in one interpolation, canvas
expanded with white. A reviewer may override the polarity of any crop
(:meth:`Decision.flipped`); the decision then records ``overridden=True`` and
the total rotation changes by 180°.

Decisions table (``decisions.csv``): ``file, upright_angle_deg, polarity,
p_up, total_rotation_deg, overridden``. ``polarity`` is the final decision
(the reviewer's where overridden), ``p_up`` always the classifier's
probability that the upright crop had its short arm up.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write
from ..progress import ProgressCallback, check_cancel, report
from .data import read_crop
from .rotate import normalise_crop, rotate_image, to_grey, turned_upright, upright_angle

if TYPE_CHECKING:  # pragma: no cover
    from .polarity import PolarityModel

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
COLUMNS = ["file", "upright_angle_deg", "polarity", "p_up", "total_rotation_deg", "overridden"]


@dataclass(frozen=True)
class Decision:
    """What the chain (and possibly a reviewer) decided for one crop. Angles in degrees, counter-clockwise."""

    file: str
    upright_angle_deg: float
    polarity: str  # "up" or "down": the final decision
    p_up: float  # the classifier's probability of "up" for the upright crop
    overridden: bool = False

    @property
    def total_rotation_deg(self) -> float:
        """Counter-clockwise rotation from the input image to the output image, in [0°, 360°)."""
        return float((self.upright_angle_deg + (180.0 if self.polarity == "down" else 0.0)) % 360.0)

    @property
    def confidence(self) -> float:
        """The classifier's confidence in its own call, in [0.5, 1]."""
        return float(max(self.p_up, 1.0 - self.p_up))

    def flipped(self) -> "Decision":
        """The same crop with the polarity reversed by a reviewer (reversing twice restores it)."""
        return replace(self, polarity="up" if self.polarity == "down" else "down", overridden=not self.overridden)

    def row(self) -> dict:
        return {"file": self.file, "upright_angle_deg": f"{self.upright_angle_deg:g}", "polarity": self.polarity,
                "p_up": f"{self.p_up:.4f}", "total_rotation_deg": f"{self.total_rotation_deg:g}",
                "overridden": str(bool(self.overridden))}


def orient_images(images: Sequence[np.ndarray], names: Optional[Sequence[str]] = None, model: Optional[PolarityModel] = None,
                  batch_size: int = 64, progress: Optional[ProgressCallback] = None, cancel: Any = None) -> List[Decision]:
    """Run the chain on crops (grey or RGB, chromosome dark on white, any angle).

    ``model`` defaults to the shipped polarity model. Returns one
    :class:`Decision` per crop, in order; ``names`` become ``Decision.file``
    (default ``crop_0000``, ...).

    Raises
    ------
    BioidInputError
        A crop that is not 2D grey/RGB, or has no foreground.
    Cancelled
        ``cancel`` was set.
    """
    if model is None:
        from .polarity import load_polarity_model

        model = load_polarity_model()
    names = list(names) if names is not None else [f"crop_{i:04d}" for i in range(len(images))]
    if len(names) != len(images):
        raise BioidInputError(f"{len(names)} names for {len(images)} crops")
    total = 2 * len(images)
    angles, uprights = [], []
    for i, (img, name) in enumerate(zip(images, names)):
        check_cancel(cancel)
        try:
            img = normalise_crop(img)  # another lab's grey background and contrast → ours, as in training
            a = upright_angle(img)
        except BioidInputError as exc:
            raise BioidInputError(f"{name}: {exc}") from exc
        angles.append(a)
        uprights.append(rotate_image(img, a))
        report(progress, i + 1, total, "rotating upright")

    def step(done, _n, msg):
        report(progress, len(images) + done, total, msg)

    log_odds = model.log_odds(uprights, batch_size, step, cancel)
    if model.turn_angles and model.turns_below > 0:
        log_odds = turned_log_odds(model, images, angles, log_odds, batch_size, cancel)
    p_up = model.calibrated(log_odds)
    return [Decision(n, float(a), "up" if p >= 0.5 else "down", float(p)) for n, a, p in zip(names, angles, p_up)]


def turned_log_odds(model: PolarityModel, images: Sequence[np.ndarray], angles: Sequence[float], log_odds: np.ndarray,
                    batch_size: int = 64, cancel: Any = None) -> np.ndarray:
    """Test-time turns: the crops the chain is unsure of go through it again with the input turned.

    ``images``: the crops as given to :func:`orient_images`; ``angles``: their
    upright angles (degrees); ``log_odds``: float (N,), the model's
    uncalibrated log-odds for those upright crops. A crop whose calibrated
    confidence is below ``model.turns_below`` is turned by each of
    ``model.turn_angles`` t (on its own background), normalised, searched for
    its upright angle a_t again and classified; that log-odds counts with the
    sign of cos(t + a_t − a) (the same end on top as the first pass, or the
    other), and the crop's log-odds become the mean over the first pass and
    the turns. Each turn resamples the crop once more and the upright search
    starts afresh, so the passes err on different crops (validation cases,
    issue 15: another lab at level 3 40 → 37 and 42 → 33 errors of 1,564,
    scale 0.3 23 → 18, our own 10 → 8 and 8 → 7, with turns of 37°, 143°,
    217°, 323° below 0.9).
    Returns a new float64 (N,) array.
    """
    out = np.array(log_odds, dtype=np.float64)
    unsure = np.flatnonzero(model.unsure(out, model.turns_below))
    if not len(unsure):
        return out
    uprights, signs = [], []
    for i in unsure:
        grey = to_grey(images[i])
        for t in model.turn_angles:
            check_cancel(cancel)
            upright, a = turned_upright(grey, t)
            uprights.append(upright)
            signs.append(1.0 if np.cos(np.deg2rad(t + a - angles[i])) > 0 else -1.0)
    turned = (model.log_odds(uprights, batch_size, cancel=cancel) * np.array(signs)).reshape(len(unsure), len(model.turn_angles))
    out[unsure] = (out[unsure] + turned.sum(1)) / (1 + len(model.turn_angles))
    return out


def oriented_image(image: np.ndarray, decision: Decision) -> np.ndarray:
    """The input crop turned upright with the short arm up (grey uint8, white fill)."""
    return rotate_image(to_grey(image), decision.total_rotation_deg)


def list_images(folder: PathLike) -> List[Path]:
    """Image files under ``folder`` (recursively), sorted.

    Raises
    ------
    BioidInputError
        ``folder`` is missing or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BioidInputError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BioidInputError(f"{folder}: no crop images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def crops_from_labels(image: np.ndarray, labels: np.ndarray, pad: int = 3, min_area: int = 10) -> Tuple[List[np.ndarray], List[int], List[Tuple[int, int, int, int]]]:
    """Cut one crop per labelled chromosome out of a whole metaphase/karyogram image.

    ``image``: (H, W) grey or (H, W, 3/4) RGB; ``labels``: (H, W) integer
    instance labels (0 = background), e.g. a napari labels layer. Each crop is
    the instance's bounding box plus ``pad`` pixels, with every pixel outside
    the instance set to white so that neighbours do not leak in. Instances
    smaller than ``min_area`` pixels are skipped.

    Returns ``(crops uint8 list, label ids, boxes (y0, x0, y1, x1))``.

    Raises
    ------
    BioidInputError
        Shapes disagree, labels are not integers, or there is no instance.
    """
    from scipy import ndimage

    grey = to_grey(image)
    labels = np.asarray(labels)
    if labels.shape != grey.shape:
        raise BioidInputError(f"labels shape {labels.shape} does not match the image {grey.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise BioidInputError(f"labels must be integers, got {labels.dtype}")
    crops, ids, boxes = [], [], []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, grey.shape[0])
        x0, x1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, grey.shape[1])
        mask = labels[y0:y1, x0:x1] == i
        if mask.sum() < min_area:
            continue
        crops.append(np.where(mask, grey[y0:y1, x0:x1], 255).astype(np.uint8))
        ids.append(i)
        boxes.append((y0, x0, y1, x1))
    if not crops:
        raise BioidInputError("the labels hold no chromosome instance")
    return crops, ids, boxes


def write_decisions(decisions: Sequence[Decision], path: PathLike, overwrite: bool = False) -> Path:
    """Write ``decisions.csv`` atomically (an existing file is kept as ``.bak`` when overwritten)."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, COLUMNS)
            w.writeheader()
            for d in decisions:
                w.writerow(d.row())
    return Path(path)


def read_decisions(path: PathLike) -> List[Decision]:
    """Read a ``decisions.csv`` written by :func:`write_decisions`.

    Raises
    ------
    BioidInputError
        Missing file or missing columns.
    """
    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not set(COLUMNS) <= set(rows[0]):
        raise BioidInputError(f"{path}: expected columns {', '.join(COLUMNS)}")
    return [Decision(r["file"], float(r["upright_angle_deg"]), r["polarity"], float(r["p_up"]),
                     r["overridden"].strip().lower() in ("true", "1", "yes")) for r in rows]


def _output_name(name: str) -> str:
    p = Path(name)
    return str(p if p.suffix.lower() in IMAGE_SUFFIXES else p.with_suffix(".png"))


def check_outputs(out_dir: PathLike, names: Sequence[str], overwrite: bool = False) -> List[Path]:
    """Output paths of the crops ``names`` under ``out_dir`` (see :func:`write_oriented`).

    Call it before long work: with ``overwrite`` false it raises
    :class:`FileExistsError` if any of them, or ``decisions.csv``, exists.
    """
    out_dir = Path(out_dir)
    targets = [out_dir / _output_name(n) for n in names]
    if not overwrite:
        for t in targets + [out_dir / "decisions.csv"]:
            if t.exists():
                raise FileExistsError(f"{t} already exists; refusing to overwrite it (pass overwrite=True / --overwrite)")
    return targets


def write_oriented(out_dir: PathLike, images: Sequence[np.ndarray], decisions: Sequence[Decision], overwrite: bool = False,
                   progress: Optional[ProgressCallback] = None, cancel: Any = None) -> Path:
    """Write every crop upright, short arm up, to ``out_dir/<file>`` and ``out_dir/decisions.csv``.

    File names (relative paths) come from the decisions; names without an
    image suffix get ``.png``. Nothing existing is overwritten unless
    ``overwrite`` (then the old files are kept as ``.bak``). All outputs are
    checked before the first is written. Returns the decisions path.

    Raises
    ------
    FileExistsError
        An output exists and ``overwrite`` is false.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    targets = check_outputs(out_dir, [d.file for d in decisions], overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, (img, d, t) in enumerate(zip(images, decisions, targets)):
        check_cancel(cancel)
        t.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(t, overwrite=overwrite) as tmp:
            fmt = Image.registered_extensions().get(t.suffix.lower(), "PNG")
            Image.fromarray(oriented_image(img, d)).save(tmp, format=fmt)
        report(progress, i + 1, len(decisions), "writing upright crops")
    return write_decisions([replace(d, file=_output_name(d.file)) for d in decisions], out_dir / "decisions.csv", overwrite)


def orient_folder(input_dir: PathLike, out_dir: PathLike, model: Optional[PolarityModel] = None, overwrite: bool = False,
                  progress: Optional[ProgressCallback] = None, cancel: Any = None) -> List[Decision]:
    """``bioid karyo orient``: every crop under ``input_dir`` upright, short arm up, into ``out_dir``.

    Relative paths are kept (``input_dir/a/b.tif`` → ``out_dir/a/b.tif``);
    ``out_dir/decisions.csv`` lists the decisions (see module docstring).

    Raises
    ------
    BioidInputError
        No images, an unreadable image, or ``out_dir`` equal to ``input_dir``.
    FileExistsError
        Outputs exist and ``overwrite`` is false (checked before any work).
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if out_dir.resolve() == input_dir.resolve():
        raise BioidInputError("the output folder must differ from the input folder (inputs are never overwritten)")
    files = [f for f in list_images(input_dir) if out_dir.resolve() not in f.resolve().parents]
    names = [str(f.relative_to(input_dir)) for f in files]
    check_outputs(out_dir, names, overwrite)
    images = [read_crop(f) for f in files]

    def phase(offset, weight):
        return lambda d, n, m: report(progress, offset + int(weight * d / max(n, 1) * 100), 200, m)

    decisions = orient_images(images, names, model, progress=phase(0, 1.6), cancel=cancel)
    write_oriented(out_dir, images, decisions, overwrite, progress=phase(160, 0.4), cancel=cancel)
    return decisions
