"""Validation on a clinician's own labelled images: the zip's checks, the shared scoring, train.evaluate, the page."""

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

from melanoma import cases, diagnoses, plots, validation
from melanoma.combined import CombinedSpec, DifferentialSpec
from melanoma.data import DataError, load_labelled_images, load_pixels
from melanoma.images import read_image
from melanoma.inference import load_predictor
from melanoma.progress import TerminalProgress
from melanoma.validation import operating_point, read_zip
from tests.conftest import DIAGNOSIS_MODEL
from tests.synthetic import make_dataset
from train import evaluate


def make_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def damaged(data: bytes, member: str) -> bytes:
    """The zip with one byte of `member`'s stored data flipped: it fails its CRC check or decompression."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # past the local header
    flipped = bytearray(data)
    flipped[start + info.compress_size // 2] ^= 0xFF
    return bytes(flipped)


def labels_csv(rows) -> bytes:
    return ("image_id,label\n" + "".join(f"{image_id},{label}\n" for image_id, label in rows)).encode()


def fixture_zip(data_dir, count: int | None = None, folder: str = "batch/") -> tuple[bytes, dict[str, int]]:
    """The fixture's images and labels as a zip of one top-level folder, as a zipped folder arrives."""
    table = load_labelled_images(data_dir).table.head(count)
    files = {f"{folder}{row.image_id}.jpg": Path(row.path).read_bytes() for row in table.itertuples()}
    files[f"{folder}labels.csv"] = labels_csv(zip(table.image_id, table.label))
    return make_zip(files), dict(zip(table.image_id, table.label))


def diagnosis_zip(dx_dir: Path) -> bytes:
    """The fixture's seven-diagnosis set as a zip whose labels.csv has image_id,dx (lower case; no label column)."""
    table = load_labelled_images(dx_dir).table
    files = {f"{row.image_id}.jpg": Path(row.path).read_bytes() for row in table.itertuples()}
    rows = "".join(f"{image_id},{dx.lower()}\n" for image_id, dx in zip(table.image_id, table.dx))
    files["labels.csv"] = f"image_id,dx\n{rows}".encode()
    return make_zip(files)


def problems(data: bytes, upload: str = "upload.zip") -> str:
    with pytest.raises(DataError) as raised:
        read_zip(data, upload)
    return str(raised.value)


# --- scoring: one implementation behind the page and train.evaluate ---------------------------------------


def test_a_zip_gives_train_evaluates_numbers_and_the_combined_reading(trained_models, tmp_path):
    data_dir, output_dir = trained_models
    upload = read_zip(fixture_zip(data_dir)[0])
    predictors = [load_predictor(name, output_dir) for name in ("scratch_cnn", "efficientnet_lite0")]
    spec = CombinedSpec(("scratch_cnn", "efficientnet_lite0"), 0.3, {})
    result = validation.validate(predictors, upload.images, upload.read, spec)
    assert [r.name for r in result.results] == [
        "scratch_cnn",
        "efficientnet_lite0",
        "combined (2 models)",
    ]
    assert result.notes == [
        "The combined reading's row, combined (2 models): scratch_cnn, efficientnet_lite0 "
        "(mean of the members' calibrated probabilities)."
    ]
    assert len(result.labels) == 120 and not result.skipped and upload.warnings == []

    out = tmp_path / "metrics.json"
    assert (
        evaluate.main(
            ["--model", "scratch_cnn", "--models-dir", str(output_dir), "--data-dir", str(data_dir), "--out", str(out)]
        )
        == 0
    )
    from_cli = json.loads(out.read_text())
    assert result.results[0].metrics["roc_auc"] == from_cli["roc_auc"]
    assert result.results[0].metrics["ci95"] == from_cli["ci95"]
    assert result.results[0].metrics["at_threshold"] == from_cli["at_threshold"]

    # Independently of melanoma.validation: the folder path train.evaluate used before (load_pixels, raw_outputs).
    order = {image.image_id: index for index, image in enumerate(result.images)}
    table = load_labelled_images(data_dir).table.sort_values("image_id", key=lambda ids: ids.map(order))
    y = table.label.to_numpy()
    direct = [
        p.calibrate(p.raw_outputs(load_pixels(list(table.path), p.serving.input_size))).melanoma for p in predictors
    ]
    assert np.allclose(result.results[0].probabilities, direct[0], atol=1e-6)
    assert result.results[0].metrics["roc_auc"] == pytest.approx(roc_auc_score(y, direct[0]), abs=1e-9)
    combined = result.results[2]
    assert np.allclose(combined.probabilities, (direct[0] + direct[1]) / 2, atol=1e-6)
    assert combined.threshold == 0.3 and combined.metrics["at_threshold"]["threshold"] == 0.3
    assert np.array_equal(
        combined.in_distribution, result.results[0].in_distribution & result.results[1].in_distribution
    )


def test_a_combined_reading_left_unread_names_its_models_apart_with_why_and_what_to_do(trained_models):
    """It said its "member(s)" could not be loaded, listing the differential's with the averaged ones,
    a model never installed as one that failed, and nothing to do about it."""
    data_dir, output_dir = trained_models
    upload = read_zip(fixture_zip(data_dir, count=40)[0])
    scratch = [load_predictor("scratch_cnn", output_dir)]
    installed = ["scratch_cnn", "efficientnet_lite0"]
    differential = DifferentialSpec(("efficientnet_lite0", "gone_dx"), 0.2)
    spec = CombinedSpec(("scratch_cnn", "efficientnet_lite0", "absent"), 0.3, {}, differential=differential)
    result = validation.validate(scratch, upload.images, upload.read, spec, installed=installed)
    assert result.notes[-1] == (
        "No combined reading: of its melanoma members, absent is not installed and efficientnet_lite0 failed to "
        "load; of its differential's, gone_dx is not installed. To measure it, install or restore those models, "
        "or re-run python -m train.combine --data-dir DIR to combine the installed ones."
    )
    spec = CombinedSpec(("scratch_cnn",), 0.3, {}, differential=differential)
    result = validation.validate(scratch, upload.images, upload.read, spec, installed=installed)
    assert result.notes[-2] == (
        "The combined reading has no averaged differential: of its differential's models, gone_dx is not "
        "installed and efficientnet_lite0 failed to load. To average it, install or restore those models, or "
        "re-run python -m train.combine --data-dir DIR to combine the installed ones."
    )
    assert result.results[-1].name == "combined (1 model)"


def test_a_corrupt_image_is_reported_and_the_others_are_scored(trained_models):
    data_dir, output_dir = trained_models
    table = load_labelled_images(data_dir).table.head(40)
    files = {f"{row.image_id}.jpg": Path(row.path).read_bytes() for row in table.itertuples()}
    files.update({"broken.jpg": b"this is a text file", "empty.png": b""})
    files["labels.csv"] = labels_csv([*zip(table.image_id, table.label), ("broken", 1), ("empty", 0)])
    upload = read_zip(make_zip(files))
    assert len(upload.images) == 42
    result = validation.validate([load_predictor("scratch_cnn", output_dir)], upload.images, upload.read)
    assert len(result.skipped) == 2
    assert (
        "broken.jpg: this is not a readable image" in result.skipped[0]
        and "empty.png: the file is empty" in result.skipped[1]
    )
    assert len(result.labels) == 40 and result.results[0].metrics["n_images"] == 40
    assert "broken" not in {image.image_id for image in result.images}


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_an_image_damaged_in_the_zip_is_reported_and_the_others_are_scored(trained_models, compression):
    data_dir, output_dir = trained_models
    table = load_labelled_images(data_dir).table.head(40)
    files = {f"{row.image_id}.jpg": Path(row.path).read_bytes() for row in table.itertuples()}
    files["labels.csv"] = labels_csv(zip(table.image_id, table.label))
    broken = f"{table.image_id.iloc[3]}.jpg"
    upload = read_zip(damaged(make_zip(files, compression), broken))
    result = validation.validate([load_predictor("scratch_cnn", output_dir)], upload.images, upload.read)
    assert len(result.skipped) == 1 and result.skipped[0].startswith(f"{broken}: cannot be read")
    assert result.results[0].metrics["n_images"] == 39


def test_the_gate_count_is_reported_and_the_rejected_images_are_counted(trained_models):
    """A photograph that is no lesion stays in the metrics (it has a label) and is counted as not assessed."""
    from PIL import Image

    from train.gate_check import non_dermoscopic_images

    data_dir, output_dir = trained_models
    table = load_labelled_images(data_dir).table.head(30)
    files = {f"{row.image_id}.jpg": Path(row.path).read_bytes() for row in table.itertuples()}
    buffer = io.BytesIO()
    Image.fromarray(non_dermoscopic_images()["document_0"]).save(buffer, format="PNG")
    files["letter.png"] = buffer.getvalue()
    files["labels.csv"] = labels_csv([*zip(table.image_id, table.label), ("letter", 0)])
    upload = read_zip(make_zip(files))
    result = validation.validate([load_predictor("scratch_cnn", output_dir)], upload.images, upload.read)
    model = result.results[0]
    assert model.metrics["n_images"] == 31
    letter = [image.image_id for image in result.images].index("letter")
    assert not model.in_distribution[letter] and model.not_assessed >= 1
    row = plots.validation_table(result).iloc[0]
    assert (
        row["Not assessed by the gate (melanomas)"] == f"{model.not_assessed} ({result.not_assessed_melanomas(model)})"
    )
    assert (
        row["ROC AUC"] == model.metrics["roc_auc"] and row["Images (melanomas)"] == f"31 ({int(result.labels.sum())})"
    )


def test_train_evaluate_skips_a_corrupt_image_and_says_so(trained_models, tmp_path, capsys):
    data_dir, output_dir = trained_models
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    (copy / "images" / "ISIC_0000005.jpg").write_bytes(b"garbage")
    out = tmp_path / "metrics.json"
    code = evaluate.main(
        ["--model", "scratch_cnn", "--models-dir", str(output_dir), "--data-dir", str(copy), "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 1 and "skipped" in captured.err and "ISIC_0000005.jpg" in captured.err
    assert "scored" not in captured.err  # no progress line when stderr is not a terminal
    assert json.loads(out.read_text())["n_images"] == 119
    assert json.loads(captured.out[captured.out.index("{") :])["not_assessed_by_gate"] >= 0


def test_a_zip_with_diagnoses_gives_the_share_flagged_and_the_diagnosis_models_metrics(trained_models, tmp_path):
    _, output_dir = trained_models
    dx_dir = output_dir.parent / "diagnosis_data"
    upload = read_zip(diagnosis_zip(dx_dir))
    predictors = [load_predictor(name, output_dir) for name in ("scratch_cnn", DIAGNOSIS_MODEL)]
    result = validation.validate(predictors, upload.images, upload.read)
    assert result.has_diagnoses and result.notes == [] and len(result.labels) == 140

    # The readings equal Predictor.scores on each image read from disk, and every number is recomputed from them.
    table = load_labelled_images(dx_dir).table.set_index("image_id").loc[[image.image_id for image in result.images]]
    codes = table.dx.to_numpy()
    assert list(result.codes) == list(codes) and list(result.labels) == list(table.label)
    pixels = [read_image(path).pixels for path in table.path]
    for predictor, model in zip(predictors, result.results):
        assert np.allclose(model.probabilities, predictor.scores(pixels).melanoma, atol=1e-6)
        flagged = model.metrics["flagged_by_diagnosis"]
        for code in diagnoses.CODES:
            shown = model.probabilities[codes == code]
            assert flagged[code] == {"n": 20, "flagged": pytest.approx(np.mean(shown >= predictor.threshold))}
    assert "diagnoses" not in result.results[0].metrics and result.results[0].diagnoses is None
    model = result.results[1]
    assert np.allclose(model.diagnoses, predictors[1].scores(pixels).diagnoses, atol=1e-6)
    predicted = np.array(diagnoses.CODES)[model.diagnoses.argmax(axis=1)]
    measured = model.metrics["diagnoses"]
    assert measured["confusion_matrix"] == confusion_matrix(codes, predicted, labels=list(diagnoses.CODES)).tolist()
    assert measured["balanced_multiclass_accuracy"] == pytest.approx(balanced_accuracy_score(codes, predicted))
    assert measured["recall"]["BKL"] == pytest.approx(np.mean(predicted[codes == "BKL"] == "BKL"))
    cancer = np.isin(codes, ["MEL", "BCC", "AKIEC"])
    malignant = model.diagnoses[:, [0, 2, 3]].sum(axis=1)  # columns in CODES order: MEL, NV, BCC, AKIEC, ...
    assert measured["malignant"]["roc_auc"] == pytest.approx(roc_auc_score(cancer, malignant))
    at = predictors[1].entry.malignant_threshold
    assert measured["malignant"]["at_threshold"]["sensitivity"] == pytest.approx(np.mean(malignant[cancer] >= at))
    assert measured["malignant"]["at_threshold"]["specificity"] == pytest.approx(np.mean(malignant[~cancer] < at))
    per_image = validation.per_image_table(result)
    assert list(per_image.dx) == list(codes)
    assert list(per_image[f"{DIAGNOSIS_MODEL} most probable diagnosis"]) == list(predicted)
    # The diagnosis the confusion matrix counts, per image: each row of the matrix adds up from it.
    counted = per_image[f"{DIAGNOSIS_MODEL} predicted diagnosis"]
    assert confusion_matrix(codes, counted, labels=list(diagnoses.CODES)).tolist() == measured["confusion_matrix"]
    assert list(counted) == list(np.array(diagnoses.CODES)[predictors[1].scores(pixels).predicted])

    # train.evaluate on the same folder writes the same numbers and prints them.
    out = tmp_path / "metrics.json"
    assert (
        evaluate.main(
            ["--model", DIAGNOSIS_MODEL, "--models-dir", str(output_dir), "--data-dir", str(dx_dir), "--out", str(out)]
        )
        == 0
    )
    from_cli = json.loads(out.read_text())
    assert from_cli["diagnoses"] == measured
    assert from_cli["flagged_by_diagnosis"] == model.metrics["flagged_by_diagnosis"]


def test_a_diagnosis_model_on_binary_labels_says_dx_is_needed_and_the_rest_is_as_before(trained_models):
    data_dir, output_dir = trained_models
    upload = read_zip(fixture_zip(data_dir, count=40)[0])
    scratch = load_predictor("scratch_cnn", output_dir)
    alone = validation.validate([scratch], upload.images, upload.read)
    assert alone.notes == [] and not alone.has_diagnoses  # binary labels and melanoma models: nothing new
    assert not {"flagged_by_diagnosis", "diagnoses"} & set(alone.results[0].metrics)
    both = validation.validate([scratch, load_predictor(DIAGNOSIS_MODEL, output_dir)], upload.images, upload.read)
    assert both.notes == [
        f"Left out: the share of each diagnosis flagged and the multi-class metrics of "
        f"{DIAGNOSIS_MODEL}. They need every image's diagnosis, and 0 of 40 scored images have one. "
        "Give each image its dx: a dx column in labels.csv with one of MEL, NV, BCC, AKIEC, BKL, DF, "
        "VASC per image, or ISIC 2018 Task 3's one-hot ground truth."
    ]
    assert both.results[0].metrics == alone.results[0].metrics
    assert not {"flagged_by_diagnosis", "diagnoses"} & set(both.results[1].metrics)
    entries = [result.measured for result in both.results]
    assert plots.diagnosis_models(entries) == [] and plots.flagged_table(entries).empty


def test_train_evaluate_reads_isic_one_hot_ground_truth_and_prints_the_share_flagged(trained_models, tmp_path, capsys):
    _, output_dir = trained_models
    isic = make_dataset(tmp_path / "isic", "isic2018", n=24)
    out = tmp_path / "metrics.json"
    assert (
        evaluate.main(
            ["--model", "scratch_cnn", "--models-dir", str(output_dir), "--data-dir", str(isic), "--out", str(out)]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    flagged, rates = metrics["flagged_by_diagnosis"], metrics["at_threshold"]
    # Every image is a MEL or an NV: the share of MELs flagged is the sensitivity, of NVs one minus the specificity.
    assert flagged["MEL"] == {"n": metrics["n_melanoma"], "flagged": pytest.approx(rates["sensitivity"])}
    assert flagged["NV"] == {"n": 24 - metrics["n_melanoma"], "flagged": pytest.approx(1 - rates["specificity"])}
    assert flagged["BCC"] == {"n": 0, "flagged": None}
    printed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert printed["flagged_by_diagnosis"] == {code: counts["flagged"] for code, counts in flagged.items()}


def test_progress_is_shown_at_a_terminal_only():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, piped = Terminal(), io.StringIO()
    for stream in (terminal, piped):
        progress = TerminalProgress(stream)
        progress(32, 40)
        progress(40, 40)
    assert terminal.getvalue() == "\rscored 32 of 40 images\rscored 40 of 40 images\n" and piped.getvalue() == ""


# --- the threshold for a chosen sensitivity ---------------------------------------------------------------


def test_threshold_for_a_target_sensitivity_on_hand_made_scores():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.65, 0.5, 0.3, 0.1])
    # 3 of 4 melanomas (75 %) are reached at 0.7, the highest such threshold; no other lesion is that high.
    assert operating_point(y, p, 0.75) == {"threshold": 0.7, "sensitivity": 0.75, "specificity": 1.0}
    # 76 % needs all four: the lowest melanoma, 0.6, which also flags the 0.65 lesion.
    assert operating_point(y, p, 0.76) == {"threshold": 0.6, "sensitivity": 1.0, "specificity": 0.75}
    assert operating_point(y, p, 0.25)["threshold"] == 0.9
    with pytest.raises(ValueError, match="target sensitivity must be in"):
        operating_point(y, p, 0.0)


# --- the zip's checks: each refusal names the files -------------------------------------------------------


def test_not_a_zip():
    assert "notes.zip: not a zip archive" in problems(b"image_id,label\n", "notes.zip")


def test_a_labels_csv_damaged_in_the_zip_is_refused_by_name():
    data = damaged(make_zip({"a.jpg": b"x" * 100, "labels.csv": labels_csv([("a", 1)] * 20)}), "labels.csv")
    assert "upload.zip: labels.csv is damaged in the zip" in problems(data)


def test_missing_labels_csv_names_where_it_was_found():
    assert "upload.zip: no labels.csv at the top of the zip" in problems(make_zip({"a.jpg": b"x"}))
    deeper = problems(make_zip({"a/b/labels.csv": labels_csv([("a", 1)]), "a/b/a.jpg": b"x"}))
    assert "found only deeper: a/b/labels.csv" in deeper


@pytest.mark.parametrize(
    "csv, expected",
    [
        (
            b"image_id,diagnosis\na,mel\n",
            (
                "batch/labels.csv: missing column(s) label; expected image_id,label "
                "(1 = melanoma, 0 = other), image_id,dx (MEL, NV, BCC, AKIEC, BKL, DF, VASC) "
                "or both, found image_id, diagnosis"
            ),
        ),
        (b"image_id,label\na,1\nb,2\n", "batch/labels.csv line 3: label '2' for b is not 0 or 1"),
        (b"image_id,label\na,1\nb,0\na,0\n", "batch/labels.csv line 4: a is listed more than once (first on line 2)"),
        (b"", "batch/labels.csv: cannot be read as CSV"),
    ],
)
def test_a_malformed_labels_csv_is_refused_by_line(csv, expected):
    assert expected in problems(make_zip({"batch/labels.csv": csv, "batch/a.jpg": b"x", "batch/b.jpg": b"x"}))


def test_an_unknown_dx_code_is_refused_by_line_with_the_allowed_codes():
    csv = b"image_id,label,dx\na,1,mel\nb,0,naevus\nc,0,\n"
    message = problems(make_zip({"batch/labels.csv": csv, **{f"batch/{i}.jpg": b"x" for i in "abc"}}))
    assert (
        "batch/labels.csv line 3: unknown dx 'naevus' for b; expected one of MEL, NV, BCC, AKIEC, BKL, DF, VASC "
        "(any case)"
    ) in message
    assert "1 problem(s)" in message  # 'mel' in lower case, and an empty dx (not known), are accepted


@pytest.mark.parametrize(
    "csv, expected",
    [
        (
            b"image_id,label,dx\na,0,MEL\n",
            "labels.csv line 2: label '0' contradicts dx 'MEL' for a; label is 1 exactly when dx is MEL",
        ),
        (
            b"image_id,dx\na,MEL\nb,\n",
            "labels.csv line 3: no dx for b, and no label column to tell whether it is a melanoma",
        ),
    ],
)
def test_a_label_that_dx_contradicts_or_cannot_give_is_refused(csv, expected):
    assert expected in problems(make_zip({"labels.csv": csv, "a.jpg": b"x", "b.jpg": b"x"}))


def test_a_dx_column_gives_each_image_its_diagnosis_and_the_label_follows_from_it():
    csv = b"image_id,dx,group\na,mel,l1\nb,Bcc,l2\nc,NV,l3\n"
    upload = read_zip(make_zip({"labels.csv": csv, **{f"{i}.jpg": b"x" for i in "abc"}}))
    assert [(i.image_id, i.label, i.dx) for i in upload.images] == [("a", 1, "MEL"), ("b", 0, "BCC"), ("c", 0, "NV")]
    binary = read_zip(make_zip({"labels.csv": labels_csv([("a", 1), ("b", 0)]), "a.jpg": b"x", "b.jpg": b"x"}))
    assert [(i.label, i.dx) for i in binary.images] == [(1, ""), (0, "")]


def test_isic_2018_task_3_one_hot_ground_truth_is_read_from_a_zip():
    header = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
    rows = "a,1.0,0.0,0.0,0.0,0.0,0.0,0.0\nb,0.0,0.0,0.0,0.0,1.0,0.0,0.0\n"
    files = {"ISIC2018_Task3_Test_Input/a.jpg": b"x", "ISIC2018_Task3_Test_Input/b.jpg": b"x"}
    upload = read_zip(make_zip({"ISIC2018_Task3_Test_GroundTruth.csv": (header + rows).encode(), **files}))
    assert [(i.image_id, i.label, i.dx) for i in upload.images] == [("a", 1, "MEL"), ("b", 0, "BKL")]
    broken = make_zip({"ISIC2018_Task3_Test_GroundTruth.csv": (header + rows + "c,0,0,1,0,1,0,0\n").encode(), **files})
    assert (
        "ISIC2018_Task3_Test_GroundTruth.csv line 4: c is not one-hot over MEL, NV, BCC, AKIEC, BKL, DF, VASC"
        in problems(broken)
    )


def test_unmatched_labels_and_images_are_named_a_few_then_counted():
    rows = [(f"id{i}", i % 2) for i in range(10)]
    files = {f"set/id{i}.JPEG": b"x" for i in range(2)}  # any accepted extension, in any case
    files.update({f"set/extra{i}.png": b"x" for i in range(7)})
    files.update(
        {
            "set/labels.csv": labels_csv(rows),
            "set/notes.txt": b"ignored",
            "__MACOSX/set/._id0.JPEG": b"resource fork",
            "set/.DS_Store": b"",
            "set/._id1.JPEG": b"",
        }
    )
    upload = read_zip(make_zip(files))
    assert [image.image_id for image in upload.images] == ["id0", "id1"] and [i.label for i in upload.images] == [0, 1]
    assert upload.warnings == [
        "8 label(s) in labels.csv have no image in the upload: id2, id3, id4, id5, id6 and 3 more. They are left out.",
        (
            "7 image(s) in the upload have no label in labels.csv: set/extra0.png, set/extra1.png, set/extra2.png, "
            "set/extra3.png, set/extra4.png and 2 more. They are left out."
        ),
    ]


def test_one_class_only_or_nothing_matched_is_refused():
    assert "no melanoma (label 1) among the 2 labelled images" in problems(
        make_zip({"labels.csv": labels_csv([("a", 0), ("b", 0)]), "a.jpg": b"x", "b.jpg": b"x"})
    )
    assert "no image in upload.zip matches a label" in problems(
        make_zip({"labels.csv": labels_csv([("a", 0)]), "z.jpg": b"x"})
    )


def test_one_image_id_for_two_files_is_refused():
    message = problems(make_zip({"labels.csv": labels_csv([("a", 0)]), "x/a.jpg": b"x", "y/a.png": b"x"}))
    assert "image_id a names several files (x/a.jpg, y/a.png)" in message


def test_a_dicom_member_without_an_image_extension_is_an_image():
    """PACS exports name DICOM files IM000001 or after a UID (….320); the zip reader went by extension only."""
    dicom = bytes(128) + b"DICM" + b"rest of the file"
    names = {"DICOM/IM000001": dicom, "DICOM/1.2.840.113619.2.320": dicom, "DICOM/README": bytes(200)}
    labels = labels_csv([("IM000001", 1), ("1.2.840.113619.2.320", 0), ("README", 0)])
    upload = read_zip(make_zip({"labels.csv": labels, **names}))
    assert [(image.image_id, image.name) for image in upload.images] == [
        ("IM000001", "DICOM/IM000001"),
        ("1.2.840.113619.2.320", "DICOM/1.2.840.113619.2.320"),
    ]
    assert upload.warnings == ["1 label(s) in labels.csv have no image in the upload: README. They are left out."]


def test_a_zip_bomb_is_refused_without_decompressing_anything(monkeypatch):
    bomb = make_zip({"labels.csv": labels_csv([("a", 1)]), "a.jpg": bytes(8 * 2**20)})  # 8 MiB of zeros: about 1000:1
    bzip2 = make_zip({"labels.csv": labels_csv([("a", 1)])}, zipfile.ZIP_BZIP2)  # inflated without a size bound

    def refuse(*args, **kwargs):
        raise AssertionError("a member was decompressed")

    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)
    assert "a.jpg: declares 8,388,608 bytes from" in problems(bomb) and "possible zip bomb" in problems(bomb)
    monkeypatch.setattr(validation, "MAX_MEMBER_BYTES", 2**20)
    assert "a.jpg: declares 8,388,608 bytes uncompressed, more than the 1,048,576 accepted" in problems(bomb)
    monkeypatch.setattr(validation, "MAX_TOTAL_BYTES", 2**20)
    assert "upload.zip: declares 8,388,627 bytes uncompressed in all" in problems(bomb, "upload.zip")
    monkeypatch.setattr(validation, "MAX_MEMBERS", 1)
    assert "upload.zip: holds 2 files, more than the 1 accepted" in problems(bomb)
    assert "labels.csv: compressed with method 12, which is refused unread" in problems(bzip2)


# --- the page ---------------------------------------------------------------------------------------------


def test_the_page_shows_every_model_and_moves_the_threshold_without_rescoring(trained_models, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from melanoma.config import DEFAULT_MODELS

    data_dir, output_dir = trained_models
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(output_dir))
    calls, hashed = [], []
    original = validation.validate
    monkeypatch.setattr(validation, "validate", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    digest = cases.digest
    monkeypatch.setattr(cases, "digest", lambda data: hashed.append(len(data)) or digest(data))
    at = AppTest.from_file("../app.py", default_timeout=300).run()
    at.switch_page("app_pages/validate.py").run()
    assert not at.exception
    data, labels = fixture_zip(data_dir, count=60)
    at.file_uploader[0].set_value(("mine.zip", data, "application/zip")).run()
    assert not at.exception and calls == [1]
    assert hashed == [len(data)]  # the whole upload hashed once per run, not for each use of its digest
    table = at.dataframe[0].value
    spec = CombinedSpec.load(output_dir)
    assert set(table.Model[:-1]) == {*DEFAULT_MODELS, DIAGNOSIS_MODEL}
    assert table.Model.iloc[-1] == spec.label and any(info.value.endswith(spec.legend) for info in at.info)
    # Binary labels: the diagnosis model's multi-class metrics are left out, and a note says why.
    assert any(info.value.startswith("Left out: the share of each diagnosis flagged") for info in at.info)
    predictor = load_predictor("scratch_cnn", output_dir)
    ids = list(labels)
    probabilities = predictor.probabilities([read_image(str(data_dir / "images" / f"{i}.jpg")).pixels for i in ids])
    expected = roc_auc_score([labels[i] for i in ids], probabilities)
    assert table.set_index("Model").loc["scratch_cnn", "ROC AUC"] == pytest.approx(expected, abs=1e-9)
    assert set(table["Images (melanomas)"]) == {f"60 ({sum(labels.values())})"}
    assert len(at.get("plotly_chart")) == len(table) + 2  # a confusion matrix per row, ROC and reliability curves

    before = at.dataframe[1].value
    at.slider[0].set_value(1.0).run()
    after = at.dataframe[1].value
    assert not at.exception and calls == [1]  # the slider reran the page, not the models
    assert hashed == [len(data)] * 2
    assert (after["Sensitivity there"] == 1.0).all() and not before.equals(after)
    assert not any(frame.value.isna().any().any() for frame in at.dataframe)  # Streamlit would draw "None"


def test_the_page_names_the_problem_in_a_bad_zip(trained_models, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _, output_dir = trained_models
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(output_dir))
    at = AppTest.from_file("../app.py", default_timeout=300).run()
    at.switch_page("app_pages/validate.py").run()
    at.file_uploader[0].set_value(("mine.zip", make_zip({"a.jpg": b"x"}), "application/zip")).run()
    assert not at.exception
    assert "mine.zip: no labels.csv at the top of the zip" in at.error[0].value
    assert not at.dataframe


def test_the_page_lists_a_zips_problems_one_to_a_line_and_counts_the_rest(trained_models, monkeypatch):
    """DataError's indented lines ran together into one paragraph in the browser (Markdown)."""
    from streamlit.testing.v1 import AppTest

    from melanoma.data import MAX_PROBLEMS_SHOWN

    _, output_dir = trained_models
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(output_dir))
    files = {f"img{i}.jpg": b"x" for i in range(MAX_PROBLEMS_SHOWN + 5)}
    files["labels.csv"] = labels_csv((f"img{i}", 7) for i in range(len(files)))
    at = AppTest.from_file("../app.py", default_timeout=300).run()
    at.switch_page("app_pages/validate.py").run()
    at.file_uploader[0].set_value(("mine.zip", make_zip(files), "application/zip")).run()
    assert not at.exception
    lines = at.error[0].value.splitlines()
    assert lines[0] == f"{MAX_PROBLEMS_SHOWN + 5} problem(s) in the data:"
    assert lines[1] == "- labels.csv line 2: label '7' for img0 is not 0 or 1 (1 = melanoma, 0 = other)."
    assert len(lines) == MAX_PROBLEMS_SHOWN + 2 and lines[-1] == "- and 5 more"
    assert not at.dataframe


def test_a_model_that_fails_to_load_is_left_out_of_the_results_and_the_page_says_so(
    trained_models, tmp_path, monkeypatch
):
    """The page said "Choose another model above", and it has no model picker."""
    from streamlit.testing.v1 import AppTest

    data_dir, output_dir = trained_models
    for name in ("scratch_cnn", "efficientnet_lite0"):
        shutil.copytree(output_dir / name, tmp_path / name, ignore=shutil.ignore_patterns("checkpoint", "logs"))
    for item in output_dir.glob("*.keras"):  # the gates' shared feature extractor
        (tmp_path / item.name).symlink_to(item)
    card = json.loads((tmp_path / "efficientnet_lite0" / "card.json").read_text())
    (tmp_path / "efficientnet_lite0" / "card.json").write_text(json.dumps(card | {"sha256": "0" * 64}))
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(tmp_path))
    at = AppTest.from_file("../app.py", default_timeout=300).run()
    at.switch_page("app_pages/validate.py").run()
    at.file_uploader[0].set_value(("mine.zip", fixture_zip(data_dir, count=40)[0], "application/zip")).run()
    assert not at.exception
    (error,) = [error.value for error in at.error]
    assert error.startswith("Model efficientnet_lite0 is unavailable: model.keras does not match the sha256")
    assert error.endswith("It is left out of these results; once it is restored, reload this page to measure it too.")
    assert list(at.dataframe[0].value.Model) == ["scratch_cnn"]
