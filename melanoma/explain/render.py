"""Heat-map overlays: one function used by the app and the CLI.

Signed maps (occlusion sensitivity) use a diverging blue–white–red scale centred on zero, so
red means "this region raises the melanoma probability" and blue "lowers it"; unsigned maps
(Grad-CAM) use a sequential OpenCV colour map.
"""

from __future__ import annotations

import cv2
import numpy as np

SEQUENTIAL_COLOURMAPS = {
    "inferno": cv2.COLORMAP_INFERNO,
    "jet": cv2.COLORMAP_JET,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
}
DIVERGING_COLOURMAPS = ("blue-white-red", "green-white-purple")
# The least full scale of a signed map, in probability: float noise (0.0002 on a reading that no
# patch moves) would otherwise be drawn as saturated as a patch that moves the probability by 0.3.
MIN_SIGNED_SCALE = 0.01


def _diverging_lut(name: str) -> np.ndarray:
    """A 256-entry BGR lookup table for cv2.applyColorMap, white at the centre."""
    low, high = {
        "blue-white-red": ((180, 60, 20), (30, 30, 200)),
        "green-white-purple": ((40, 140, 30), (140, 40, 120)),
    }[name]
    t = np.linspace(-1.0, 1.0, 256)[:, None]
    white = np.array([255.0, 255.0, 255.0])
    colours = np.where(t < 0, white + (np.array(low) - white) * -t, white + (np.array(high) - white) * t)
    return np.clip(colours, 0, 255).astype(np.uint8).reshape(256, 1, 3)


def check_colourmap(colourmap: str, signed: bool) -> str:
    """The colour map's name, or a ValueError listing the ones that suit this kind of map."""
    valid = DIVERGING_COLOURMAPS if signed else tuple(SEQUENTIAL_COLOURMAPS)
    if colourmap not in valid:
        kind = "a signed (occlusion)" if signed else "an unsigned (Grad-CAM)"
        raise ValueError(f"Unknown colour map {colourmap!r} for {kind} map; expected one of {', '.join(valid)}.")
    return colourmap


def signed_scale(scores: np.ndarray) -> float:
    """A signed map's full scale, ±: its largest |drop|, but at least MIN_SIGNED_SCALE, so that a map
    whose patches move nothing reads pale. What the overlays are coloured by and their captions say."""
    return max(float(np.abs(scores).max()), MIN_SIGNED_SCALE)


def colourise(scores: np.ndarray, colourmap: str, signed: bool, scale: float | None = None) -> np.ndarray:
    """RGB uint8 colours for a 2-D map; signed maps are scaled symmetrically by ±`scale` (default
    `signed_scale`), unsigned ones by `scale` (default their maximum)."""
    scores = np.asarray(scores, dtype=np.float32)
    if signed:
        scale = scale or signed_scale(scores)
        index = np.clip((scores / scale + 1.0) * 127.5, 0, 255).astype(np.uint8)
        bgr = cv2.applyColorMap(index, _diverging_lut(check_colourmap(colourmap, signed)))
    else:
        scale = scale or float(scores.max()) or 1.0
        index = np.clip(scores / scale * 255.0, 0, 255).astype(np.uint8)
        bgr = cv2.applyColorMap(index, SEQUENTIAL_COLOURMAPS[check_colourmap(colourmap, signed)])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(
    image: np.ndarray, scores: np.ndarray, alpha: float = 0.5, colourmap: str = "blue-white-red", signed: bool = True
) -> np.ndarray:
    """Blend a colourised map over the image; the map is resized to the image if needed."""
    image = np.asarray(image, dtype=np.uint8)
    if scores.shape != image.shape[:2]:
        scores = cv2.resize(
            scores.astype(np.float32),
            (image.shape[1], image.shape[0]),
            interpolation=cv2.INTER_NEAREST if signed else cv2.INTER_LINEAR,
        )
    colours = colourise(scores, colourmap, signed)
    return cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)


def colour_bar(colourmap: str, signed: bool, width: int = 256, height: int = 16) -> np.ndarray:
    """A horizontal strip of the colour scale, low on the left, for legends."""
    ramp = np.tile(np.linspace(-1 if signed else 0, 1, width, dtype=np.float32), (height, 1))
    return colourise(ramp, colourmap, signed, scale=1.0)
