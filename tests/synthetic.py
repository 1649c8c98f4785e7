"""Generated dermoscopy-like images in the three data layouts, so tests need no real data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

# A lesion colour per diagnosis: melanoma dark blue-grey, naevus light brown (the binary set's
# two), and five more far enough apart for a network to tell them in a few epochs.
DIAGNOSIS_COLOURS = {
    "MEL": (60, 50, 80),
    "NV": (170, 120, 90),
    "BCC": (120, 190, 220),
    "AKIEC": (200, 60, 40),
    "BKL": (120, 110, 30),
    "DF": (120, 40, 150),
    "VASC": (190, 10, 70),
}


def lesion_image(
    melanoma: bool, rng: np.random.Generator, size: tuple[int, int] = (80, 60), dx: str | None = None
) -> Image.Image:
    """A skin-coloured image with a lesion: dark blue-grey for melanoma, light brown otherwise, or
    the colour of diagnosis `dx`."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    skin = np.array([224, 180, 160]) + rng.normal(0, 6, 3)
    lesion = np.array(DIAGNOSIS_COLOURS[dx or ("MEL" if melanoma else "NV")])
    cx, cy = width / 2 + rng.normal(0, 4), height / 2 + rng.normal(0, 4)
    radius = min(width, height) * rng.uniform(0.25, 0.38)
    inside = ((x - cx) ** 2 + (y - cy) ** 2) < radius**2
    pixels = np.where(inside[..., None], lesion + rng.normal(0, 10, 3), skin)
    pixels = pixels + rng.normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_dataset(root: Path, layout: str, n: int = 60, melanoma_fraction: float = 0.3, seed: int = 0) -> Path:
    """Write `n` images and the labels file of `layout` (generic, ham10000 or isic2018) under root."""
    rng = np.random.default_rng(seed)
    image_dir = root / ("ISIC2018_Task3_Training_Input" if layout == "isic2018" else "images")
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n):
        image_id = f"ISIC_{index:07d}"
        lesion_id = f"HAM_{index // 2:07d}"  # two images per lesion, as in HAM10000
        melanoma = (index // 2) < round(n * melanoma_fraction / 2)
        lesion_image(melanoma, rng).save(image_dir / f"{image_id}.jpg", quality=95)
        rows.append((image_id, lesion_id, int(melanoma)))
    if layout == "generic":
        # Two sources (clinics), each with both classes, for the source-held-out evaluation.
        _write(
            root / "labels.csv",
            ["image_id", "label", "group", "source"],
            [(i, m, lesion, "clinic_b" if int(lesion[4:]) % 3 == 0 else "clinic_a") for i, lesion, m in rows],
        )
    elif layout == "ham10000":
        _write(
            root / "HAM10000_metadata.csv",
            ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"],
            [(lesion, i, "mel" if m else "nv", "histo", "50.0", "male", "back") for i, lesion, m in rows],
        )
    elif layout == "isic2018":
        _write(
            root / "ISIC2018_Task3_Training_GroundTruth.csv",
            ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"],
            [(i, float(m), float(not m), 0.0, 0.0, 0.0, 0.0, 0.0) for i, _, m in rows],
        )
        _write(
            root / "ISIC2018_Task3_Training_LesionGroupings.csv",
            ["image", "lesion_id", "diagnosis_confirm_type"],
            [(i, lesion, "histopathology") for i, lesion, _ in rows],
        )
    else:
        raise ValueError(layout)
    return root


def make_diagnosis_dataset(root: Path, per_class: int = 20, seed: int = 2) -> Path:
    """A generic labels.csv with a dx column: `per_class` images of each of the seven diagnoses,
    two per lesion, the label following from dx."""
    from melanoma.diagnoses import CODES

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(per_class * len(CODES)):
        dx = CODES[(index // 2) % len(CODES)]
        image_id = f"ISIC_{index:07d}"
        lesion_image(dx == "MEL", rng, dx=dx).save(root / "images" / f"{image_id}.jpg", quality=95)
        rows.append((image_id, dx, f"HAM_{index // 2:07d}"))
    _write(root / "labels.csv", ["image_id", "dx", "group"], rows)
    return root


def _write(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
