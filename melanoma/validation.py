"""Validate the installed models on a clinician's own labelled images: one implementation, two doors.

`python -m train.evaluate` (a labelled folder) and the app's "Validate on your images" page (a zip
held in memory) both call `validate`, so the numbers a researcher and a clinician read are computed
the same way as each other and as the Diagnose page's: every image is decoded by `decode_upload`,
resized to each model's input size and scored by `melanoma.inference.read_together` (calibrated,
with the card's test-time augmentation, and passed through each model's gate).

Images the out-of-distribution gate rejects are counted in every metric and reported per model.
The shipped test metrics were measured on every image too, so the numbers stay comparable; and
leaving them out would let the gate hide a melanoma the app would have given no verdict for. The
count says when these images are not what the models were made for, and the metrics then do not
describe them.

A zip is read entirely in memory and checked before anything is decompressed: member count, each
member's declared size and compression ratio, and the total (zipfile itself never inflates a member
beyond its declared size). Images are decoded a chunk at a time, so only one chunk of full-size
pixels is ever held.

Where the labels give each image's diagnosis (a `dx` column in labels.csv, or ISIC 2018 Task 3's
one-hot ground truth), every model's metrics also hold the share of each diagnosis flagged at its
melanoma threshold, and a diagnosis model's its seven-class metrics too, under the keys that
metrics.json holds them after training.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import zipfile
import zlib
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma import diagnoses
from melanoma.cases import decode_upload
from melanoma.combined import CombinedSpec, combined_scores
from melanoma.data import (
    DX_HOW,
    GENERIC_LABEL_VALUES,
    GENERIC_LABELS,
    IMAGE_ID_RULE,
    DataError,
    index_images,
    is_labels_file,
    name_list,
    read_table,
)
from melanoma.data import NAMES_SHOWN as NAMES_SHOWN  # the Validate page lists names as many at a time
from melanoma.images import ImageError
from melanoma.inference import Scores, read_together
from melanoma.measured import Measured
from melanoma.metrics import (
    at_threshold,
    evaluate_diagnoses,
    evaluate_predictions,
    flagged_by_diagnosis,
    threshold_for_sensitivity,
)

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
# What to do when the combined reading's models are not all read (each one that failed to load says why).
COMBINE_AGAIN = (
    "install or restore those models, or re-run python -m train.combine --data-dir DIR to combine the installed ones"
)


@dataclass(frozen=True)
class LabelledImage:
    image_id: str
    name: str  # the file's name in messages: its path in the folder or the zip
    label: int  # 1 = melanoma, 0 = other
    dx: str = ""  # the diagnosis code (one of diagnoses.CODES); empty when the labels do not say


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
    metrics: dict  # evaluate_predictions over every scored image, the rejected ones included, and by diagnosis
    measured: Measured  # the model or combination with these metrics, as melanoma.plots shows it
    diagnoses: np.ndarray | None = None  # a diagnosis model's calibrated (n, 7) probabilities
    predicted: np.ndarray | None = None  # its predicted class per image, as the multi-class metrics count it

    @property
    def not_assessed(self) -> int:
        return int((~self.in_distribution).sum())


@dataclass
class Validation:
    images: list[LabelledImage]  # the scored ones
    labels: np.ndarray
    codes: np.ndarray  # each scored image's diagnosis code, "" where the labels do not say
    skipped: list[str]  # why each image that could not be decoded was left out
    results: list[ModelResult]
    notes: list[str] = field(default_factory=list)

    @property
    def has_diagnoses(self) -> bool:
        """Whether every scored image has its diagnosis, as the results by diagnosis need."""
        return bool((self.codes != "").all())

    def not_assessed_melanomas(self, result: ModelResult) -> int:
        return int(((~result.in_distribution) & (self.labels == 1)).sum())


def _ignored(name: str) -> bool:
    """Folders, macOS resource forks and hidden files (.DS_Store, ._x.jpg) are not part of the data."""
    parts = name.split("/")
    return name.endswith("/") or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts if part)


def _check_sizes(infos: list[zipfile.ZipInfo], upload: str) -> list[str]:
    """Refuse a zip bomb from the central directory alone, before any member is decompressed."""
    if len(infos) > MAX_MEMBERS:
        return [
            f"{upload}: holds {len(infos):,} files, more than the {MAX_MEMBERS:,} accepted. Split it into several zips."
        ]
    problems = []
    for info in infos:
        if info.flag_bits & 0x1:
            problems.append(f"{info.filename}: encrypted. Zip the images without a password.")
        elif info.compress_type not in SAFE_COMPRESSION:
            problems.append(
                f"{info.filename}: compressed with method {info.compress_type}, which is refused unread; "
                "create the zip with standard (deflate) compression."
            )
        elif info.file_size > MAX_MEMBER_BYTES:
            problems.append(
                f"{info.filename}: declares {info.file_size:,} bytes uncompressed, more than the "
                f"{MAX_MEMBER_BYTES:,} accepted for one file."
            )
        elif info.file_size > RATIO_CHECKED_ABOVE and info.file_size > MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            problems.append(
                f"{info.filename}: declares {info.file_size:,} bytes from {info.compress_size:,} compressed "
                f"(more than {MAX_COMPRESSION_RATIO}:1), which images never reach: refused as a possible "
                "zip bomb."
            )
    total = sum(info.file_size for info in infos)
    if total > MAX_TOTAL_BYTES:
        problems.append(
            f"{upload}: declares {total:,} bytes uncompressed in all, more than the {MAX_TOTAL_BYTES:,} "
            "accepted. Split it into several zips."
        )
    return problems


def _is_labels_file(name: str) -> bool:
    """labels.csv or ISIC 2018 Task 3's ground truth, in any case."""
    filename = posixpath.basename(name)
    return is_labels_file("generic", filename) or is_labels_file("isic2018", filename)


def _labels_member(names: list[str], upload: str) -> str:
    """The labels file at the root, or inside the one top-level folder (as a zipped folder has it)."""
    candidates = [n for n in names if _is_labels_file(n) and n.count("/") <= 1]
    chosen = [n for n in candidates if "/" not in n] or candidates
    if len(chosen) == 1:
        return chosen[0]
    if chosen:
        raise DataError(
            [
                (
                    f"{upload}: holds several labels files ({name_list(chosen)}); keep one {GENERIC_LABELS} "
                    "(or ISIC 2018 Task 3 ground truth) at the top of the zip."
                )
            ]
        )
    deeper = [n for n in names if _is_labels_file(n)]
    where = f" (found only deeper: {name_list(deeper)})" if deeper else ""
    raise DataError(
        [
            (
                f"{upload}: no {GENERIC_LABELS} at the top of the zip or inside its top-level folder{where}. "
                f"Add {GENERIC_LABELS} with columns image_id,label (1 = melanoma, 0 = other) and, where known, "
                f"dx ({diagnoses.ALLOWED_TEXT}); or ISIC 2018 Task 3's one-hot ground truth CSV."
            )
        ]
    )


def _missing_columns(frame: pd.DataFrame, name: str, missing: list[str], expected: str) -> DataError:
    return DataError(
        [
            (
                f"{name}: missing column(s) {', '.join(missing)}; expected {expected}, found "
                f"{', '.join(frame.columns) or 'none'}."
            )
        ]
    )


def _one_hot_as_dx(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """ISIC 2018 Task 3's ground truth (image, then a column per diagnosis holding 1.0 for its own) as
    image_id,dx, so that it is checked and matched like a labels.csv with a dx column."""
    expected = ["image", *diagnoses.CODES]
    missing = [column for column in expected if column not in frame]
    if missing:
        raise _missing_columns(frame, name, missing, ",".join(expected) + " (ISIC 2018 Task 3's ground truth)")
    values = frame[list(diagnoses.CODES)].apply(pd.to_numeric, errors="coerce")
    one_hot = values.isin([0.0, 1.0]).all(axis=1) & (values.sum(axis=1) == 1)
    problems = [
        f"{name} line {index + 2}: {frame.image[index]} is not one-hot over {diagnoses.ALLOWED_TEXT} "
        "(one 1.0 and six 0.0)."
        for index in frame.index[~one_hot]
    ]
    if problems:
        raise DataError(problems)
    return pd.DataFrame({"image_id": frame.image, "dx": values.idxmax(axis=1)})


def _label_row(image_id: str, value: str | None, written_dx: str, place: str) -> tuple[int, str] | str:
    """(label, dx) for one row, or what is wrong with it. Read as melanoma.data reads a folder's
    labels.csv: label is 1 exactly when dx is MEL, and follows from dx where there is no label column
    (`value` None)."""
    dx = diagnoses.parse_code(written_dx) if written_dx.strip() else ""
    if dx is None:
        return (
            f"{place}: unknown dx {written_dx!r} for {image_id}; expected one of {diagnoses.ALLOWED_TEXT} "
            "(any case), or an empty value where the diagnosis is not known."
        )
    if value is None:
        return (
            (int(dx == diagnoses.MELANOMA), dx)
            if dx
            else (
                f"{place}: no dx for {image_id}, and no label column to tell whether it is a melanoma; give its dx "
                f"({diagnoses.ALLOWED_TEXT}) or add a label column (1 = melanoma, 0 = other)."
            )
        )
    label = GENERIC_LABEL_VALUES.get(value.strip().lower())
    if label is None:
        return f"{place}: label {value!r} for {image_id} is not 0 or 1 (1 = melanoma, 0 = other)."
    if dx and label != int(dx == diagnoses.MELANOMA):
        return (
            f"{place}: label {value!r} contradicts dx {dx!r} for {image_id}; label is 1 exactly when dx is "
            f"{diagnoses.MELANOMA}."
        )
    return label, dx


def parse_labels(data: bytes, name: str = GENERIC_LABELS) -> dict[str, tuple[int, str]]:
    """image_id -> (label, dx) from a labels.csv or ISIC 2018 Task 3's ground truth, with every problem
    named by its line (DataError); dx is "" where the file does not give it."""
    frame = read_table(io.BytesIO(data), name)
    if is_labels_file("isic2018", posixpath.basename(name)):
        frame = _one_hot_as_dx(frame, name)
    missing = ([] if "image_id" in frame else ["image_id"]) + ([] if {"label", "dx"} & set(frame) else ["label"])
    if missing:
        raise _missing_columns(
            frame,
            name,
            missing,
            f"image_id,label (1 = melanoma, 0 = other), image_id,dx ({diagnoses.ALLOWED_TEXT}) or both",
        )
    values = frame["label"] if "label" in frame else [None] * len(frame)
    written_dx = frame["dx"] if "dx" in frame else [""] * len(frame)
    labels: dict[str, tuple[int, str]] = {}
    first_line: dict[str, int] = {}
    problems = []
    for index, (image_id, value, dx) in enumerate(zip(frame.image_id, values, written_dx)):
        line = index + 2  # line 1 is the header
        row = _label_row(image_id, value, dx, f"{name} line {line}")
        if not image_id:
            problems.append(f"{name} line {line}: empty image_id.")
        elif image_id in first_line:
            problems.append(
                f"{name} line {line}: {image_id} is listed more than once (first on line {first_line[image_id]})."
            )
        elif isinstance(row, str):
            problems.append(row)
        else:
            labels[image_id] = row
        first_line.setdefault(image_id, line)
    if problems:
        raise DataError(problems)
    return labels


def match_labels(
    labels: dict[str, tuple[int, str]], files: dict[str, str], where: str, labels_file: str = GENERIC_LABELS
) -> tuple[list[LabelledImage], list[str]]:
    """Pair labels with image files by name without extension; the unpaired ones are named in warnings."""
    images = [
        LabelledImage(image_id, files[image_id], label, dx)
        for image_id, (label, dx) in labels.items()
        if image_id in files
    ]
    warnings = []
    without_image = [image_id for image_id in labels if image_id not in files]
    if without_image:
        warnings.append(
            f"{len(without_image)} label(s) in {labels_file} have no image in {where}: "
            f"{name_list(without_image)}. They are left out."
        )
    without_label = [files[stem] for stem in files if stem not in labels]
    if without_label:
        warnings.append(
            f"{len(without_label)} image(s) in {where} have no label in {labels_file}: "
            f"{name_list(without_label)}. They are left out."
        )
    if not images:
        raise DataError(
            [
                f"no image in {where} matches a label in {labels_file}: {IMAGE_ID_RULE}.",
                *warnings,
            ]
        )
    present = {image.label for image in images}
    if present != {0, 1}:
        absent = "melanoma (label 1)" if 1 not in present else "other lesion (label 0)"
        raise DataError(
            [
                (
                    f"no {absent} among the {len(images)} labelled images; ROC AUC, sensitivity and "
                    "specificity need both classes."
                ),
                *warnings,
            ]
        )
    return images, warnings


# What reading one file can raise: a damaged zip member fails its CRC check or decompression.
UNREADABLE = (OSError, EOFError, zipfile.BadZipFile, zlib.error)


def read_zip(data: bytes, upload: str = "the upload") -> LabelledZip:
    """Check an uploaded zip and pair its labels file with its images, all in memory; raises DataError."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise DataError(
            [f"{upload}: not a zip archive ({error}). Upload a .zip of the images and labels.csv."]
        ) from None
    problems = _check_sizes(infos, upload)
    if problems:
        raise DataError(problems)
    names = [info.filename for info in infos if not _ignored(info.filename)]
    labels_name = _labels_member(names, upload)

    def head(name: str, size: int) -> bytes:
        try:
            with archive.open(name) as member:
                return member.read(size)
        except UNREADABLE:  # a damaged member is no DICOM file to find by its preamble
            return b""

    files, repeated = index_images(names, head, upload)
    if repeated:
        raise DataError(repeated)
    try:
        labels_data = archive.read(labels_name)
    except UNREADABLE as error:
        raise DataError(
            [
                f"{upload}: {labels_name} is damaged in the zip ({error}). Zip the images and labels again and "
                "upload that."
            ]
        ) from None
    labels = parse_labels(labels_data, labels_name)
    images, warnings = match_labels(labels, files, upload, posixpath.basename(labels_name))
    return LabelledZip(images, warnings, archive)


def _decode_chunk(chunk: list[LabelledImage], read: Callable[[LabelledImage], bytes], pool: ThreadPoolExecutor):
    def decode(image: LabelledImage):
        try:
            return decode_upload(read(image), image.name)
        except UNREADABLE as error:
            return ImageError(f"{image.name}: cannot be read ({error}).")

    return list(pool.map(decode, chunk))  # PIL releases the GIL while decoding


def _score_chunk(predictors, pixels: list[np.ndarray], pool: ThreadPoolExecutor) -> list[tuple[Scores, np.ndarray]]:
    """Each predictor's calibrated readings and gate verdicts for one chunk of decoded images
    (`read_together`: one resize per input size, on the pool's threads; one gate feature pass)."""
    return [
        (reading.scores, np.array([gate.in_distribution for gate in reading.gates], bool))
        for reading in read_together(predictors, pixels, pool.map)
    ]


def _joined(chunks: list[Scores]) -> Scores:
    """One predictor's readings of every chunk, in order."""
    melanoma = np.concatenate([chunk.melanoma for chunk in chunks])
    if chunks[0].diagnoses is None:
        return Scores(melanoma)
    return Scores(
        melanoma, *(np.concatenate([getattr(c, part) for c in chunks]) for part in ("diagnoses", "equal_prior"))
    )


def _result(
    shown: Measured,
    labels: np.ndarray,
    scores: Scores,
    in_distribution: np.ndarray,
    codes: np.ndarray | None,
) -> ModelResult:
    """The metrics of one model (or the combined reading); where `codes` gives every image's diagnosis,
    also those by diagnosis, under the keys metrics.json holds them, so the pages read both alike."""
    metrics = evaluate_predictions(labels, scores.melanoma, shown.threshold, seed=shown.seed)
    if codes is not None:
        metrics["flagged_by_diagnosis"] = flagged_by_diagnosis(codes, scores.melanoma, shown.threshold)
        if scores.diagnoses is not None:
            metrics["diagnoses"] = evaluate_diagnoses(
                codes, scores.diagnoses, shown.malignant_threshold, seed=shown.seed, predicted=scores.predicted
            )
    return ModelResult(
        shown.name,
        shown.threshold,
        scores.melanoma,
        in_distribution,
        metrics,
        dataclasses.replace(shown, metrics=metrics),
        scores.diagnoses,
        scores.predicted,
    )


def _diagnosis_note(codes: np.ndarray, predictors: list) -> str | None:
    """Why the results by diagnosis are missing, when some labels or a diagnosis model ask for them;
    None when every image has its diagnosis, or when binary labels meet melanoma models only (as before)."""
    known = int((codes != "").sum())
    models = [predictor.name for predictor in predictors if predictor.is_diagnosis]
    if known == len(codes) or not (known or models):
        return None
    missing = "the share of each diagnosis flagged" + (
        f" and the multi-class metrics of {', '.join(models)}" if models else ""
    )
    return (
        f"Left out: {missing}. They need every image's diagnosis, and {known} of {len(codes)} scored images "
        f"have one. Give each image its dx: {DX_HOW}."
    )


def validate(
    predictors: list,
    images: list[LabelledImage],
    read: Callable[[LabelledImage], bytes],
    combined: CombinedSpec | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    installed: Collection[str] = (),
) -> Validation:
    """Score labelled images with every predictor (and their validated combination) and measure them.

    An image that does not decode is named in `skipped` and the others are scored. The combined
    reading is added when every model it reads (`combined.models`) is among the predictors; a note
    names each one that is not, as failed to load where it is `installed` (a folder in the models
    folder), else as not installed. The results by
    diagnosis are added when every scored image has its dx, and a note says why when they are not.
    Raises DataError when the scored images lack a class (no AUC without both).
    """
    scored_images: list[LabelledImage] = []
    skipped: list[str] = []
    parts: list[list[tuple[Scores, np.ndarray]]] = []
    total = len(images)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for start in range(0, total, CHUNK):
            chunk = images[start : start + CHUNK]
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
        raise DataError(
            [
                (
                    f"{len(scored_images)} of {total} images could be scored and they do not hold both classes; "
                    "ROC AUC, sensitivity and specificity need melanomas and other lesions."
                ),
                *skipped,
            ]
        )
    codes = np.array([image.dx for image in scored_images], str)
    note = _diagnosis_note(codes, predictors)
    known = codes if (codes != "").all() else None
    results, scores = [], {}
    for index, predictor in enumerate(predictors):
        scores[predictor.name] = _joined([part[index][0] for part in parts])
        in_distribution = np.concatenate([part[index][1] for part in parts])
        measured = Measured.of_model(predictor.entry, metrics={})
        results.append(_result(measured, labels, scores[predictor.name], in_distribution, known))
    notes = [note] if note else []
    if combined is not None:
        by_name = {result.name: result for result in results}
        missing = [member for member in combined.models if member not in by_name]
        if missing and not set(missing) & set(combined.members):  # as the Diagnose page: the mean, no differential
            notes.append(
                "The combined reading has no averaged differential: of its differential's models, "
                f"{_why_unread(missing, installed)}. To average it, {COMBINE_AGAIN}."
            )
            combined, missing = dataclasses.replace(combined, differential=None), []
        if missing:
            melanoma = [member for member in missing if member in combined.members]
            others = [member for member in missing if member not in combined.members]
            differential = f"; of its differential's, {_why_unread(others, installed)}" if others else ""
            notes.append(
                f"No combined reading: of its melanoma members, {_why_unread(melanoma, installed)}{differential}. "
                f"To measure it, {COMBINE_AGAIN}."
            )
        else:
            notes.append(f"The combined reading's row, {combined.legend}")
            results.append(
                _result(
                    Measured.of_combined(combined, metrics={}),
                    labels,
                    combined_scores(combined, scores),
                    np.logical_and.reduce([by_name[member].in_distribution for member in combined.models]),
                    known,
                )
            )
    return Validation(scored_images, labels, codes, skipped, results, notes)


def _why_unread(names: list[str], installed: Collection[str]) -> str:
    """'a is not installed and b, c failed to load': why these models were not read."""
    absent = [name for name in names if name not in installed]
    failed = [name for name in names if name in installed]
    reasons = []
    if absent:
        reasons.append(f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} not installed")
    if failed:
        reasons.append(f"{', '.join(failed)} failed to load")
    return " and ".join(reasons)


def validate_folder(
    predictors: list, data, combined: CombinedSpec | None = None, progress: Callable[[int, int], None] | None = None
) -> Validation:
    """`validate` on melanoma.data's LabelledImages (any of the three folder layouts, with their diagnoses)."""
    images = [LabelledImage(row.image_id, row.path, int(row.label), row.dx) for row in data.table.itertuples()]
    return validate(predictors, images, lambda image: Path(image.name).read_bytes(), combined, progress)


def operating_point(labels: np.ndarray, probabilities: np.ndarray, target_sensitivity: float) -> dict:
    """The highest threshold whose sensitivity on these images is at least the target, and its rates.

    The same rule that chose each shipped threshold on its validation split (train.run,
    train.combine), applied to the clinician's images.
    """
    threshold = threshold_for_sensitivity(labels, probabilities, target_sensitivity)
    rates = at_threshold(labels, probabilities, threshold)
    return {"threshold": threshold, "sensitivity": rates["sensitivity"], "specificity": rates["specificity"]}


def target_table(validation: Validation, target_sensitivity: float) -> pd.DataFrame:
    """Per model: the shipped threshold's rates beside the threshold that reaches the target on these images."""
    rows = []
    for result in validation.results:
        shipped = result.metrics["at_threshold"]
        point = operating_point(validation.labels, result.probabilities, target_sensitivity)
        rows.append(
            {
                "Model": result.name,
                "Shipped threshold": result.threshold,
                "Sensitivity @ shipped": shipped["sensitivity"],
                "Specificity @ shipped": shipped["specificity"],
                f"Threshold for sensitivity ≥ {target_sensitivity:.0%}": point["threshold"],
                "Sensitivity there": point["sensitivity"],
                "Specificity there": point["specificity"],
            }
        )
    return pd.DataFrame(rows)


def per_image_table(validation: Validation) -> pd.DataFrame:
    """One row per scored image: its label (and diagnosis, where known), and each model's calibrated
    probability and gate verdict; for a diagnosis model also the diagnosis the multi-class metrics
    count (the most probable under equal class priors), the most probable calibrated one (the first
    of the differential a clinician reads; it favours the common diagnoses) and P(skin cancer)."""
    table = pd.DataFrame(
        {
            "image_id": [image.image_id for image in validation.images],
            "file": [image.name for image in validation.images],
            "label": validation.labels,
        }
    )
    if validation.has_diagnoses:
        table["dx"] = validation.codes
    codes = np.array(diagnoses.CODES)
    for result in validation.results:
        table[f"{result.name} probability"] = result.probabilities
        table[f"{result.name} assessed"] = result.in_distribution
        if result.diagnoses is not None:
            table[f"{result.name} predicted diagnosis"] = codes[result.predicted]
            table[f"{result.name} most probable diagnosis"] = codes[result.diagnoses.argmax(axis=1)]
            table[f"{result.name} malignant probability"] = diagnoses.malignant_probability(result.diagnoses)
    return table
