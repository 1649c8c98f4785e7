"""How well each installed model's out-of-distribution gate separates lesions from everything else.

`python -m train.gate_check --data-dir DIR [--models a,b]` prints, per model, the fraction of its
own test split that the gate flags (should be small) and the fraction of non-dermoscopic images
it flags (should be nearly all): photographs that scikit-image and scikit-learn ship, rendered
documents, noise, blank and single-colour images.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from melanoma.data import DataError, load_pixels, split_images
from melanoma.store import ModelUnavailableError
from train.tools import chosen_models, installed_models_parser, trained_data

SKIMAGE_PHOTOGRAPHS = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)


def _document(seed: int, size: tuple[int, int] = (600, 450)) -> np.ndarray:
    """A page of dark 'text' lines on white, as a scanned letter or a screenshot would look."""
    rng = np.random.default_rng(seed)
    page = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(page)
    for line in range(20, size[1] - 20, 22):
        x = 30
        while x < size[0] - 60:
            word = "".join(chr(rng.integers(97, 123)) for _ in range(rng.integers(2, 9)))
            draw.text((x, line), word, fill=(20, 20, 20))
            x += 8 * len(word) + 10
    return np.asarray(page)


def non_dermoscopic_images() -> dict[str, np.ndarray]:
    """Images a clinician might upload by mistake, from packages and generated here."""
    from sklearn.datasets import load_sample_images

    images: dict[str, np.ndarray] = {}
    for name, pixels in zip(("sklearn_china", "sklearn_flower"), load_sample_images().images):
        images[name] = pixels
    from skimage import data

    for name in SKIMAGE_PHOTOGRAPHS:
        pixels = getattr(data, name)()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        images[f"skimage_{name}"] = np.ascontiguousarray(pixels[..., :3]).astype(np.uint8)
    rng = np.random.default_rng(0)
    for seed in range(3):
        images[f"document_{seed}"] = _document(seed)
        images[f"noise_uniform_{seed}"] = rng.integers(0, 256, (450, 600, 3), dtype=np.uint8)
        images[f"noise_gaussian_{seed}"] = np.clip(rng.normal(128, 40, (450, 600, 3)), 0, 255).astype(np.uint8)
    for name, colour in (("blank_white", 255), ("blank_black", 0), ("grey", 128)):
        images[name] = np.full((450, 600, 3), colour, np.uint8)
    for name, colour in (
        ("single_red", (200, 30, 30)),
        ("single_skin", (224, 180, 160)),
        ("single_blue", (30, 60, 200)),
    ):
        images[name] = np.broadcast_to(np.array(colour, np.uint8), (450, 600, 3)).copy()
    return images


def photographs_missing() -> str | None:
    """Why the check cannot show every gate its whole set, or None: without scikit-image it checked
    the images left (17 of 35) and printed rates that read like the full set's."""
    try:
        import skimage.data  # noqa: F401
    except ImportError as error:
        return (
            f"train.gate_check shows each gate {len(SKIMAGE_PHOTOGRAPHS)} photographs that scikit-image ships, but "
            f"it cannot be imported ({error}). Install the training requirements: pip install -r "
            "requirements-train.txt."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    from melanoma.inference import load_predictor

    args = installed_models_parser("python -m train.gate_check", __doc__.splitlines()[0]).parse_args(argv)
    if problem := photographs_missing():
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        names = chosen_models(args)
        predictors = [load_predictor(name, args.models_dir) for name in names]
        entries = [predictor.entry for predictor in predictors]
        tests = [
            split_images(data, entry.folder, ("test",)) for entry, data in zip(entries, trained_data(args, entries))
        ]
    except (DataError, ModelUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    others = non_dermoscopic_images()
    rows = []
    for name, predictor, test in zip(names, predictors, tests):
        own = predictor.gate(load_pixels(list(test.path), predictor.serving.input_size))
        foreign = predictor.gate(list(others.values()))
        missed = [image for image, result in zip(others, foreign) if result.in_distribution]
        rows.append(
            {
                "model": name,
                "own test flagged": np.mean([not r.in_distribution for r in own]),
                "non-dermoscopic flagged": np.mean([not r.in_distribution for r in foreign]),
                "non-dermoscopic images": len(others),
                "passed the gate": ", ".join(missed) or "-",
            }
        )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
