"""napari adapters for base calling: the cycle-stack reader and layer conversions (no Qt import).

A stack ``[cycle, channel, y, x]`` opens as one image layer per channel
(A green, C blue, G yellow, T red, anchor grey), each ``[cycle, y, x]`` with
additive blending, so the viewer shows one colour composite and the cycle is
the slider. The layers share ``metadata["seq_stack"]`` (the file) and carry
their channel index, so the widget can put the stack back together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .engine.seq.io import BASES

CHANNEL_COLOURMAPS = {"A": "green", "C": "blue", "G": "yellow", "T": "red", "*": "gray"}
BASE_COLOURS = {"A": "#2ecc40", "C": "#3b8bff", "G": "#ffdc00", "T": "#ff4136", "N": "#aaaaaa"}


def get_seq_reader(path):
    """A reader for a cycle-stack TIFF ([cycle, 4|5 channels, y, x]), else None (other TIFFs go to other readers)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff") or not p.is_file():
        return None
    try:
        import tifffile

        with tifffile.TiffFile(p) as tif:
            desc = tif.pages[0].description or ""
            shape = tif.series[0].shape
    except Exception:
        return None
    if '"TCYX"' in desc or '"CSYX"' in desc or (len(shape) == 4 and shape[1] in (4, 5)):
        return read_seq_stack
    return None


def stack_layers(stack: np.ndarray, name: str, source: str, channels: Optional[str] = None) -> List[tuple]:
    """``[cycle, channel, y, x]`` → one image ``LayerData`` per channel (additive composite)."""
    channels = channels or (BASES if stack.shape[1] == 4 else BASES + "*")
    out = []
    for c in range(stack.shape[1]):
        ch = channels[c] if c < len(channels) else "*"
        plane = stack[:, c]
        step = max(1, int(np.sqrt(plane[0].size / 2e5)))
        lo, hi = np.percentile(plane[: min(3, len(plane)), ::step, ::step], [1, 99.8])
        out.append((plane, {"name": f"{name} {ch if ch != '*' else 'anchor'}", "colormap": CHANNEL_COLOURMAPS.get(ch, "gray"),
                            "blending": "additive", "contrast_limits": (float(lo), float(max(hi, lo + 1))),
                            "metadata": {"seq_stack": source, "channel": c, "base": ch}}, "image"))
    return out


def super_resolution_layers(sr: np.ndarray, name: str) -> List[tuple]:
    """The multi-task caller's 2× images ``[cycle, 4, 2y, 2x]`` → one image ``LayerData`` per channel.

    Scaled by ½ and moved by −¼ px so each fine pixel sits over the part of the
    original pixel it resolves (the calls' reference frame); additive, like the stack.
    """
    out = []
    for c, ch in enumerate(BASES):
        plane = np.asarray(sr[:, c], np.float32)
        hi = float(np.percentile(plane[: min(3, len(plane))], 99.8))
        out.append((plane, {"name": f"{name} 2x {ch}", "colormap": CHANNEL_COLOURMAPS[ch], "blending": "additive",
                            "contrast_limits": (0.0, max(hi, 1e-3)), "scale": (1.0, 0.5, 0.5), "translate": (0.0, -0.25, -0.25),
                            "metadata": {"seq_super_resolution": name, "channel": c, "base": ch}}, "image"))
    return out


def read_seq_stack(path):
    from .engine.seq.io import read_stack

    path = Path(path[0] if isinstance(path, list) else path)
    stack, meta = read_stack(path)
    return stack_layers(stack, path.stem, str(path), meta.get("channels"))


def gather_stacks(layers) -> Dict[str, np.ndarray]:
    """{name: [cycle, channel, y, x]} from channel layers opened by the reader, and 4D image layers."""
    groups: Dict[str, Dict[int, object]] = {}
    out: Dict[str, np.ndarray] = {}
    for layer in layers:
        meta = getattr(layer, "metadata", {}) or {}
        if "seq_stack" in meta:
            groups.setdefault(meta["seq_stack"], {})[int(meta["channel"])] = layer
        elif getattr(layer, "ndim", 0) == 4 and layer.data.shape[1] in (4, 5) and type(layer).__name__ == "Image":
            out[layer.name] = layer.data
    for source, chans in groups.items():
        if sorted(chans) in (list(range(4)), list(range(5))):
            name = Path(source).stem
            out[name] = np.stack([np.asarray(chans[c].data) for c in sorted(chans)], axis=1)
    return out
