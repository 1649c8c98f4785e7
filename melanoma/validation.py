"""Validate the installed models on a clinician's own labelled images: one implementation, two doors.

`python -m train.evaluate` (a labelled folder) and the app's "Validate on your images" page (a zip
held in memory) both call `validate`, so the numbers a researcher and a clinician read are computed
the same way as each other and as the Diagnose page's: every image is decoded by `decode_upload`,
resized by `to_model_input` to each model's input size, scored by `Predictor.score_pixels`
(calibrated, with the card's test-time augmentation) and passed through `Predictor.gate`.

Images the out-of-distribution gate rejects are counted in every metric and reported per model.
The shipped test metrics were measured on every image too, so the numbers stay comparable; and
leaving them out would let the gate hide a melanoma the app would have given no verdict for. The
count says when these images are not what the models were made for, and the metrics then do not
describe them.

A zip is read entirely in memory and checked before anything is decompressed: member count, each
member's declared size and compression ratio, and the total (zipfile itself never inflates a member
beyond its declared size). Images are decoded a chunk at a time, so only one chunk of full-size
pixels is ever held.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.cases import decode_upload
from melanoma.combined import CombinedSpec, mean_probability
from melanoma.data import GENERIC_LABEL_VALUES, GENERIC_LABELS, DataError
from melanoma.images import IMAGE_EXTENSIONS, ImageError, to_model_input
from melanoma.metrics import (
    at_threshold,
    evaluate_predictions,
    threshold_for_sensitivity,
)
from melanoma.store import InstalledModel

# What a zip of dermoscopic images needs, with room to spare; anything beyond is refused unread.
MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 64 * 2**20  # a 50-megapixel image (images.MAX_PIXELS) as a JPEG is far smaller
MAX_TOTAL_BYTES = 2 * 2**30
# JPEG and PNG barely compress (about 1:1); a zip bomb reaches 1:1000. Small members (labels.csv)
# may compress well and cannot hurt, so the ratio is checked above this size only.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECKED_ABOVE = 2**20
SAFE_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
CHUNK = 32  # images decoded and scored together; bounds the full-size pixels held at once
NAMES_SHOWN = 5


@dataclass(frozen=True)
class LabelledImage:
    image_id: str
    name: str  # the file's name in messages: its path in the folder or the zip
    label: int  # 1 = melanoma, 0 = other


@dataclass
class LabelledZip:
    """A checked upload: the labelled images it holds, and what was left out and why."""

    images: list[LabelledImage]
    warnings: list[str]
    archive: zipfile.ZipFile

    def read(self, image: LabelledImage) -> bytes:
        return self.archive.read(image.name)


@dataclass
class ModelResult:
    """One model (or the combined reading) on the validation images, in the same order as `labels`."""

    name: str
    threshold: float
    probabilities: np.ndarray
    in_distribution: np.ndarray  # the gate's verdict per image; the combined reading needs every member's
    metrics: dict  # evaluate_predictions over every scored image, the rejected ones included
    entry: InstalledModel  # the model's card with these metrics, for melanoma.plots

    @property
    def not_assessed(self) -> int:
        return int((~self.in_distribution).sum())


@dataclass
class Validation:
    images: list[LabelledImage]  # the scored ones
    labels: np.ndarray
    skipped: list[str]  # why each image that could not be decoded was left out
    results: list[ModelResult]
    notes: list[str] = field(default_factory=list)

    def not_assessed_melanomas(self, result: ModelResult) -> int:
        return int(((~result.in_distribution) & (self.labels == 1)).sum())


def name_list(names: list[str], shown: int = NAMES_SHOWN) -> str:
    """'a, b, c and 4 more': enough names to find the files, never a wall of them."""
    listed = ", ".join(names[:shown])
    return f"{listed} and {len(names) - shown} more" if len(names) > shown else listed


def _ignored(name: str) -> bool:
    """Folders, macOS resource forks and hidden files (.DS_Store, ._x.jpg) are not part of the data."""
    parts = name.split("/")
    return name.endswith("/") or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts if part)


def _check_sizes(infos: list[zipfile.ZipInfo], upload: str) -> list[str]:
    """Refuse a zip bomb from the central directory alone, before any member is decompressed."""
    if len(infos) > MAX_MEMBERS:
        return [f"{upload}: holds {len(infos):,} files, more than the {MAX_MEMBERS:,} accepted. Split it into several zips."]
    problems = []
    for info in infos:
        if info.flag_bits & 0x1:
            problems.append(f"{info.filename}: encrypted. Zip the images without a password.")
        elif info.compress_type not in SAFE_COMPRESSION:
            problems.append(f"{info.filename}: compressed with method {info.compress_type}, which is refused unread; "
                            "create the zip with standard (deflate) compression.")
        elif info.file_size > MAX_MEMBER_BYTES:
            problems.append(f"{info.filename}: declares {info.file_size:,} bytes uncompressed, more than the "
                            f"{MAX_MEMBER_BYTES:,} accepted for one file.")
        elif info.file_size > RATIO_CHECKED_ABOVE and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            problems.append(f"{info.filename}: declares {info.file_size:,} bytes from {info.compress_size:,} compressed "
                            f"(more than {MAX_COMPRESSION_RATIO}:1), which images never reach: refused as a possible "
                            "zip bomb.")
    total = sum(info.file_size for info in infos)
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{upload}: declares {total:,} bytes uncompressed in all, more than the {MAX_TOTAL_BYTES:,} "
                        "accepted. Split it into several zips.")
    return problems


def _labels_member(names: list[str], upload: str) -> str:
    """labels.csv at the root, or inside the one top-level folder (as a zipped folder has it)."""
    candidates = [n for n in names if posixpath.basename(n).lower() == GENERIC_LABELS and n.count("/") <= 1]
    at_root = [n for n in candidates if "/" not in n]
    if at_root:
        return at_root[0]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise DataError([(f"{upload}: several folders hold a {GENERIC_LABELS} ({name_list(candidates)}); put one "
                         f"{GENERIC_LABELS} at the top of the zip.")])
    deeper = [n for n in names if posixpath.basename(n).lower() == GENERIC_LABELS]
    where = f" (found only deeper: {name_list(deeper)})" if deeper else ""
    raise DataError([(f"{upload}: no {GENERIC_LABELS} at the top of the zip or inside its top-level folder{where}. "
                     f"Add {GENERIC_LABELS} with columns image_id,label (1 = melanoma, 0 = other).")])


def parse_labels(data: bytes, name: str = GENERIC_LABELS) -> dict[str, int]:
    """image_id -> label from a labels.csv, with every problem named by its line (DataError)."""
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError([f"{name}: cannot be read as CSV ({error}). Save it as UTF-8 CSV with columns image_id,label."])
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [column for column in ("image_id", "label") if column not in frame.columns]
    if missing:
        raise DataError([(f"{name}: missing column(s) {', '.join(missing)}; expected image_id,label, found "
                         f"{', '.join(frame.columns) or 'none'}.")])
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    problems = []
    for index, (image_id, value) in enumerate(zip(frame.image_id.str.strip(), frame.label)):
        line = index + 2  # line 1 is the header
        label = GENERIC_LABEL_VALUES.get(str(value).strip().lower())
        if not image_id:
            problems.append(f"{name} line {line}: empty image_id.")
        elif image_id in first_line:
            problems.append(f"{name} line {line}: {image_id} is listed more than once (first on line {first_line[image_id]}).")
        elif label is None:
            problems.append(f"{name} line {line}: label {value!r} for {image_id} is not 0 or 1 (1 = melanoma, 0 = other).")
        else:
            labels[image_id] = label
        first_line.setdefault(image_id, line)
    if problems:
        raise DataError(problems)
    return labels


def match_labels(labels: dict[str, int], files: dict[str, str], where: str) -> tuple[list[LabelledImage], list[str]]:
    """Pair labels with image files by name without extension; the unpaired ones are named in warnings."""
    images = [LabelledImage(image_id, files[image_id], label) for image_id, label in labels.items() if image_id in files]
    warnings = []
    without_image = [image_id for image_id in labels if image_id not in files]
    if without_image:
        warnings.append(f"{len(without_image)} label(s) in {GENERIC_LABELS} have no image in {where}: "
                        f"{name_list(without_image)}. They are left out.")
    without_label = [files[stem] for stem in files if stem not in labels]
    if without_label:
        warnings.append(f"{len(without_label)} image(s) in {where} have no label in {GENERIC_LABELS}: "
                        f"{name_list(without_label)}. They are left out.")
    if not images:
        raise DataError([(f"no image in {where} matches a label in {GENERIC_LABELS}: image_id is the file name without "
                         f"its extension ({', '.join(IMAGE_EXTENSIONS)})."), *warnings])
    present = {image.label for image in images}
    if present != {0, 1}:
        absent = "melanoma (label 1)" if 1 not in present else "other lesion (label 0)"
        raise DataError([(f"no {absent} among the {len(images)} labelled images; ROC AUC, sensitivity and "
                         "specificity need both classes."), *warnings])
    return images, warnings


def read_zip(data: bytes, upload: str = "the upload") -> LabelledZip:
    """Check an uploaded zip and pair its labels.csv with its images, all in memory; raises DataError."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise DataError([f"{upload}: not a zip archive ({error}). Upload a .zip of the images and labels.csv."])
    problems = _check_sizes(infos, upload)
    if problems:
        raise DataError(problems)
    names = [info.filename for info in infos if not _ignored(info.filename)]
    labels_name = _labels_member(names, upload)
    files: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    for name in names:
        stem, extension = posixpath.splitext(posixpath.basename(name))
        if extension.lower() in IMAGE_EXTENSIONS:
            if stem in files:
                repeated.setdefault(stem, [files[stem]]).append(name)
            files.setdefault(stem, name)
    if repeated:
        raise DataError([f"{upload}: image_id {stem} names several files ({', '.join(paths)}); keep one."
                         for stem, paths in repeated.items()])
    labels = parse_labels(archive.read(labels_name), labels_name)
    images, warnings = match_labels(labels, files, upload)
    return LabelledZip(images, warnings, archive)


def _decode_chunk(chunk: list[LabelledImage], read: Callable[[LabelledImage], bytes], pool: ThreadPoolExecutor):
    def decode(image: LabelledImage):
        try:
            return decode_upload(read(image), image.name)
        except OSError as error:
            return ImageError(f"{image.name}: cannot be read ({error}).")

    return list(pool.map(decode, chunk))  # PIL releases the GIL while decoding


def _score_chunk(predictors, pixels: list[np.ndarray], pool: ThreadPoolExecutor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each predictor's calibrated probabilities and gate verdicts for one chunk of decoded images.

    Exactly what `Predictor.probabilities` and `Predictor.gate` do, with each input size's resize
    done once for the models that share it, and the gate's features once for the extractor they share.
    """
    views: dict[int, np.ndarray] = {}
    features: dict[int, np.ndarray | None] = {}  # id(extractor) -> this chunk's features
    scored = []
    for predictor in predictors:
        size = predictor.serving.input_size
        if size not in views:
            views[size] = np.stack(list(pool.map(to_model_input, pixels, [size] * len(pixels))))
        extractor = id(predictor.features)
        if extractor not in features:
            features[extractor] = predictor.gate_features(pixels)
        gate = predictor.gate(pixels, views[size], features[extractor])
        scored.append((predictor.score_pixels(views[size]), np.array([g.in_distribution for g in gate], bool)))
    return scored


def _result(name: str, entry: InstalledModel, threshold: float, labels: np.ndarray, probabilities: np.ndarray,
            in_distribution: np.ndarray) -> ModelResult:
    metrics = evaluate_predictions(labels, probabilities, threshold)
    return ModelResult(name, threshold, probabilities, in_distribution, metrics,
                       dataclasses.replace(entry, name=name, metrics=metrics, holdout_metrics={}))


def validate(predictors: list, images: list[LabelledImage], read: Callable[[LabelledImage], bytes],
             combined: CombinedSpec | None = None, progress: Callable[[int, int], None] | None = None,
             workers: int | None = None) -> Validation:
    """Score labelled images with every predictor (and their validated combination) and measure them.

    An image that does not decode is named in `skipped` and the others are scored. The combined
    reading is added when every member of `combined` is among the predictors. Raises DataError when
    the scored images lack a class (no AUC without both).
    """
    scored_images: list[LabelledImage] = []
    skipped: list[str] = []
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = []
    total = len(images)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for start in range(0, total, CHUNK):
            chunk = images[start:start + CHUNK]
            decoded = _decode_chunk(chunk, read, pool)
            skipped += [str(result) for result in decoded if isinstance(result, ImageError)]
            good = [(image, result) for image, result in zip(chunk, decoded) if not isinstance(result, ImageError)]
            if good:
                scored_images += [image for image, _ in good]
                parts.append(_score_chunk(predictors, [result.pixels for _, result in good], pool))
            if progress:
                progress(min(start + CHUNK, total), total)
    labels = np.array([image.label for image in scored_images], int)
    if set(labels.tolist()) != {0, 1}:
        raise DataError([(f"{len(scored_images)} of {total} images could be scored and they do not hold both classes; "
                         "ROC AUC, sensitivity and specificity need melanomas and other lesions."), *skipped])
    results = []
    for index, predictor in enumerate(predictors):
        probabilities = np.concatenate([part[index][0] for part in parts])
        in_distribution = np.concatenate([part[index][1] for part in parts])
        results.append(_result(predictor.name, predictor.entry, predictor.threshold, labels, probabilities, in_distribution))
    notes = []
    if combined is not None:
        by_name = {result.name: result for result in results}
        missing = [member for member in combined.members if member not in by_name]
        if missing:
            notes.append(f"No combined reading: its member(s) {', '.join(missing)} could not be loaded.")
        else:
            members = [by_name[member] for member in combined.members]
            entry = InstalledModel(name="combined", folder=predictors[0].entry.folder.parent,
                                   card={"input_size": 0, "threshold": combined.threshold})
            results.append(_result(f"combined ({' + '.join(combined.members)})", entry, combined.threshold, labels,
                                   mean_probability([m.probabilities for m in members]),
                                   np.logical_and.reduce([m.in_distribution for m in members])))
    return Validation(scored_images, labels, skipped, results, notes)


def validate_folder(predictors: list, data, combined: CombinedSpec | None = None,
                    progress: Callable[[int, int], None] | None = None) -> Validation:
    """`validate` on melanoma.data's LabelledImages (any of the three folder layouts)."""
    images = [LabelledImage(row.image_id, row.path, int(row.label)) for row in data.table.itertuples()]
    return validate(predictors, images, lambda image: Path(image.name).read_bytes(), combined, progress)


def operating_point(labels: np.ndarray, probabilities: np.ndarray, target_sensitivity: float) -> dict:
    """The highest threshold whose sensitivity on these images is at least the target, and its rates.

    The same rule that chose each shipped threshold on its validation split (train.run,
    train.combine), applied to the clinician's images.
    """
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1]; got {target_sensitivity}.")
    threshold = threshold_for_sensitivity(labels, probabilities, target_sensitivity)
    rates = at_threshold(labels, probabilities, threshold)
    return {"threshold": threshold, "sensitivity": rates["sensitivity"], "specificity": rates["specificity"]}


def target_table(validation: Validation, target_sensitivity: float) -> pd.DataFrame:
    """Per model: the shipped threshold's rates beside the threshold that reaches the target on these images."""
    rows = []
    for result in validation.results:
        shipped = result.metrics["at_threshold"]
        point = operating_point(validation.labels, result.probabilities, target_sensitivity)
        rows.append({"Model": result.name, "Shipped threshold": result.threshold,
                     "Sensitivity @ shipped": shipped["sensitivity"], "Specificity @ shipped": shipped["specificity"],
                     f"Threshold for sensitivity ≥ {target_sensitivity:.0%}": point["threshold"],
                     "Sensitivity there": point["sensitivity"], "Specificity there": point["specificity"]})
    return pd.DataFrame(rows)


def per_image_table(validation: Validation) -> pd.DataFrame:
    """One row per scored image: its label, and each model's calibrated probability and gate verdict."""
    table = pd.DataFrame({"image_id": [image.image_id for image in validation.images],
                          "file": [image.name for image in validation.images], "label": validation.labels})
    for result in validation.results:
        table[f"{result.name} probability"] = result.probabilities
        table[f"{result.name} assessed"] = result.in_distribution
    return table
