"""What the combined reading costs against its best member alone, warm, in one process.

    .venv/bin/python benchmarks/combined.py [--images 100] [--baseline efficientnet_lite0] [--repeats 3]

Scores one image, then `--images` images, with `python -m melanoma predict`'s code path
(`read`: decode once, resize once per input size, test-time augmentation in the same batches,
one feature extraction for the gates) for the combined reading and for the baseline model, after
a warm-up call of each. Prints the median seconds, the ratio combined / baseline, the target
(one image in at most 1.0 s) and the process's peak resident memory with every member loaded.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from melanoma.combined import COMBINED_NAME  # noqa: E402
from melanoma.framework import import_tensorflow_quietly  # noqa: E402
from melanoma.images import read_image  # noqa: E402
from melanoma.inference import load_predictor  # noqa: E402
from melanoma.store import add_models_dir_option  # noqa: E402

TARGET_ONE_IMAGE_SECONDS = 1.0


def median_seconds(predictor, images: list, repeats: int) -> float:
    predictor.read(images[:1])  # warm: graphs traced, weights in memory
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.read(images)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_models_dir_option(parser)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "ham10000"))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--baseline", default="efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import_tensorflow_quietly()
    paths = sorted((Path(args.data_dir) / "images").glob("*.jpg"))[: args.images]
    images = [read_image(str(path)).pixels for path in paths]
    combined = load_predictor(COMBINED_NAME, args.models_dir)
    baseline = load_predictor(args.baseline, args.models_dir)
    print(
        f"combined reading of {', '.join(combined.spec.members)}, reading {len(combined.members)} models "
        f"({', '.join(m.name for m in combined.members)}); baseline {baseline.name}; "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}"
    )
    for count in (1, len(images)):
        ours, base = (
            median_seconds(combined, images[:count], args.repeats),
            median_seconds(baseline, images[:count], args.repeats),
        )
        target = (
            f"; target {TARGET_ONE_IMAGE_SECONDS:.1f} s: {'met' if ours <= TARGET_ONE_IMAGE_SECONDS else 'MISSED'}"
            if count == 1
            else ""
        )
        print(
            f"{count:>4} image(s): combined {ours:.3f} s, {baseline.name} {base:.3f} s, ratio {ours / base:.2f}{target}"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
