"""Data layouts, up-front checks, the lesion-grouped split and class weights."""

import shutil

import numpy as np
import pandas as pd
import pytest

from melanoma.data import (
    DataError,
    class_weights,
    load_labelled_images,
    load_pixels,
    read_split,
    split_grouped_stratified,
    split_holding_out_source,
)
from tests.synthetic import make_dataset


@pytest.mark.parametrize("layout", ["generic", "ham10000", "isic2018"])
def test_each_layout_is_detected_and_read(tmp_path, layout):
    data = load_labelled_images(make_dataset(tmp_path, layout, n=40))
    assert data.layout == layout
    assert data.counts == {"other": 28, "melanoma": 12}
    # lesion ids are read in every layout that has them: two images per lesion
    assert data.table.groupby("group").size().max() == 2


def test_no_labels_file_names_the_expected_files(tmp_path):
    with pytest.raises(DataError, match="labels.csv"):
        load_labelled_images(tmp_path)


def test_every_problem_is_reported_with_file_and_line(tmp_path):
    root = make_dataset(tmp_path, "generic", n=20)
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    labels.loc[3, "label"] = "maybe"
    labels = pd.concat(
        [labels, labels.iloc[[5]], pd.DataFrame([{"image_id": "ISIC_missing", "label": "0", "group": "g"}])]
    )
    labels.to_csv(root / "labels.csv", index=False)
    with pytest.raises(DataError) as error:
        load_labelled_images(root)
    message = str(error.value)
    assert "line 5: unknown label 'maybe'" in message
    assert "line 22: image ISIC_0000005 is listed more than once" in message
    assert "line 23: no image file for ISIC_missing" in message


def test_missing_column_is_named(tmp_path):
    root = make_dataset(tmp_path, "ham10000", n=10)
    pd.read_csv(root / "HAM10000_metadata.csv").drop(columns=["dx"]).to_csv(root / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match="missing column.*dx"):
        load_labelled_images(root)


def test_a_class_without_examples_is_reported(tmp_path):
    root = make_dataset(tmp_path, "generic", n=10, melanoma_fraction=0.0)
    with pytest.raises(DataError, match="no melanoma examples"):
        load_labelled_images(root)


def test_folder_without_images_is_reported(tmp_path):
    (tmp_path / "labels.csv").write_text("image_id,label\na,1\nb,0\n")
    with pytest.raises(DataError, match="holds no images"):
        load_labelled_images(tmp_path)


def test_an_image_that_does_not_decode_is_named(tmp_path):
    root = make_dataset(tmp_path, "generic", n=10)
    (root / "images" / "ISIC_0000004.jpg").write_bytes(b"not a jpeg")
    data = load_labelled_images(root)
    with pytest.raises(DataError, match="ISIC_0000004.jpg"):
        load_pixels(list(data.table.path), 32)


def synthetic_table(n_groups=400, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = int(rng.random() < 0.15)
        for _ in range(rng.integers(1, 4)):
            rows.append({"image_id": f"i{len(rows)}", "group": f"g{g}", "label": label})
    return pd.DataFrame(rows)


def test_split_keeps_every_lesion_in_one_split_and_the_class_balance():
    table = synthetic_table()
    split = split_grouped_stratified(table, (0.8, 0.1, 0.1), seed=3)
    assert table.assign(split=split).groupby("group").split.nunique().max() == 1
    overall = table.label.mean()
    for name, fraction in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        part = table[split == name]
        assert abs(len(part) / len(table) - fraction) < 0.03
        assert abs(part.label.mean() - overall) < 0.03


def test_split_is_seeded():
    table = synthetic_table()
    assert split_grouped_stratified(table, seed=1).equals(split_grouped_stratified(table, seed=1))
    assert not split_grouped_stratified(table, seed=1).equals(split_grouped_stratified(table, seed=2))


def test_class_weights_match_the_study():
    weights = class_weights(np.array([0] * 1101 + [1] * 250))
    assert round(weights[0], 3) == 0.614 and round(weights[1], 3) == 2.702


def test_holding_out_a_source_tests_on_it_alone_and_keeps_its_lesions_out_of_training():
    table = pd.DataFrame(
        {
            "image_id": [f"i{n}" for n in range(12)],
            "label": [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0],
            "group": ["a", "a", "b", "c", "d", "e", "f", "g", "h", "shared", "shared", "k"],
            "source": ["vienna"] * 9 + ["vienna", "rosendahl", "rosendahl"],
        }
    )
    split = split_holding_out_source(table, "rosendahl", seed=0)
    assert list(split[table.source == "rosendahl"]) == ["test", "test"]
    # "shared" was photographed at both sources: its Vienna image would leak the held-out lesion.
    assert split[9] == "excluded"
    assert set(split[:9]) <= {"train", "val"} and "val" in set(split[:9])


def test_an_unknown_source_lists_the_known_ones():
    table = pd.DataFrame({"image_id": ["a"], "label": [1], "group": ["a"], "source": ["vienna"]})
    with pytest.raises(ValueError, match="'rosendal' is not a source of this data; expected one of vienna"):
        split_holding_out_source(table, "rosendal")


def test_without_a_label_column_each_bad_dx_is_one_problem(tmp_path):
    """The label follows from dx there: an unknown or empty dx is one problem, not a second about a label column
    that does not exist (which pushed real problems past the ones shown)."""
    root = make_dataset(tmp_path, "generic", n=6)
    codes = ["MEL", "zzz", "", "NV", "NV", "NV"]
    (root / "labels.csv").write_text(
        "image_id,dx\n" + "".join(f"ISIC_{i:07d},{code}\n" for i, code in enumerate(codes))
    )
    with pytest.raises(DataError) as error:
        load_labelled_images(root)
    assert error.value.problems == [
        "labels.csv line 3: unknown dx 'zzz'; expected one of MEL, NV, BCC, AKIEC, BKL, DF, VASC (any case), or an "
        "empty value where the diagnosis is not known.",
        "labels.csv line 4: no dx for ISIC_0000002, and no label column to tell whether it is a melanoma; give its dx "
        "(MEL, NV, BCC, AKIEC, BKL, DF, VASC) or add a label column (1 = melanoma, 0 = other).",
    ]


@pytest.mark.parametrize(
    "text",
    [None, "", 'image_id,split\n"ISIC_0000000,val\n', "image_id,group\nISIC_0000000,g\n"],
    ids=["missing", "empty", "unclosed quote", "no split column"],
)
def test_a_missing_or_damaged_split_csv_names_the_file_and_the_fix(tmp_path, text):
    if text is not None:
        (tmp_path / "split.csv").write_text(text)
    with pytest.raises(DataError) as error:
        read_split(tmp_path)
    (problem,) = error.value.problems
    assert problem.startswith(f"{tmp_path / 'split.csv'}: ") and "retrain the model" in problem


DICOM_PREAMBLE = bytes(128) + b"DICM"  # how a DICOM file begins, whatever its name


@pytest.mark.parametrize("part", ["Validation", "Test", "Training"])
def test_isic_ground_truth_of_any_set_is_read(tmp_path, part):
    """Only the Training set's file name was recognised, as the Validate page recognised all three."""
    root = make_dataset(tmp_path, "isic2018", n=20)
    (root / "ISIC2018_Task3_Training_GroundTruth.csv").rename(root / f"ISIC2018_Task3_{part}_GroundTruth.csv")
    for layout in ("auto", "isic2018"):
        data = load_labelled_images(root, layout)
        assert data.layout == "isic2018" and data.counts == {"other": 14, "melanoma": 6}


@pytest.mark.parametrize(
    "layout, expected", [("isic2018", "ISIC2018_Task3_Training_GroundTruth.csv"), ("generic", "labels.csv")]
)
def test_a_layout_without_its_labels_file_names_it_and_the_files_there(tmp_path, layout, expected):
    """It was a FileNotFoundError traceback."""
    root = make_dataset(tmp_path, "ham10000", n=10)
    with pytest.raises(DataError) as error:
        load_labelled_images(root, layout)
    (problem,) = error.value.problems
    assert problem.startswith(f"{root}: no labels file found. Expected {expected}")
    assert problem.endswith("found HAM10000_metadata.csv.")


def test_several_labels_files_are_refused_unless_the_layout_chooses_one(tmp_path):
    """Auto-detection chose ISIC, then HAM10000, then labels.csv without a word: the tools could read
    other labels than training did."""
    root = make_dataset(tmp_path, "ham10000", n=10)
    (root / "labels.csv").write_text("image_id,label\nISIC_0000000,1\nISIC_0000009,0\n")
    with pytest.raises(DataError) as error:
        load_labelled_images(root)
    assert "holds several labels files (HAM10000_metadata.csv, labels.csv)" in str(error.value)
    assert "Pass --layout to choose one" in str(error.value)
    assert load_labelled_images(root, "generic").counts == {"other": 1, "melanoma": 1}
    assert load_labelled_images(root, "ham10000").counts == {"other": 6, "melanoma": 4}


def test_two_image_files_of_one_image_id_are_a_problem(tmp_path):
    """One was chosen in the file system's order, as the zip reader refuses."""
    root = make_dataset(tmp_path, "generic", n=10)
    (root / "more").mkdir()
    shutil.copy(root / "images" / "ISIC_0000003.jpg", root / "more" / "ISIC_0000003.png")
    with pytest.raises(DataError) as error:
        load_labelled_images(root)
    assert error.value.problems == [
        f"{root}: image_id ISIC_0000003 names several files (images/ISIC_0000003.jpg, more/ISIC_0000003.png); keep one."
    ]


def test_a_dicom_file_without_an_image_extension_is_found(tmp_path):
    """PACS exports name DICOM files IM000001 or after a UID (….320); scans went by extension only."""
    root = make_dataset(tmp_path, "generic", n=10)
    (root / "DICOM").mkdir()
    for name in ("IM000001", "1.2.840.113619.2.320"):
        (root / "DICOM" / name).write_bytes(DICOM_PREAMBLE + b"rest of the file")
    (root / "DICOM" / "README").write_bytes(bytes(200))  # no preamble: not an image
    labels = (root / "labels.csv").read_text() + "IM000001,1,x,\n1.2.840.113619.2.320,0,y,\nREADME,0,z,\n"
    (root / "labels.csv").write_text(labels)
    with pytest.raises(DataError) as error:
        load_labelled_images(root)
    assert error.value.problems == [f"labels.csv line 14: no image file for README in {root}."]
    (root / "labels.csv").write_text(labels.replace("README,0,z,\n", ""))
    paths = load_labelled_images(root).table.set_index("image_id").path
    assert paths["IM000001"] == str(root / "DICOM" / "IM000001")
    assert paths["1.2.840.113619.2.320"] == str(root / "DICOM" / "1.2.840.113619.2.320")


def test_labels_are_read_as_spreadsheets_save_them(tmp_path):
    """A byte-order mark, 'image_id, label' and 'a ,1' were 'missing column label' and 'no image file for a ',
    as the Validate page read them; and 'a.jpg' did not say that image_id has no extension."""
    root = make_dataset(tmp_path, "generic", n=10)
    rows = (root / "labels.csv").read_text().splitlines()[1:]
    spaced = "".join(f"{row.split(',')[0]} , {row.split(',')[1]}\n" for row in rows)
    (root / "labels.csv").write_bytes(("\ufeffimage_id , label\n" + spaced).encode())
    assert load_labelled_images(root).counts == {"other": 6, "melanoma": 4}
    (root / "labels.csv").write_text("image_id,label\n" + spaced.replace("ISIC_0000004 ", "ISIC_0000004.jpg"))
    with pytest.raises(DataError) as error:
        load_labelled_images(root)
    (problem,) = error.value.problems
    assert problem.startswith(f"labels.csv line 6: no image file for ISIC_0000004.jpg in {root}; image_id is the ")
    assert problem.endswith(": write ISIC_0000004.")
