"""Training images/s per architecture: the real input pipeline against in-memory synthetic input.

    .venv/bin/python benchmarks/training_throughput.py [--data-dir ../shared/data/ham10000] [--size 128] [--steps 20]

Both run in the same process on the same model; the ratio synthetic / real shows how much the
input pipeline (decoding, augmentation) stalls training: 1.0 means it never does. Without a
data folder, generated JPEGs are written to a temporary folder and read through the same path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from melanoma.config import get_recipe  # noqa: E402
from melanoma.data import load_labelled_images, load_pixels  # noqa: E402
from melanoma.models.architectures import architecture_names, create_model  # noqa: E402
from tests.synthetic import make_dataset as make_synthetic_folder  # noqa: E402
from train.pipeline import training_batches  # noqa: E402


def images_per_second(model: keras.Model, dataset: tf.data.Dataset, steps: int, batch_size: int) -> float:
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)  # trace once, outside the timing
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=1024, help="images read from the data folder")
    parser.add_argument("--models", default=",".join(architecture_names()))
    args = parser.parse_args()
    print(f"devices: {[d.name for d in tf.config.list_physical_devices()]}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data_dir or make_synthetic_folder(Path(scratch), "generic", n=256)
        table = load_labelled_images(folder).table.head(args.images)
        started = time.perf_counter()
        pixels = load_pixels(list(table.path), args.size)
        print(f"decode + resize: {len(pixels) / (time.perf_counter() - started):.0f} images/s ({len(pixels)} images)")
    labels = table.label.to_numpy()
    recipe = get_recipe("cpu")
    real = training_batches(pixels, labels, args.batch_size, recipe, seed=0)
    batch = tf.random.uniform((args.batch_size, args.size, args.size, 3), 0, 255)
    synthetic = tf.data.Dataset.from_tensors((batch, tf.zeros((args.batch_size,)))).repeat()
    print(f"{'model':<16}{'real img/s':>11}{'synthetic img/s':>17}{'ratio':>7}")
    for name in args.models.split(","):
        model = create_model(name, args.size, colour_constancy=recipe.colour_constancy)
        model.compile(optimizer="adam", loss="binary_crossentropy")
        fast = images_per_second(model, synthetic, args.steps, args.batch_size)
        measured = images_per_second(model, real, args.steps, args.batch_size)
        print(f"{name:<16}{measured:>11.1f}{fast:>17.1f}{fast / measured:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
