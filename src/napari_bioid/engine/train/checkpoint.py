"""Self-describing model files: weights plus config in one ``.pt`` file.

The file is a plain dict saved with :func:`torch.save` and loaded with
``weights_only=True`` (no pickled code runs on load):

``{"format": str, "format_version": int, "config": dict, "state_dict": dict,
"metrics": dict}``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import BioidInputError
from ..io.atomic import PathLike, atomic_write

FORMAT_VERSION = 1


def _plain(obj: Any) -> Any:
    """Plain Python types only (``weights_only`` loading refuses NumPy scalars)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (tuple, set)):
            return list(o)
        raise TypeError(f"cannot store {type(o).__name__} in a model file")

    return json.loads(json.dumps(obj, default=default))


def save_checkpoint(path: PathLike, kind: str, config: dict, state_dict: dict, metrics: Optional[dict] = None, overwrite: bool = False) -> Path:
    """Write a model file atomically (refuses to overwrite unless asked; keeps ``.bak``)."""
    payload = {
        "format": kind,
        "format_version": FORMAT_VERSION,
        "config": _plain(config),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "metrics": _plain(metrics or {}),
    }
    with atomic_write(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: PathLike, kind: str) -> dict:
    """Read a model file written by :func:`save_checkpoint`.

    Raises
    ------
    BioidInputError
        Missing file, not a napari-bioid model, or a model of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise BioidInputError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BioidInputError(f"{path}: not a readable model file ({exc})") from exc
    if not isinstance(payload, dict) or "format" not in payload:
        raise BioidInputError(f"{path}: not a napari-bioid model file")
    if payload["format"] != kind:
        raise BioidInputError(f"{path}: a {payload['format']!r} model, expected {kind!r}")
    return payload


class CheckpointedNetwork:
    """Base of a model class holding ``config`` (a dataclass), ``network`` and ``metrics``, saved as one model file.

    Subclasses set ``KIND`` (the file's format name) and ``CONFIG`` (the config
    dataclass) and take ``(config, metrics=...)`` in ``__init__``.
    """

    KIND: str = ""
    CONFIG: type = dict

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write the model file atomically (refuses to overwrite unless asked; keeps ``.bak``)."""
        from dataclasses import asdict

        return save_checkpoint(path, self.KIND, asdict(self.config), self.network.state_dict(), self.metrics, overwrite=overwrite)

    @classmethod
    def resolve(cls, model, default: PathLike):
        """``model`` itself when it is already one of these, else the file ``model`` (or ``default`` when None) loaded."""
        return model if isinstance(model, cls) else cls.load(model or default)

    @classmethod
    def load(cls, path: PathLike):
        """Read a model file (raises :class:`BioidInputError` for a missing, unreadable or other kind of file)."""
        d = load_checkpoint(path, cls.KIND)
        model = cls(cls.CONFIG(**d["config"]), metrics=d.get("metrics", {}))
        model.network.load_state_dict(d["state_dict"])
        model.network.eval()
        return model
