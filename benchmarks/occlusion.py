"""Occlusion sensitivity and Grad-CAM of the models that ship, against tf-explain, in one process.

    .venv/bin/python benchmarks/occlusion.py [--data-dir ../shared/data/ham10000] [--repeats 3]

For every installed model at its own input size, and for EfficientNet-Lite0 from its ImageNet
checkpoint at 224 px, on one real dermoscopic image (the first melanoma of the shared data):
tf-explain's patch-20 time, ours, the ratio (tf-explain / ours, > 1 means ours is faster), which
path ours took (incremental or whole image, as in the model card), the time to the coarse preview
and the fine map's time (patch 16, stride 4) as a multiple of tf-explain's patch-20 time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from melanoma.explain.gradcam import grad_cam
from melanoma.explain.occlusion import (
    FINE_PATCH,
    FINE_STRIDE,
    occlusion_path,
    occlusion_sensitivity,
    progressive_occlusion,
)
from melanoma.images import read_image, to_model_input  # noqa: E402
from melanoma.inference import load_predictor  # noqa: E402
from melanoma.models.architectures import create_model, get_architecture  # noqa: E402
from melanoma.store import add_models_dir_option, list_models  # noqa: E402

PATCH = 20


def median_seconds(function, repeats: int) -> float:
    """Median wall time; the function's own printing (Keras progress bars) is kept off the report."""
    times = []
    for _ in range(repeats):
        with contextlib.redirect_stdout(io.StringIO()):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def first_melanoma(data_dir: Path) -> np.ndarray:
    metadata = pd.read_csv(data_dir / "HAM10000_metadata.csv")
    image_id = metadata.loc[metadata.dx == "mel", "image_id"].sort_values().iloc[0]
    return read_image(str(data_dir / "images" / f"{image_id}.jpg")).pixels


def compare(label: str, model, image: np.ndarray, gradcam_layer: str, repeats: int) -> None:
    from tf_explain.core.grad_cam import GradCAM
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

    size = image.shape[0]
    theirs_map = lambda: OcclusionSensitivity().get_sensitivity_map(model, image, 0, PATCH)  # noqa: E731
    ours_map = lambda: occlusion_sensitivity(model, image, PATCH)  # noqa: E731
    fine_map = lambda: occlusion_sensitivity(model, image, FINE_PATCH, FINE_STRIDE)  # noqa: E731
    coarse_map = lambda: next(progressive_occlusion(model, image, PATCH))  # noqa: E731
    for warm_up in (
        theirs_map,
        ours_map,
        fine_map,
        coarse_map,
    ):  # both sides trace their graphs once, outside the timing
        median_seconds(warm_up, 1)
    theirs, ours = median_seconds(theirs_map, repeats), median_seconds(ours_map, repeats)
    fine = median_seconds(fine_map, repeats)
    coarse = median_seconds(coarse_map, repeats)
    path = occlusion_path(model, size, PATCH)["path"]
    print(
        f"{label:<24}{size:>5}{theirs:>13.2f}{ours:>8.2f}{theirs / ours:>7.2f}  {path:<12}{coarse:>9.2f}"
        f"{fine:>8.2f}{fine / theirs:>10.2f}",
        flush=True,
    )
    explainer = GradCAM()
    explain_theirs = lambda: explainer.explain((image[None], None), model, class_index=0, layer_name=gradcam_layer)  # noqa: E731
    explain_ours = lambda: grad_cam(model, image, gradcam_layer)  # noqa: E731
    explain_theirs(), explain_ours()
    theirs, ours = median_seconds(explain_theirs, repeats), median_seconds(explain_ours, repeats)
    print(f"{'  grad-cam':<24}{size:>5}{theirs:>13.2f}{ours:>8.2f}{theirs / ours:>7.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parent.parent.parent / "shared/data/ham10000")
    )
    add_models_dir_option(parser)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    photo = first_melanoma(Path(args.data_dir))
    print(
        f"occlusion patch {PATCH}; fine map patch {FINE_PATCH}, stride {FINE_STRIDE}; seconds, median of {args.repeats}"
    )
    print(
        f"{'model':<24}{'px':>5}{'tf-explain':>13}{'ours':>8}{'ratio':>7}  {'path':<12}{'coarse':>9}{'fine':>8}"
        f"{'fine/tfx':>10}"
    )
    for entry in list_models(args.models_dir):
        if entry.available:
            predictor = load_predictor(entry.name, args.models_dir)
            image = to_model_input(photo, entry.input_size).astype(np.float32)
            compare(entry.name, predictor.model, image, get_architecture(entry.name).gradcam_layer, args.repeats)
    lite0 = create_model("efficientnet_lite0", 224, weights="imagenet")
    compare(
        "efficientnet_lite0 (ImageNet)", lite0, to_model_input(photo, 224).astype(np.float32), "top_relu6", args.repeats
    )


if __name__ == "__main__":
    main()
