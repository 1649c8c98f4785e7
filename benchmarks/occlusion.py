"""Occlusion sensitivity and Grad-CAM of the models that ship, against tf-explain, in one process.

    .venv/bin/python benchmarks/occlusion.py [--data-dir ../shared/data/ham10000] [--repeats 3]
    .venv/bin/python benchmarks/occlusion.py --architecture inception_v3@299 --architecture efficientnet_b3@299 \
        --no-fine

For every installed model at its own input size, and for EfficientNet-Lite0 from its ImageNet
checkpoint at 224 px, on one real dermoscopic image (the first melanoma of the shared data):
tf-explain's patch-20 time, ours, the ratio (tf-explain / ours, > 1 means ours is faster), which
path ours took (incremental or whole image, as in the model card), the time to the coarse preview
and the fine map's time (patch 16, stride 4) as a multiple of tf-explain's patch-20 time. Times
are medians of runs taken in turn, one of each per round, so the machine's load weighs on both.

With --architecture, only the registered architectures named, at the sizes given, as
`create_model` builds them (random weights; the Lite ones from ImageNet): the study's 299 px,
whose fine map takes minutes (--no-fine leaves it out).
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


def median_seconds(functions: list, repeats: int) -> list[float]:
    """Each function's median wall time, run in turn (one of each per round), so that the machine's
    load weighs on all of them alike; their own printing (Keras progress bars) is kept off the report."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, runs in zip(functions, times):
            with contextlib.redirect_stdout(io.StringIO()):
                started = time.perf_counter()
                function()
                runs.append(time.perf_counter() - started)
    return [statistics.median(runs) for runs in times]


def first_melanoma(data_dir: Path) -> np.ndarray:
    metadata = pd.read_csv(data_dir / "HAM10000_metadata.csv")
    image_id = metadata.loc[metadata.dx == "mel", "image_id"].sort_values().iloc[0]
    return read_image(str(data_dir / "images" / f"{image_id}.jpg")).pixels


def compare(label: str, model, image: np.ndarray, gradcam_layer: str, repeats: int, with_fine: bool = True) -> None:
    from tf_explain.core.grad_cam import GradCAM
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

    size = image.shape[0]
    theirs_map = lambda: OcclusionSensitivity().get_sensitivity_map(model, image, 0, PATCH)  # noqa: E731
    ours_map = lambda: occlusion_sensitivity(model, image, PATCH)  # noqa: E731
    fine_map = lambda: occlusion_sensitivity(model, image, FINE_PATCH, FINE_STRIDE)  # noqa: E731
    coarse_map = lambda: next(progressive_occlusion(model, image, PATCH))  # noqa: E731
    timed = [theirs_map, ours_map, coarse_map, *([fine_map] if with_fine else [])]
    median_seconds(timed, 1)  # both sides trace their graphs once, outside the timing
    theirs, ours, coarse, *fine = median_seconds(timed, repeats)
    path = occlusion_path(model, size, PATCH)["path"]
    fine_columns = f"{fine[0]:>8.2f}{fine[0] / theirs:>10.2f}" if fine else f"{'-':>8}{'-':>10}"
    print(
        f"{label:<24}{size:>5}{theirs:>13.2f}{ours:>8.2f}{theirs / ours:>7.2f}  {path:<12}{coarse:>9.2f}{fine_columns}",
        flush=True,
    )
    explainer = GradCAM()
    explain_theirs = lambda: explainer.explain((image[None], None), model, class_index=0, layer_name=gradcam_layer)  # noqa: E731
    explain_ours = lambda: grad_cam(model, image, gradcam_layer)  # noqa: E731
    explain_theirs(), explain_ours()
    theirs, ours = median_seconds([explain_theirs, explain_ours], repeats)
    print(f"{'  grad-cam':<24}{size:>5}{theirs:>13.2f}{ours:>8.2f}{theirs / ours:>7.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parent.parent.parent / "shared/data/ham10000")
    )
    add_models_dir_option(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--architecture", action="append", default=[], metavar="NAME@PX", help="only these, e.g. inception_v3@299"
    )
    parser.add_argument("--no-fine", action="store_true", help="leave out the fine map (minutes at 299 px)")
    args = parser.parse_args()
    photo = first_melanoma(Path(args.data_dir))
    print(
        f"occlusion patch {PATCH}; fine map patch {FINE_PATCH}, stride {FINE_STRIDE}; seconds, median of {args.repeats}"
    )
    print(
        f"{'model':<24}{'px':>5}{'tf-explain':>13}{'ours':>8}{'ratio':>7}  {'path':<12}{'coarse':>9}{'fine':>8}"
        f"{'fine/tfx':>10}"
    )
    with_fine = not args.no_fine
    if args.architecture:
        for spec in args.architecture:
            name, size = spec.split("@")
            architecture = get_architecture(name)
            model = create_model(name, int(size), weights="imagenet" if architecture.checkpoint_variant else "none")
            image = to_model_input(photo, int(size)).astype(np.float32)
            compare(spec, model, image, architecture.gradcam_layer, args.repeats, with_fine)
        return
    for entry in list_models(args.models_dir):
        if entry.available:
            predictor = load_predictor(entry.name, args.models_dir)
            image = to_model_input(photo, entry.input_size).astype(np.float32)
            gradcam_layer = get_architecture(entry.name).gradcam_layer
            compare(entry.name, predictor.model, image, gradcam_layer, args.repeats, with_fine)
    lite0 = create_model("efficientnet_lite0", 224, weights="imagenet")
    image = to_model_input(photo, 224).astype(np.float32)
    compare("efficientnet_lite0 (ImageNet)", lite0, image, "top_relu6", args.repeats, with_fine)


if __name__ == "__main__":
    main()
