"""Occlusion sensitivity and Grad-CAM: ours against tf-explain, same model and image, same process.

    .venv/bin/python benchmarks/occlusion.py [--size 299] [--patch 20] [--repeats 3] [--models ...]

Random weights are fine for timing. Prints median seconds, the ratio (tf-explain / ours, > 1
means ours is faster), ours without incremental inference (every occluded image run whole), and
the time to the progressive mode's first (coarse) map.
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

from melanoma.architectures import architecture_names, create_model, get_architecture  # noqa: E402
from melanoma.explain import grad_cam, occlusion_sensitivity, progressive_occlusion  # noqa: E402


def median_seconds(function, repeats: int) -> float:
    """Median wall time; the function's own printing (Keras progress bars) is kept off the report."""
    times = []
    for _ in range(repeats):
        with contextlib.redirect_stdout(io.StringIO()):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--patch", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(architecture_names()))
    args = parser.parse_args()
    from tf_explain.core.grad_cam import GradCAM
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3)).astype(np.float32)
    print(f"{'model':<16}{'method':<12}{'tf-explain s':>13}{'ours s':>9}{'ratio':>8}   whole-image s   first coarse map s")
    for name in args.models.split(","):
        architecture = get_architecture(name)
        model = create_model(name, args.size)
        # Warm-up: both sides trace their graphs once, outside the timing.
        median_seconds(lambda: OcclusionSensitivity().get_sensitivity_map(model, image, 0, args.patch), 1)
        median_seconds(lambda: occlusion_sensitivity(model, image, args.patch), 1)
        median_seconds(lambda: occlusion_sensitivity(model, image, args.patch, incremental=False), 1)
        theirs = median_seconds(lambda: OcclusionSensitivity().get_sensitivity_map(model, image, 0, args.patch), args.repeats)
        ours = median_seconds(lambda: occlusion_sensitivity(model, image, args.patch), args.repeats)
        whole = median_seconds(lambda: occlusion_sensitivity(model, image, args.patch, incremental=False), args.repeats)
        coarse = median_seconds(lambda: next(progressive_occlusion(model, image, args.patch)), args.repeats)
        print(f"{name:<16}{'occlusion':<12}{theirs:>13.2f}{ours:>9.2f}{theirs / ours:>8.2f}{whole:>16.2f}   {coarse:.2f}", flush=True)
        explainer = GradCAM()
        explain_theirs = lambda: explainer.explain((image[None], None), model, class_index=0, layer_name=architecture.gradcam_layer)  # noqa: E731
        explain_ours = lambda: grad_cam(model, image, architecture.gradcam_layer)  # noqa: E731
        explain_theirs(), explain_ours()
        theirs, ours = median_seconds(explain_theirs, args.repeats), median_seconds(explain_ours, args.repeats)
        print(f"{name:<16}{'grad-cam':<12}{theirs:>13.2f}{ours:>9.2f}{theirs / ours:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
