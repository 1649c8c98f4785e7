"""FHIR out: the Bundle validates against fhir.resources' R4B models, and every number an EHR reads
from it is the number the page showed."""

import base64
import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle

from melanoma.card import ModelCard
from melanoma.cases import Decision
from melanoma.combined import LOG_ODDS_MEAN, CombinedReading, CombinedSpec, DifferentialSpec, combine
from melanoma.dicom import read_dicom
from melanoma.fhir import (
    AI_ASSERTED,
    DICOM_UID,
    ISIC_DIAGNOSES,
    LOCAL_CODES,
    MELANOMA,
    NOTE_EXTENSION,
    SNOMED,
    BodySite,
    FhirCase,
    ModelFacts,
    build_bundle,
    bundle_file_name,
    bundle_json,
)
from melanoma.report import CaseReport, ModelReading, case_report_pdf
from tests.test_dicom import IDENTIFYING, PATIENT_ID, dicom_bytes, lesion_pixels, region

CREATED = datetime(2024, 5, 13, 10, 42, 7, tzinfo=timezone(timedelta(hours=2)))
MELANOMA_MODEL = Decision("efficientnet_lite0", 0.7321456, 0.0696562, 0.947, 0.646)
DIAGNOSIS_MODEL = Decision(
    "efficientnet_lite0_diagnosis",
    0.0412345,
    0.0823,
    0.9,
    0.7,
    malignant_probability=0.5534,
    malignant_threshold=0.3125,
    differential=(
        ("BCC", 0.4821),
        ("NV", 0.3102),
        ("BKL", 0.1),
        ("MEL", 0.0412345),
        ("AKIEC", 0.0300655),
        ("DF", 0.02),
        ("VASC", 0.0164),
    ),
)
REFUSED = Decision(
    "scratch_cnn", 0.2, 0.1, 0.9, 0.6, in_distribution=False, ood_reason="the image is mostly black (83% of its pixels)"
)
COMBINED = CombinedReading(0.3866901, 0.0911, ("efficientnet_lite0", "efficientnet_lite0_diagnosis"), True, True)
NOTES = "Lesion grew 2 mm since March; patient reports itching. Excision planned ≥ next week."


def facts(name: str, auc: float) -> ModelFacts:
    return ModelFacts(
        name,
        "trained 2026-11-26T23:39:16Z",
        hashlib.sha256(name.encode()).hexdigest(),
        "EfficientNet-Lite0",
        "ham10000 layout",
        auc,
        "Second reader for dermoscopic images.",
        "Not a diagnosis.",
    )


MODELS = {
    decision.model: facts(decision.model, auc)
    for decision, auc in ((MELANOMA_MODEL, 0.878), (DIAGNOSIS_MODEL, 0.861), (REFUSED, 0.847))
}


def pdf_of(decisions: list[Decision]) -> bytes:
    image = lesion_pixels()
    readings = tuple(ModelReading.from_decision(d, card(MODELS[d.model].sha256), image) for d in decisions)
    return case_report_pdf(
        CaseReport(
            "lesion.png",
            image,
            readings,
            "Grad-CAM",
            None,
            "blue-red",
            0.5,
            CREATED,
            "Decision support, not a diagnosis.",
            NOTES,
            COMBINED.summary(),
        )
    )


def case(decisions: list[Decision], **options) -> FhirCase:
    return FhirCase(tuple((d, MODELS[d.model]) for d in decisions), CREATED, **options)


def resources(bundle_text: str) -> dict[str, list[dict]]:
    """The Bundle's resources by type, after validating its JSON text again with fhir.resources."""
    Bundle.model_validate_json(bundle_text)
    by_type: dict[str, list[dict]] = {}
    for entry in json.loads(bundle_text)["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"] | {"url": entry["fullUrl"]})
    return by_type


def observation_of(found: dict, code: str, device: str | None = None) -> dict:
    return next(
        o
        for o in found["Observation"]
        if o["code"]["coding"][0]["code"] == code and (device is None or o["device"]["display"] == device)
    )


def component(observation: dict, system: str, code: str) -> dict:
    return next(
        c
        for c in observation["component"]
        if any(cd["system"] == system and cd["code"] == code for cd in c["code"]["coding"])
    )


def percent(quantity: dict) -> float:
    assert (quantity["unit"], quantity["system"], quantity["code"]) == ("%", "http://unitsofmeasure.org", "%")
    return quantity["value"] / 100


def test_the_bundle_validates_and_reads_back_the_numbers_shown():
    pdf = pdf_of([MELANOMA_MODEL, DIAGNOSIS_MODEL])
    bundle = build_bundle(case([MELANOMA_MODEL, DIAGNOSIS_MODEL], report_pdf=pdf, notes=NOTES, combined=COMBINED))
    assert isinstance(bundle, Bundle) and bundle.type == "transaction"
    found = resources(bundle.model_dump_json())
    assert {kind: len(items) for kind, items in found.items()} == {
        "Device": 2,
        "Observation": 3,
        "DiagnosticReport": 1,
        "Provenance": 1,
    }

    melanoma = observation_of(found, "melanoma-probability", "efficientnet_lite0")
    assert percent(melanoma["valueQuantity"]) == pytest.approx(MELANOMA_MODEL.probability, abs=1e-6)
    assert percent(melanoma["referenceRange"][0]["high"]) == pytest.approx(MELANOMA_MODEL.threshold, abs=1e-6)
    assert melanoma["interpretation"][0]["coding"][0]["code"] == "H"  # at or above the threshold: flagged
    gate = component(melanoma, LOCAL_CODES, "ood-gate")
    assert gate["valueCodeableConcept"]["coding"][0]["code"] == "in-distribution"
    assert melanoma["status"] == "preliminary" and melanoma["meta"]["security"] == [AI_ASSERTED]

    diagnosis = observation_of(found, "melanoma-probability", "efficientnet_lite0_diagnosis")
    assert percent(diagnosis["valueQuantity"]) == pytest.approx(DIAGNOSIS_MODEL.probability, abs=1e-6)
    assert diagnosis["interpretation"][0]["coding"][0]["code"] == "N"  # below: not flagged
    cancer = component(diagnosis, LOCAL_CODES, "skin-cancer-probability")
    assert percent(cancer["valueQuantity"]) == pytest.approx(DIAGNOSIS_MODEL.malignant_probability, abs=1e-6)
    assert percent(cancer["referenceRange"][0]["high"]) == pytest.approx(DIAGNOSIS_MODEL.malignant_threshold, abs=1e-6)
    assert cancer["interpretation"][0]["coding"][0]["code"] == "H"
    differential = {
        code: percent(component(diagnosis, ISIC_DIAGNOSES, code)["valueQuantity"])
        for code, _ in DIAGNOSIS_MODEL.differential
    }
    assert differential == pytest.approx(dict(DIAGNOSIS_MODEL.differential), abs=1e-6)
    assert {"system": SNOMED, "code": MELANOMA[0], "display": MELANOMA[1]} in component(
        diagnosis, ISIC_DIAGNOSES, "MEL"
    )["code"]["coding"]

    combined = observation_of(found, "combined-melanoma-probability")
    assert percent(combined["valueQuantity"]) == pytest.approx(COMBINED.probability, abs=1e-6)
    assert percent(combined["referenceRange"][0]["high"]) == pytest.approx(COMBINED.threshold, abs=1e-6)
    assert component(combined, LOCAL_CODES, "models-disagree")["valueBoolean"] is True
    assert {ref["reference"] for ref in combined["derivedFrom"]} == {melanoma["url"], diagnosis["url"]}

    devices = {d["deviceName"][0]["name"]: d for d in found["Device"]}
    for name, device in devices.items():
        assert device["property"][0]["valueQuantity"][0]["value"] == MODELS[name].test_roc_auc
        versions = {v["type"]["text"]: v["value"] for v in device["version"]}
        assert versions["weights sha256"] == MODELS[name].sha256 and versions["model version"] == MODELS[name].version
        assert "Intended use: Second reader for dermoscopic images." in device["note"][0]["text"]
    assert melanoma["device"]["reference"] == devices["efficientnet_lite0"]["url"]

    report = found["DiagnosticReport"][0]
    assert report["status"] == "preliminary" and report["code"]["coding"][0]["code"] == "1237125003"
    assert report["conclusion"].startswith("Computer-aided assessment, not a diagnosis. Combined reading: ")
    # Beside the combined reading, whose diagnosis member names the other cancers, no scope note per model.
    assert MELANOMA_MODEL.summary() in report["conclusion"] and MELANOMA_MODEL.scope_note() not in report["conclusion"]
    assert [r["reference"] for r in report["result"]] == [combined["url"], melanoma["url"], diagnosis["url"]]
    form = report["presentedForm"][0]
    assert base64.b64decode(form["data"]) == pdf and form["size"] == len(pdf)
    assert form["contentType"] == "application/pdf"
    note = report["extension"][0]
    assert note["url"] == NOTE_EXTENSION and note["valueAnnotation"]["text"] == NOTES
    assert report["issued"] == "2024-05-13T10:42:07+02:00"

    provenance = found["Provenance"][0]
    assert {t["reference"] for t in provenance["target"]} == {
        report["url"],
        melanoma["url"],
        diagnosis["url"],
        combined["url"],
    }
    assert {a["who"]["reference"] for a in provenance["agent"]} == {d["url"] for d in devices.values()}
    assert provenance["reason"][0]["coding"] == [AI_ASSERTED]


def test_a_melanoma_only_model_read_alone_says_what_its_verdict_does_not_cover():
    conclusion = resources(bundle_json(case([MELANOMA_MODEL])))["DiagnosticReport"][0]["conclusion"]
    assert f"{MELANOMA_MODEL.summary()} {MELANOMA_MODEL.scope_note()}" in conclusion


def test_an_image_the_gate_refuses_has_no_value_but_says_why():
    found = resources(bundle_json(case([REFUSED])))
    observation = observation_of(found, "melanoma-probability")
    assert "valueQuantity" not in observation and "interpretation" not in observation
    assert observation["dataAbsentReason"]["text"] == f"Not assessed: {REFUSED.ood_reason}"
    gate = component(observation, LOCAL_CODES, "ood-gate")["valueCodeableConcept"]
    assert (gate["coding"][0]["code"], gate["text"]) == ("out-of-distribution", REFUSED.ood_reason)
    assert "presentedForm" not in found["DiagnosticReport"][0] and "extension" not in found["DiagnosticReport"][0]


def test_a_dicom_case_links_its_study_and_names_no_one_unless_asked():
    data = dicom_bytes(lesion_pixels(), AnatomicRegionSequence=region(), ImageLaterality="L")
    info = read_dicom(data).dicom
    dicom_case = case([MELANOMA_MODEL], dicom=info)
    text = bundle_json(dicom_case)
    assert not any(value in text for value in IDENTIFYING)
    found = resources(text)
    study = found["DiagnosticReport"][0]["imagingStudy"][0]["identifier"]
    assert study == {"system": DICOM_UID, "value": f"urn:oid:{info.study_instance_uid}"}
    assert found["Provenance"][0]["entity"][0]["what"]["identifier"] == study
    site = found["Observation"][0]["bodySite"]
    assert site == {
        "coding": [{"system": SNOMED, "code": "40983000", "display": "Upper arm"}],
        "text": "Upper arm (left)",
    }

    named = resources(bundle_json(dicom_case, identify_patient=True))
    assert named["DiagnosticReport"][0]["subject"]["identifier"]["value"] == PATIENT_ID
    assert named["DiagnosticReport"][0]["subject"]["display"] == "Ilona Kovacs"

    name = bundle_file_name("Kovacs_Ilona_1961.dcm", info)
    assert name == f"{info.sop_instance_uid}.fhir.json"
    assert bundle_file_name("lesions/IMG_0042.jpg") == "IMG_0042.fhir.json"


def test_the_clinician_s_body_site_wins_over_the_file_s():
    info = read_dicom(dicom_bytes(lesion_pixels(), AnatomicRegionSequence=region())).dicom
    found = resources(bundle_json(case([MELANOMA_MODEL], dicom=info, body_site=BodySite("Left scapula"))))
    assert found["Observation"][0]["bodySite"] == {"text": "Left scapula"}


def card(sha256: str) -> ModelCard:
    return ModelCard.from_dict({"sha256": sha256, "version": "1", "threshold": 0.1, "input_size": 96}, "m")


def test_model_facts_from_an_installed_card():
    card = {
        "threshold": 0.07,
        "input_size": 160,
        "name": "efficientnet_lite0",
        "trained_at": "2026-11-26T23:39:16Z",
        "sha256": "ab" * 32,
        "architecture": "EfficientNet-Lite0",
        "data": {
            "layout": "ham10000",
            "grouped_by": "lesion/group id (no group in two splits)",
            "split_counts": {"train": {"other": 7119, "melanoma": 887}, "test": {"other": 892, "melanoma": 113}},
        },
    }
    model = ModelFacts.from_card(
        ModelCard.from_dict(card, "efficientnet_lite0"), {"roc_auc": 0.8779}, "Second reader.", "Not a diagnosis."
    )
    assert (model.version, model.test_roc_auc) == ("trained 2026-11-26T23:39:16Z", 0.8779)
    assert model.training_data == (
        "ham10000 layout, split by lesion/group id (no group in two splits); "
        "train: 7,119 other, 887 melanoma; test: 892 other, 113 melanoma"
    )
    assert "Test ROC AUC: 0.878" in model.card_text()


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: FhirCase(((MELANOMA_MODEL, MODELS["scratch_cnn"]),), CREATED), "with the facts of 'scratch_cnn'"),
        (lambda: FhirCase(((MELANOMA_MODEL, MODELS["efficientnet_lite0"]),), datetime(2024, 5, 13)), "naive time"),
        (lambda: case([MELANOMA_MODEL], report_pdf=b"<html>"), "must be PDF bytes"),
        (lambda: FhirCase((), CREATED), "at least one model reading"),
        (lambda: ModelFacts("m", "1", "not-a-digest"), "64-digit hexadecimal"),
        (lambda: build_bundle(case([MELANOMA_MODEL]), identify_patient=True), "needs a DICOM image"),
    ],
)
def test_wrong_input_is_refused_with_what_was_expected(build, fragment):
    with pytest.raises(ValueError, match=fragment):
        build()


def test_percentages_keep_a_millionth():
    tiny = Decision("efficientnet_lite0", float(np.float32(1e-6)), 0.5, None, None)
    observation = observation_of(resources(bundle_json(case([tiny]))), "melanoma-probability")
    assert percent(observation["valueQuantity"]) == pytest.approx(1e-6, abs=1e-7)


def test_the_combined_observation_carries_its_averaged_differential():
    spec = CombinedSpec(
        ("efficientnet_lite0",), 0.0911, {}, differential=DifferentialSpec(("efficientnet_lite0_diagnosis",), 0.3)
    )
    reading = combine([MELANOMA_MODEL, DIAGNOSIS_MODEL], spec)
    found = resources(bundle_json(case([MELANOMA_MODEL, DIAGNOSIS_MODEL], combined=reading)))
    combined = observation_of(found, "combined-melanoma-probability")
    assert combined["method"]["text"] == (
        "Mean of the members' calibrated probabilities, melanoma: efficientnet_lite0"
        "; differential: mean of the calibrated diagnosis probabilities of efficientnet_lite0_diagnosis"
    )
    log_odds = combine([MELANOMA_MODEL, DIAGNOSIS_MODEL], replace(spec, combination=LOG_ODDS_MEAN))
    text = observation_of(
        resources(bundle_json(case([MELANOMA_MODEL, DIAGNOSIS_MODEL], combined=log_odds))),
        "combined-melanoma-probability",
    )["method"]["text"]
    assert text.startswith("Mean of the members' calibrated log-odds (the geometric mean of their odds), melanoma:")
    assert len(combined["derivedFrom"]) == 2  # the melanoma member and the diagnosis member
    cancer = component(combined, LOCAL_CODES, "skin-cancer-probability")
    assert percent(cancer["valueQuantity"]) == pytest.approx(reading.malignant_probability, abs=1e-6)
    assert percent(cancer["referenceRange"][0]["high"]) == pytest.approx(0.3, abs=1e-6)
    mel = percent(component(combined, ISIC_DIAGNOSES, "MEL")["valueQuantity"])
    assert mel == pytest.approx(MELANOMA_MODEL.probability, abs=1e-6)  # the combined verdict's probability
    assert (
        "The averaged differential's models: efficientnet_lite0_diagnosis."
        in found["DiagnosticReport"][0]["conclusion"]
    )


@pytest.mark.parametrize("study_uid", ["", "1.2.03", "../Kovacs_Ilona"])
def test_a_study_is_linked_only_by_a_well_formed_uid(study_uid):
    """An empty Study Instance UID linked the report to "urn:oid:", which identifies nothing: without a
    well-formed UID the report and its Provenance name no study."""
    info = read_dicom(dicom_bytes(lesion_pixels(), StudyInstanceUID=study_uid)).dicom
    text = bundle_json(case([MELANOMA_MODEL], dicom=info))
    found = resources(text)
    assert "imagingStudy" not in found["DiagnosticReport"][0] and "entity" not in found["Provenance"][0]
    assert "urn:oid:" not in text and "Kovacs" not in text
