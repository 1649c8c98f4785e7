"""Labelled image collections in the three layouts researchers arrive with, checked up front.

- `isic2018`: ISIC 2018 Task 3's ground truth, ISIC2018_Task3_Training_GroundTruth.csv (or its
  Validation or Test set's; one-hot MEL, NV, ...) and, if present,
  ISIC2018_Task3_Training_LesionGroupings.csv (image, lesion_id, ...);
- `ham10000`: HAM10000_metadata.csv (dx == "mel" is melanoma; lesion_id groups images);
- `generic`: labels.csv with image_id,label and optional group, source and dx columns (dx: one
  of the seven diagnosis codes; with dx, label may be left out and follows from it).

Every table also carries each image's diagnosis code (`dx`, one of `melanoma.diagnoses.CODES`),
empty where the labels file names none: the binary melanoma label is read everywhere, the
diagnosis where a diagnosis model needs it.

Every problem is collected and reported at once, naming the file and the CSV line, before any
training starts: a researcher fixes a labels file once, not once per crash.

Labels files are read as the Validate page reads an upload's (`read_table`), and image files are
matched to their image_id by the same rule (`index_images`), so a folder and its zip agree.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight

from melanoma import diagnoses
from melanoma.images import (
    DICOM_MAGIC,
    DICOM_MAGIC_OFFSET,
    IMAGE_EXTENSIONS,
    ImageError,
    read_image,
    to_model_input,
)

# ISIC 2018 Task 3's one-hot ground truth, as its training, validation and test sets name it (any case).
ISIC_GROUND_TRUTH = re.compile(r"isic2018_task3_(training|validation|test)_groundtruth\.csv", re.IGNORECASE)
ISIC_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
HAM_METADATA = "HAM10000_metadata.csv"
GENERIC_LABELS = "labels.csv"
SPLIT_FILE = "split.csv"  # beside each trained model: image_id, group, label, source, split
# Each layout's labels file, as messages name it.
LAYOUT_FILES = {
    "isic2018": "ISIC2018_Task3_Training_GroundTruth.csv (or _Validation_ or _Test_)",
    "ham10000": HAM_METADATA,
    "generic": GENERIC_LABELS,
}
GENERIC_LABEL_VALUES = {"1": 1, "0": 0, "melanoma": 1, "mel": 1, "other": 0, "true": 1, "false": 0}
MAX_PROBLEMS_SHOWN = 20
NAMES_SHOWN = 5
# Where a labels file gives each image's diagnosis, as messages asking for it say.
DX_HOW = (
    f"a dx column in {GENERIC_LABELS} with one of {diagnoses.ALLOWED_TEXT} per image, or ISIC 2018 Task 3's "
    "one-hot ground truth"
)
# How labels name images, in the folder layouts and the Validate page's zip alike (`image_id`).
IMAGE_ID_RULE = (
    f"image_id is the image file's name without its extension ({', '.join(IMAGE_EXTENSIONS)}), or the whole "
    "name of a DICOM file without one"
)


class DataError(ValueError):
    """A data folder that cannot be trained or evaluated on; lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(f"{self.summary}\n  " + "\n  ".join(shown) + more)

    @property
    def summary(self) -> str:
        """The line above the problems, as the terminal and the app show it."""
        return f"{len(self.problems)} problem(s) in the data:"


@dataclass
class LabelledImages:
    """One row per image: image_id, path, label (1 = melanoma), group (lesion id or image id),
    source (where the image was taken; empty when the layout does not say) and dx (the diagnosis
    code; empty when the labels do not say)."""

    layout: str
    root: Path
    table: pd.DataFrame

    @property
    def counts(self) -> dict[str, int]:
        return {"other": int((self.table.label == 0).sum()), "melanoma": int((self.table.label == 1).sum())}

    @property
    def has_diagnoses(self) -> bool:
        """Whether every image has its diagnosis code, as training a diagnosis model needs."""
        return diagnoses_problem(self.table, "") is None


def diagnoses_problem(table: pd.DataFrame, needs: str) -> str | None:
    """What `needs` the diagnosis of every image of `table` lacks (the images without a dx, and how
    to give them one), or None when every image has its diagnosis."""
    missing = list(table.image_id[table.dx == ""])
    if not missing:
        return None
    return (
        f"{needs} the diagnosis of every image, and {len(missing)} of {len(table)} have none "
        f"({name_list(missing)}). Give each image its dx: {DX_HOW}."
    )


def name_list(names: list[str], shown: int = NAMES_SHOWN) -> str:
    """'a, b, c and 4 more': enough names to find the files, never a wall of them."""
    listed = ", ".join(names[:shown])
    return f"{listed} and {len(names) - shown} more" if len(names) > shown else listed


def is_labels_file(layout: str, filename: str) -> bool:
    """Whether `filename` is `layout`'s labels file (in any case, as the Validate page reads a zip's)."""
    if layout == "isic2018":
        return bool(ISIC_GROUND_TRUTH.fullmatch(filename))
    return filename.lower() == LAYOUT_FILES[layout].lower()


def labels_file(data_dir: Path, layout: str = "auto") -> tuple[str, Path]:
    """The layout and labels file of a folder: `layout`'s, or with auto the one labels file it holds.

    Raises DataError when there is none, naming the expected files and the CSV files there, and when
    there are several, which one was meant cannot be known: another than training read would give
    other labels.
    """
    csv_files = sorted(p.name for p in data_dir.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    layouts = list(LAYOUT_FILES) if layout == "auto" else [layout]
    found = [(each, name) for each in layouts for name in csv_files if is_labels_file(each, name)]
    if len(found) == 1:
        return found[0][0], data_dir / found[0][1]
    if found:
        choose = " Pass --layout to choose one." if len({each for each, _ in found}) > 1 else ""
        raise DataError(
            [
                f"{data_dir}: holds several labels files ({name_list([name for _, name in found])}); expected one, "
                f"so that every tool reads the same labels.{choose} Move the others out of the folder."
            ]
        )
    expected = LAYOUT_FILES[layout] if layout != "auto" else f"one of {', '.join(LAYOUT_FILES.values())}"
    raise DataError(
        [
            f"{data_dir}: no labels file found. Expected {expected} at the top of the folder (ISIC 2018 Task 3, "
            f"HAM10000, or a generic labels.csv with columns image_id,label[,group]); found "
            f"{name_list(csv_files) if csv_files else 'no CSV file'}."
        ]
    )


def image_id(name: str, read_head: Callable[[int], bytes]) -> str | None:
    """The image_id a file answers to, or None when it is not an image: the name without its
    extension for an image extension; the whole name for a DICOM file known by its preamble alone
    (PACS exports name them IM000001 or after a UID, 1.2.840.….320). `read_head(n)` gives the file's
    first n bytes (b"" where it cannot be read), read only for a name without an image extension."""
    filename = posixpath.basename(name)
    stem, extension = posixpath.splitext(filename)
    if extension.lower() in IMAGE_EXTENSIONS:
        return stem
    return filename if read_head(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC else None


def _file_head(path: Path, size: int) -> bytes:
    """The first `size` bytes of a regular file; b"" for anything else (a pipe would block the scan)
    or a file that cannot be read (the image reader names what is wrong with it)."""
    try:
        if not path.is_file():
            return b""
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def is_image_file(path: Path) -> bool:
    """Whether a folder scan reads this file: an image by its name, or a DICOM file by its preamble (`image_id`)."""
    return path.is_file() and image_id(path.name, lambda size: _file_head(path, size)) is not None


def index_images(
    names: Iterable[str], read_head: Callable[[str, int], bytes], where: str
) -> tuple[dict[str, str], list[str]]:
    """image_id -> name for the image files among `names` (paths in a folder or a zip), and a problem
    for each image_id that several files answer to: which of them the labels mean cannot be known."""
    files: dict[str, list[str]] = {}
    for name in names:
        key = image_id(name, lambda size, name=name: read_head(name, size))
        if key is not None:
            files.setdefault(key, []).append(name)
    problems = [
        f"{where}: image_id {key} names several files ({', '.join(paths)}); keep one."
        for key, paths in files.items()
        if len(paths) > 1
    ]
    return {key: paths[0] for key, paths in files.items()}, problems


def _index_images(data_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Each image file's image_id and path, searching the folder tree (the layouts nest images), and
    the problems of `index_images`."""
    names = sorted(
        os.path.relpath(os.path.join(folder, filename), data_dir)
        for folder, _, files in os.walk(data_dir)
        for filename in files
    )
    files, problems = index_images(names, lambda name, size: _file_head(data_dir / name, size), str(data_dir))
    return {key: data_dir / name for key, name in files.items()}, problems


def read_table(source: str | Path | IO[bytes], name: str) -> pd.DataFrame:
    """A labels CSV as text, read as people save it: a UTF-8 byte-order mark (Excel's "CSV UTF-8") is
    dropped, and so are spaces around the column names and values (`image_id, label`, `a ,1`).
    Raises DataError when it is not a CSV."""
    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(
            [f"{name}: cannot be read as CSV ({error}). Save it as UTF-8 CSV with columns image_id,label."]
        ) from None
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame.apply(lambda column: column.str.strip())


def _read_csv(path: Path, required: list[str], problems: list[str]) -> pd.DataFrame | None:
    try:
        frame = read_table(path, path.name)
    except DataError as error:
        problems += error.problems
        return None
    missing = [column for column in required if column not in frame.columns]
    if missing:
        problems.append(
            f"{path.name}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}, "
            f"found {', '.join(frame.columns) or 'none'}."
        )
        return None
    return frame


def _line(index: int) -> int:
    """CSV line number of a data row (line 1 is the header)."""
    return index + 2


def _labels_isic(path: Path, problems: list[str]) -> pd.DataFrame | None:
    classes = list(diagnoses.CODES)
    frame = _read_csv(path, ["image", *classes], problems)
    if frame is None:
        return None
    codes = []
    for index, row in frame.iterrows():
        try:
            one_hot = [float(row[c]) for c in classes]
        except ValueError:
            problems.append(f"{path.name} line {_line(index)}: non-numeric class value in {row['image']}.")
            codes.append("")
            continue
        if sorted(one_hot) != [0.0] * 6 + [1.0]:
            problems.append(
                f"{path.name} line {_line(index)}: {row['image']} is not one-hot over {', '.join(classes)}."
            )
        codes.append(classes[int(np.argmax(one_hot))])
    dx = pd.Series(codes, dtype=str)
    table = pd.DataFrame(
        {"image_id": frame["image"], "label": (dx == diagnoses.MELANOMA).astype(int), "group": frame["image"], "dx": dx}
    )
    groupings = path.parent / ISIC_GROUPINGS
    if groupings.is_file():
        lesions = _read_csv(groupings, ["image", "lesion_id"], problems)
        if lesions is not None:
            table["group"] = table.image_id.map(dict(zip(lesions.image, lesions.lesion_id))).fillna(table.image_id)
    return table


def _labels_ham(path: Path, problems: list[str]) -> pd.DataFrame | None:
    frame = _read_csv(path, ["lesion_id", "image_id", "dx"], problems)
    if frame is None:
        return None
    dx = _diagnosis_codes(frame.dx, path.name, problems)
    source = frame["dataset"] if "dataset" in frame else ""
    return pd.DataFrame(
        {
            "image_id": frame.image_id,
            "label": (dx == diagnoses.MELANOMA).astype(int),
            "group": frame.lesion_id,
            "source": source,
            "dx": dx,
        }
    )


def _diagnosis_codes(values: pd.Series, filename: str, problems: list[str], allow_empty: bool = False) -> pd.Series:
    """The seven codes from a dx column in any case; a value that is none of them is a problem
    naming its line (an empty value is allowed where the layout makes dx optional)."""
    codes = []
    for index, value in values.items():
        code = diagnoses.parse_code(value)
        if code is None and not (allow_empty and not str(value).strip()):
            problems.append(
                f"{filename} line {_line(index)}: unknown dx {value!r}; expected one of {diagnoses.ALLOWED_TEXT} "
                "(any case), or an empty value where the diagnosis is not known."
            )
        codes.append(code or "")
    return pd.Series(codes, index=values.index, dtype=str)


def _generic_labels(frame: pd.DataFrame, dx: pd.Series, problems: list[str]) -> list[int]:
    """labels.csv's label column (-1 where unknown), each checked against the row's dx where it has one."""
    labels = []
    for index, value in frame.label.items():
        label = GENERIC_LABEL_VALUES.get(str(value).strip().lower())
        if label is None:
            problems.append(
                f"{GENERIC_LABELS} line {_line(index)}: unknown label {value!r} for {frame.image_id[index]}; "
                "expected 1/0 or melanoma/other."
            )
            label = -1
        elif dx[index] and label != int(dx[index] == diagnoses.MELANOMA):
            problems.append(
                f"{GENERIC_LABELS} line {_line(index)}: label {value!r} contradicts dx {dx[index]!r} for "
                f"{frame.image_id[index]}; label is 1 exactly when dx is {diagnoses.MELANOMA}."
            )
        labels.append(label)
    return labels


def _labels_from_dx(frame: pd.DataFrame, dx: pd.Series, problems: list[str]) -> list[int]:
    """Without a label column each label follows from dx (-1 where it cannot). An unknown dx is
    already a problem (_diagnosis_codes); an empty one is one here, once, and names what to add."""
    for index in dx.index[(dx == "") & (frame.dx.str.strip() == "")]:
        problems.append(
            f"{GENERIC_LABELS} line {_line(index)}: no dx for {frame.image_id[index]}, and no label column to tell "
            f"whether it is a melanoma; give its dx ({diagnoses.ALLOWED_TEXT}) or add a label column "
            "(1 = melanoma, 0 = other)."
        )
    return [int(code == diagnoses.MELANOMA) if code else -1 for code in dx]


def _labels_generic(path: Path, problems: list[str]) -> pd.DataFrame | None:
    frame = _read_csv(path, ["image_id"], problems)
    if frame is None:
        return None
    if "label" not in frame and "dx" not in frame:  # with dx, label may be left out: it follows from the diagnosis
        problems.append(
            f"{GENERIC_LABELS}: missing column label; expected image_id,label (1 = melanoma, 0 = other) "
            f"or image_id,dx (the diagnosis codes {diagnoses.ALLOWED_TEXT}), found {', '.join(frame.columns)}."
        )
        return None
    dx = (
        _diagnosis_codes(frame["dx"], GENERIC_LABELS, problems, allow_empty=True)
        if "dx" in frame
        else pd.Series("", index=frame.index, dtype=str)
    )
    labels = _generic_labels(frame, dx, problems) if "label" in frame else _labels_from_dx(frame, dx, problems)
    groups = frame["group"].where(frame["group"] != "", frame.image_id) if "group" in frame else frame.image_id
    source = frame["source"] if "source" in frame else ""
    return pd.DataFrame({"image_id": frame.image_id, "label": labels, "group": groups, "source": source, "dx": dx})


LABEL_READERS = {"isic2018": _labels_isic, "ham10000": _labels_ham, "generic": _labels_generic}


def load_labelled_images(data_dir: str | Path, layout: str = "auto") -> LabelledImages:
    """Read labels in any supported layout, match them to image files and check them.

    Raises DataError naming every problem: no labels file or several, missing columns, unknown
    labels, duplicate ids, image files sharing an image_id, label rows without an image file, and a
    class with no examples.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError([f"{data_dir}: not a folder. Pass --data-dir pointing at the data set."])
    if layout != "auto" and layout not in LABEL_READERS:
        raise DataError([f"unknown layout {layout!r}; expected auto, {', '.join(LABEL_READERS)}."])
    layout, path = labels_file(data_dir, layout)
    problems: list[str] = []
    table = LABEL_READERS[layout](path, problems)
    if table is None:
        raise DataError(problems)
    if "source" not in table:
        table["source"] = ""
    duplicated = table.image_id.duplicated(keep="first")
    for index in table.index[duplicated]:
        problems.append(f"{path.name} line {_line(index)}: image {table.image_id[index]} is listed more than once.")
    images, repeated = _index_images(data_dir)
    problems += repeated
    if not images:
        problems.append(f"{data_dir}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)}, or DICOM files).")
    else:
        for index, image in table.image_id.items():
            if image not in images:
                stem, extension = os.path.splitext(image)
                hint = f"; {IMAGE_ID_RULE}: write {stem}" if extension.lower() in IMAGE_EXTENSIONS else ""
                problems.append(f"{path.name} line {_line(index)}: no image file for {image} in {data_dir}{hint}.")
    valid = table[table.label >= 0]
    for name, value in (("melanoma", 1), ("other", 0)):
        if not (valid.label == value).any():
            problems.append(f"{path.name}: no {name} examples; both classes are needed to train and evaluate.")
    if problems:
        raise DataError(problems)
    table = table.assign(path=table.image_id.map(lambda i: str(images[i])))
    return LabelledImages(layout=layout, root=data_dir, table=table.reset_index(drop=True))


def load_pixels(paths: list[str], size: int, workers: int | None = None) -> np.ndarray:
    """Decode and resize every image in parallel with the serving code path.

    Returns uint8 pixels of shape (n, size, size, 3); a file that does not decode is reported
    with the others by DataError (PIL releases the GIL while decoding, so threads scale).
    """

    def load(path: str) -> np.ndarray | str:
        try:
            return to_model_input(read_image(path).pixels, size)
        except ImageError as error:
            return str(error)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        results = list(pool.map(load, paths))
    problems = [result for result in results if isinstance(result, str)]
    if problems:
        raise DataError(problems)
    return np.stack(results) if results else np.zeros((0, size, size, 3), np.uint8)


def split_grouped_stratified(
    table: pd.DataFrame, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 42
) -> pd.Series:
    """Assign each image to train/val/test so that no group (lesion) spans two splits.

    Groups are stratified by their label (a group with any melanoma image counts as melanoma)
    and dealt to test, then validation, until each holds its fraction of that class's images,
    so every split has the class balance of the whole set.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1; got {fractions}.")
    rng = np.random.default_rng(seed)
    group_label = table.groupby("group").label.max()
    group_size = table.groupby("group").size()
    assignment: dict[str, str] = {}
    for label in (0, 1):
        groups = group_label.index[group_label == label].to_numpy()
        groups = groups[rng.permutation(len(groups))]
        total = group_size[groups].sum()
        targets = {"test": fractions[2] * total, "val": fractions[1] * total}
        filled = {"test": 0, "val": 0}
        for group in groups:
            split = next((s for s in ("test", "val") if filled[s] < targets[s]), "train")
            if split != "train":
                filled[split] += group_size[group]
            assignment[group] = split
    return table.group.map(assignment).rename("split")


def split_holding_out_source(
    table: pd.DataFrame, source: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 42
) -> pd.Series:
    """Test on every image of one source; split the others into train and validation.

    This measures a model at a clinic it never saw. A lesion photographed at the held-out source
    and elsewhere too is left out of training and validation, so nothing of it leaks in.
    """
    sources = sorted(set(table.source) - {""})
    if source not in sources:
        raise ValueError(
            f"--holdout-source {source!r} is not a source of this data; expected one of {', '.join(sources) or 'none'} "
            "(the HAM10000 metadata's dataset column, or a generic labels.csv's source column)."
        )
    held_out = table.source == source
    leaking = table.group.isin(set(table.group[held_out])) & ~held_out
    rest = table[~held_out & ~leaking]
    train_val = fractions[0] + fractions[1]
    split = pd.Series("excluded", index=table.index, name="split")
    split[held_out] = "test"
    split[rest.index] = split_grouped_stratified(rest, (fractions[0] / train_val, fractions[1] / train_val, 0.0), seed)
    return split


def read_split(folder: str | Path) -> pd.DataFrame:
    """A model's split.csv: which images it trained, validated and was tested on.

    Raises DataError when it is missing or not such a table: without it no tool can tell the
    model's validation and test images from the ones it learned.
    """
    path = Path(folder) / SPLIT_FILE
    fix = f"retrain the model (python -m train.run), or restore the model folder's {SPLIT_FILE} from git or its run."
    try:
        split = pd.read_csv(path, dtype={"image_id": str, "group": str})
    except FileNotFoundError:
        raise DataError([f"{path}: not found; it lists the images the model was trained on. To fix, {fix}"]) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError([f"{path}: cannot be read as CSV ({error}). To fix, {fix}"]) from None
    missing = [column for column in ("image_id", "split") if column not in split.columns]
    if missing:
        raise DataError(
            [
                f"{path}: missing column(s) {', '.join(missing)}; expected image_id and split (train, val or test), "
                f"found {', '.join(split.columns) or 'none'}. To fix, {fix}"
            ]
        )
    return split


def split_images(data: LabelledImages, folder: Path, parts: tuple[str, ...]) -> pd.DataFrame:
    """The images of `data` that the model's split.csv in `folder` puts in `parts`, with each one's split.

    Raises DataError where `data` lacks any of them: a model scored on part of its split, or on none
    of it, would be fitted or measured on other images than its card and metrics say.
    """
    split = read_split(folder)
    wanted = split[split.split.isin(parts)]
    missing = sorted(set(wanted.image_id) - set(data.table.image_id))
    if missing:
        raise DataError(
            [
                f"{folder / SPLIT_FILE} puts {len(wanted)} images in {', '.join(parts)}, but {len(missing)} of them "
                f"are not in {data.root} (e.g. {missing[0]}). Pass the --data-dir the model was trained on."
            ]
        )
    return join_split(data.table, wanted)


def join_split(table: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """The labelled images with each one's split; images the split does not list are left out."""
    return table.drop(columns=["split"], errors="ignore").merge(split[["image_id", "split"]], on="image_id")


def class_weights(labels: np.ndarray, n_classes: int = 2) -> dict[int, float]:
    """Weights n / (k · n_class) that make the k classes count equally in the loss (scikit-learn's
    "balanced"; the study's n / (2 · n_class) for the binary target)."""
    classes = np.arange(n_classes)
    labels = np.asarray(labels)
    absent = sorted(set(classes) - set(labels))
    if absent:
        raise DataError(
            [
                f"the training split has no image of class {', '.join(map(str, absent))}; every class needs "
                "examples to be weighted and learned. Use more data or another --split."
            ]
        )
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights)}


def subsample(table: pd.DataFrame, max_images: int | None, seed: int) -> pd.DataFrame:
    """A class-stratified subset of whole groups, for quick runs; the full table otherwise."""
    if not max_images or max_images >= len(table):
        return table
    groups = table.groupby("group").label.max()
    fraction = max_images / len(table)
    chosen = pd.concat([g.sample(frac=fraction, random_state=seed) for _, g in groups.groupby(groups)]).index
    return table[table.group.isin(chosen)].reset_index(drop=True)


def split_counts(table: pd.DataFrame, by_diagnosis: bool = False) -> dict:
    """Images per split and class (per diagnosis code when asked), as the card records them."""
    if by_diagnosis:
        return {
            split: {code: int(((table.split == split) & (table.dx == code)).sum()) for code in diagnoses.CODES}
            for split in ("train", "val", "test")
        }
    return {
        split: {
            "other": int(((table.split == split) & (table.label == 0)).sum()),
            "melanoma": int(((table.split == split) & (table.label == 1)).sum()),
        }
        for split in ("train", "val", "test")
    }
