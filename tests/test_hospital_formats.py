"""DICOM in and FHIR / DICOM out through the command line and the Diagnose page, on the fixture models."""

import base64
import io
import json

import numpy as np
import pydicom
import pytest
from pypdf import PdfReader
from streamlit.testing.v1 import AppTest

from melanoma.__main__ import main as cli
from melanoma.images import decode_image, read_image
from melanoma.inference import load_predictor
from tests.test_dicom import IDENTIFYING, dicom_bytes
from tests.test_fhir import observation_of, percent, resources


def fixture_photograph(data_dir) -> np.ndarray:
    return read_image(str(sorted((data_dir / "images").glob("*.jpg"))[0])).pixels


def test_a_dicom_photograph_scores_as_its_pixels_and_predict_writes_a_bundle(trained_models, tmp_path, capsys):
    data_dir, output_dir = trained_models
    pixels = fixture_photograph(data_dir)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "lesion.dcm").write_bytes(dicom_bytes(pixels))
    assert (
        cli(
            [
                "--models-dir",
                str(output_dir),
                "predict",
                "--model",
                "scratch_cnn",
                "--json",
                "--fhir",
                str(tmp_path / "fhir"),
                str(tmp_path / "in"),
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    expected = load_predictor("scratch_cnn", output_dir).probabilities([pixels])[0]
    assert row["probability"] == pytest.approx(expected, abs=1e-6)  # the same as the PNG of its pixels
    bundles = list((tmp_path / "fhir").glob("*.fhir.json"))
    assert len(bundles) == 1 and "lesion" not in bundles[0].name  # named by its SOP Instance UID
    found = resources(bundles[0].read_text())
    observation = observation_of(found, "melanoma-probability")
    assert percent(observation["valueQuantity"]) == pytest.approx(row["probability"], abs=1e-6)
    assert not any(value in bundles[0].read_text() for value in IDENTIFYING)


def test_predict_combined_writes_one_observation_per_member_and_the_combined_one(trained_models, tmp_path, capsys):
    data_dir, output_dir = trained_models
    image = sorted((data_dir / "images").glob("*.jpg"))[0]
    assert (
        cli(
            [
                "--models-dir",
                str(output_dir),
                "predict",
                "--model",
                "combined",
                "--json",
                "--fhir",
                str(tmp_path),
                str(image),
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    found = resources((tmp_path / f"{image.stem}.fhir.json").read_text())
    combined = observation_of(found, "combined-melanoma-probability")
    assert percent(combined["valueQuantity"]) == pytest.approx(row["probability"], abs=1e-6)
    spec = json.loads((output_dir / "combined.json").read_text())
    assert {device["deviceName"][0]["name"] for device in found["Device"]} == set(spec["members"])


PATIENT_NAMED = "Kovacs_Ilona_1961-04-12.dcm"  # a PACS export named after the patient


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_the_diagnose_page_offers_fhir_and_a_dicom_report_in_the_same_study(trained_models, monkeypatch, downloads):
    """...and names the image by its UID in every report, as in every file name: the upload's name
    (in the PDF, the PDF inside the Bundle and the Encapsulated PDF) may be the patient's."""
    data_dir, output_dir = trained_models
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(output_dir))
    data = dicom_bytes(fixture_photograph(data_dir), StudyDescription="Dermoscopy")
    at = AppTest.from_file("../app.py", default_timeout=300)
    at.run()
    at.selectbox[0].set_value("scratch_cnn")
    at.file_uploader[0].set_value((PATIENT_NAMED, data, "application/dicom"))
    at.run()
    assert not at.exception
    shown = " ".join(
        str(element.value)
        for kind in ("caption", "markdown", "info", "success", "error", "warning")
        for element in at.get(kind)
    )
    assert "study date 2024-05-13" in shown and not any(value in shown for value in IDENTIFYING)
    notes_help = at.text_area[0].proto.help  # the notes travel with every report, so the help says where
    assert all(where in notes_help for where in ("PDF report", "FHIR Bundle", "DICOM report")), notes_help
    buttons = {button.proto.label: button for button in at.get("download_button")}
    assert {
        "Download for the health record (FHIR R4 Bundle)",
        "Download report for PACS (DICOM Encapsulated PDF, same study)",
    } <= set(buttons)
    probability = load_predictor("scratch_cnn", output_dir).probabilities([decode_image(data).pixels])[0]
    assert [m.value for m in at.metric] == [f"{probability:.1%}"]
    source = pydicom.dcmread(io.BytesIO(data))
    pdfs = [downloads[buttons["Download report (PDF)"]][0]]
    for label, check in [
        ("Download for the health record (FHIR R4 Bundle)", "fhir"),
        ("Download report for PACS (DICOM Encapsulated PDF, same study)", "dicom"),
    ]:
        content, _, _ = downloads[buttons[label]]
        if check == "fhir":
            found = resources(content if isinstance(content, str) else content.decode())
            assert percent(observation_of(found, "melanoma-probability")["valueQuantity"]) == pytest.approx(probability)
            pdfs.append(base64.b64decode(found["DiagnosticReport"][0]["presentedForm"][0]["data"]))
        else:
            report = pydicom.dcmread(io.BytesIO(content))
            assert (
                report.StudyInstanceUID == source.StudyInstanceUID
                and report.SeriesInstanceUID != source.SeriesInstanceUID
            )
            pdfs.append(bytes(report.EncapsulatedDocument)[: report.EncapsulatedDocumentLength])
            assert f"{probability:.1%}" in pdf_text(pdfs[-1])
    for pdf in pdfs:
        text = pdf_text(pdf)
        assert f"Image: {source.SOPInstanceUID}" in text and not any(value in text for value in IDENTIFYING), text
    # Every file made from the image is named after its UID: a PACS export's file name may be the patient's.
    names = {label: downloads[button][2] for label, button in buttons.items() if label != "Download results (CSV)"}
    assert "Download report (PDF)" in names and any(label.startswith("Download overlay") for label in names)
    assert all(
        name.startswith(f"{source.SOPInstanceUID}_") or name == f"{source.SOPInstanceUID}.fhir.json"
        for name in names.values()
    ), names


def test_a_validation_zip_of_dicom_photographs_scores_them_as_their_pixels(trained_models):
    """The Validate page's zip reader takes .dcm members like any image: the same probabilities as the pixels."""
    import zipfile

    from melanoma import validation

    data_dir, output_dir = trained_models
    paths = sorted((data_dir / "images").glob("*.jpg"))
    chosen = [paths[0], paths[1], paths[-1], paths[-2]]  # the fixture's first images are melanomas, its last ones not
    labels = {row.split(",")[0]: row.split(",")[1] for row in (data_dir / "labels.csv").read_text().splitlines()[1:]}
    pixels = [read_image(str(path)).pixels for path in chosen]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("labels.csv", "image_id,label\n" + "".join(f"{p.stem},{labels[p.stem]}\n" for p in chosen))
        for path, image in zip(chosen, pixels):
            archive.writestr(f"{path.stem}.dcm", dicom_bytes(image))
    upload = validation.read_zip(buffer.getvalue())
    predictor = load_predictor("scratch_cnn", output_dir)
    result = validation.validate([predictor], upload.images, upload.read)
    by_name = dict(zip((image.image_id for image in result.images), result.results[0].probabilities))
    expected = predictor.probabilities(pixels)
    assert not result.skipped and [by_name[p.stem] for p in chosen] == pytest.approx(list(expected), abs=1e-6)


def test_a_malformed_uid_names_no_file_and_an_unwritable_bundle_is_reported_per_image(trained_models, tmp_path, capsys):
    """A SOP Instance UID is read from the file: "../../escaped/Kovacs_Ilona" wrote its Bundle outside
    --fhir under the patient's name (or crashed with FileNotFoundError). Only a well-formed UID names
    a file; a Bundle that cannot be written is reported for its image and the run goes on."""
    data_dir, output_dir = trained_models
    pixels = fixture_photograph(data_dir)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(dicom_bytes(pixels, SOPInstanceUID="../../escaped/Kovacs_Ilona"))
    (tmp_path / "in" / "b.dcm").write_bytes(dicom_bytes(pixels, SOPInstanceUID="1.2.0.33"))
    fhir = tmp_path / "out" / "fhir"
    options = ["predict", "--model", "scratch_cnn", "--fhir", str(fhir), str(tmp_path / "in")]
    assert cli(["--models-dir", str(output_dir), *options]) == 0
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.fhir.json"))
    assert written == ["out/fhir/1.2.0.33.fhir.json", "out/fhir/dicom-image.fhir.json"]
    capsys.readouterr()
    for path in written:
        (tmp_path / path).unlink()
    (fhir / "1.2.0.33.fhir.json").mkdir()  # where b's Bundle goes: writing it fails
    assert cli(["--models-dir", str(output_dir), *options]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and (fhir / "dicom-image.fhir.json").is_file()
    assert f"error: {tmp_path / 'in' / 'b.dcm'}'s FHIR Bundle could not be written to {fhir}" in captured.err
    assert "Kovacs" not in captured.err
