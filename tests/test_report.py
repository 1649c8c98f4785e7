"""The PDF case report: built from plain values, read back with pypdf, never written to disk."""

import builtins
import io
import os
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from pypdf import PdfReader

from melanoma.card import ModelCard, Training
from melanoma.cases import NO_MAP_NOT_ASSESSED, Decision, scope_sentence
from melanoma.combined import CombinedSpec, combine
from melanoma.metrics import Evidence
from melanoma.report import (
    CaseReport,
    ModelReading,
    case_report_pdf,
    pdf_text,
)

DISCLAIMER = (
    "Decision support, not a diagnosis. The probability comes from a model trained on "
    "dermoscopic images; read it alongside the clinical examination and dermoscopy."
)
CREATED = datetime(2026, 11, 27, 14, 3, 5, tzinfo=timezone(timedelta(hours=1), "CET"))
SHA = "fd94b9266017c7bfb3517d93f2580da368804e3c92dbe51a0ce1728a66dc9d02"
CARD = ModelCard.from_dict(
    {"sha256": SHA, "trained_at": "2026-11-26T22:57:52Z", "threshold": 0.1, "input_size": 96}, "m"
)
UNICODE_NOTE = "naevus — ≥ 6 mm, café, 痣"


def pixels(seed: int, shape=(150, 200, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def decision(model="scratch_cnn", probability=0.7319, in_distribution=True) -> Decision:
    return Decision(
        model,
        probability,
        0.41,
        0.88,
        0.71,
        Evidence(0.62, 0.81, 104, 73, (0.61, 0.78)),
        in_distribution,
        "" if in_distribution else "its features are far from every training image",
    )


def report(decisions=(None,), notes=UNICODE_NOTE, **changes) -> CaseReport:
    decisions = [d or decision() for d in decisions]
    alone = changes.get("combined") is None  # as the page builds them: beside a combined reading or alone
    readings = tuple(ModelReading.from_decision(d, CARD, pixels(10 + i), alone) for i, d in enumerate(decisions))
    case = CaseReport(
        "lesion.jpg",
        pixels(1),
        readings,
        "Occlusion sensitivity",
        20,
        "blue-white-red",
        0.5,
        CREATED,
        DISCLAIMER,
        notes,
    )
    return replace(case, **changes)  # built again, so the changed values are checked too


def read(pdf: bytes) -> tuple[PdfReader, str]:
    """The parsed PDF and its pages' text with whitespace runs as single spaces (lines wrap)."""
    reader = PdfReader(io.BytesIO(pdf))
    return reader, " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


def lines_from_the_bottom(page) -> list[tuple[float, str]]:
    """Each line of text on the page with how far above the page's bottom edge it starts, in points."""
    lines = []

    def visit(text, cm, tm, *_):
        if text.strip():
            lines.append((tm[5] * cm[3] + cm[5], text))

    page.extract_text(visitor_text=visit)
    return lines


def lowest_text(reader: PdfReader) -> float:
    """How far above the bottom edge the lowest line of text of any page starts, in points."""
    return min(height for page in reader.pages for height, _ in lines_from_the_bottom(page))


def body_is_above_the_footer(reader: PdfReader) -> bool:
    """On every page, the footer is the lowest text and ends with its page number; the rest is above it."""
    for number, page in enumerate(reader.pages, 1):
        lines = sorted(lines_from_the_bottom(page))
        footer = " ".join(text for height, text in lines if height < 65)  # its band: under 23 mm from the bottom
        body = [height for height, text in lines if height >= 65]
        if not footer.strip().endswith(f"Page {number} of {len(reader.pages)}.") or min(body) < 71:  # 25 mm
            return False
    return True


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_report_holds_what_the_page_shows_on_one_page_with_both_images():
    case = report()
    reader, text = read(case_report_pdf(case))
    shown = decision()
    assert len(reader.pages) == 1
    assert "scratch_cnn: melanoma probability 73.2%" in text  # the page's metric, f"{p:.1%}"
    for sentence in (shown.summary(), shown.calibration_meaning(), shown.threshold_meaning(), DISCLAIMER):
        assert flat(sentence) in text
    # A melanoma-only model's report says what its verdict does not cover, in the verdict's terms.
    assert shown.scope_note() == scope_sentence(flagged=True) and flat(shown.scope_note()) in text
    assert "so a flagged lesion may be one of them rather than a melanoma." in flat(shown.scope_note())
    assert "Suspicious for melanoma: probability 73.2%, at or above the operating threshold 41.0%." in text
    assert "Model version: trained 2026-11-26T22:57:52Z" in text and f"Weights sha256: {SHA}" in text
    assert "Occlusion sensitivity, patch size 20 pixels of the model input" in text
    assert "colour map blue-white-red, overlay opacity 50%" in text
    assert "Report created: 2026-11-27 14:03:05 CET (UTC+0100)" in text
    assert "Image: lesion.jpg" in text and "Clinician's notes naevus — >= 6 mm, café, [U+75E3]" in text
    images = reader.pages[0].images
    assert len(images) == 2
    embedded = sorted((np.asarray(image.image.convert("RGB")) for image in images), key=lambda a: int(a.sum()))
    expected = sorted((case.image, case.readings[0].overlay), key=lambda a: int(a.sum()))
    for got, want in zip(embedded, expected):
        np.testing.assert_array_equal(got, want)  # lossless: the overlay the page showed, pixel for pixel


def test_characters_the_font_lacks_are_written_visibly_and_never_crash():
    assert pdf_text(UNICODE_NOTE) == "naevus — >= 6 mm, café, [U+75E3]"
    assert pdf_text("Łódź ő ⌀ 6 mm\tbord\x00er 😀\r\nnext") == "[U+0141]ódz o diameter  6 mm bord er [U+1F600]\nnext"
    every_plane = "".join(chr(c) for c in (*range(0x20, 0x3000, 7), 0x1F600, 0x10FFFD, 0xD800, 0x200F, 0x0301))
    reader, text = read(case_report_pdf(report(notes=every_plane, file_name="痣_lesion.jpg")))
    assert "Image: [U+75E3]_lesion.jpg" in text
    assert "Characters the PDF's built-in font cannot show are transliterated or written [U+XXXX]" in text
    _, plain = read(case_report_pdf(report(notes="plain notes, 6 mm")))
    assert "plain notes, 6 mm" in plain and "transliterated" not in plain  # said only when it happened


def test_a_model_that_did_not_assess_the_image_says_so_instead_of_a_probability_and_a_map():
    reader, text = read(case_report_pdf(report([decision(in_distribution=False)])))
    assert "scratch_cnn: melanoma probability not assessed" in text
    assert "Not assessed: its features are far from every training image." in text
    # The page's overlay is dropped: a map of an output that is no probability would read as evidence.
    assert len(reader.pages[0].images) == 1 and flat(NO_MAP_NOT_ASSESSED) in text
    assert "overlay" not in text and "Explanation:" not in text
    assert (
        "operating threshold" not in text and "validation and test lesions" not in text and "sensitivity)" not in text
    )


def test_several_models_give_every_overlay_and_the_combined_reading():
    decisions = [
        decision(name, p)
        for name, p in [
            ("scratch_cnn", 0.2),
            ("inception_v3", 0.65),
            ("efficientnet_b3", 0.5),
            ("efficientnet_lite0", 0.9),
        ]
    ]
    reading = combine(decisions, CombinedSpec(tuple(d.model for d in decisions), 0.45, {}))
    reader, text = read(case_report_pdf(report(decisions, combined=reading.summary(), notes="")))
    assert len(reader.pages) == 1 and len(reader.pages[0].images) == 5  # the upload and four overlays
    assert flat(reading.summary()) in text
    assert (
        "Combined reading: Suspicious for melanoma: mean calibrated probability of 4 models (scratch_cnn, "
        "inception_v3, efficientnet_b3, efficientnet_lite0) 56.2%"
    ) in flat(text)
    for d in decisions:
        assert f"{d.model}: melanoma probability {d.probability:.1%}" in text and flat(d.summary()) in text
    assert "Clinician's notes (none)" in text
    assert lowest_text(reader) > 36  # above the bottom margin: nothing runs off the page
    # Four melanoma-only models: the combined reading says once what none of them covers.
    assert flat(text).count("trained to recognise basal cell carcinoma") == 1


def test_each_occlusion_overlay_carries_its_colour_scale():
    """The colours alone do not say whether red is a drop of 0.01 or of 0.3."""
    readings = (ModelReading.from_decision(decision(), CARD, pixels(10), scale=0.1884),)
    _, text = read(case_report_pdf(report(readings=readings)))
    assert "scratch_cnn: Occlusion sensitivity overlay, full scale ±0.188" in text


def test_a_reading_without_a_map_is_reported_in_words_and_draws_no_overlay():
    """A combined reading's differential-only model: the page draws no map for it, so the report
    shows its reading but no overlay for it."""
    mapped, unmapped = decision("efficientnet_lite0", 0.9), decision("efficientnet_lite0_diagnosis", 0.3)
    readings = (
        ModelReading.from_decision(mapped, CARD, pixels(10), alone=False),
        ModelReading.from_decision(unmapped, CARD, None, alone=False),
    )
    reader, text = read(case_report_pdf(report(readings=readings)))
    assert len(reader.pages) == 1 and len(reader.pages[0].images) == 2  # the upload and one overlay
    assert "efficientnet_lite0: Occlusion sensitivity overlay" in flat(text)
    assert "efficientnet_lite0_diagnosis: Occlusion sensitivity overlay" not in flat(text)
    assert f"efficientnet_lite0_diagnosis: melanoma probability {unmapped.probability:.1%}" in text


def test_grad_cam_says_it_has_no_patch_size():
    _, text = read(case_report_pdf(report(method="Grad-CAM", patch_size=None, colourmap="inferno")))
    assert "Explanation: Grad-CAM (no occlusion patch" in text and "patch size" not in text
    assert "colour map inferno, overlay opacity 50%" in text


def test_notes_too_long_for_the_page_go_on_to_the_next_whole_with_the_footer_on_each():
    notes = "\n".join(f"observation {i}" for i in range(300))
    reader, text = read(case_report_pdf(report([decision(m) for m in "abcd"], notes=notes)))
    assert len(reader.pages) >= 2 and body_is_above_the_footer(reader)
    assert "observation 0 observation 1" in text and "observation 299" in text
    assert flat(text).count(DISCLAIMER.split(".")[0] + ". Page") == len(reader.pages)  # the footer on each page


def test_seven_readings_with_differentials_are_each_kept_whole_above_the_footer():
    """The combined default reads seven models: a one-page report ran their readings and notes off the
    bottom of the page, under the footer."""
    differential = (
        ("BCC", 0.5),
        ("BKL", 0.2),
        ("NV", 0.1),
        ("MEL", 0.1),
        ("AKIEC", 0.05),
        ("DF", 0.03),
        ("VASC", 0.02),
    )
    decisions = [
        replace(
            decision(f"model_{i}", 0.1), malignant_probability=0.65, malignant_threshold=0.2, differential=differential
        )
        for i in range(7)
    ]
    reading = combine(decisions, CombinedSpec(tuple(d.model for d in decisions[:3]), 0.45, {}))
    pdf = case_report_pdf(report(decisions, combined=reading.summary(), notes="seen in clinic; biopsy planned"))
    reader, text = read(pdf)
    assert len(reader.pages) >= 2 and body_is_above_the_footer(reader)
    for d in decisions:  # each reading whole, on one page: its first and last lines on the same page
        page = next(p for p in reader.pages if f"{d.model}: melanoma probability" in p.extract_text())
        assert "Weights sha256" in page.extract_text().split(f"{d.model}: melanoma probability")[1]
    assert "Clinician's notes seen in clinic; biopsy planned" in text


def test_building_a_report_writes_no_file(tmp_path, monkeypatch):
    cwd, temp = tmp_path / "cwd", tmp_path / "temp"
    cwd.mkdir(), temp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    writes = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            writes.append(file)
        return real_open(file, mode, *args, **kwargs)

    def spy_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    pdf = case_report_pdf(report())
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000
    assert writes == []
    assert list(cwd.iterdir()) == [] and list(temp.iterdir()) == []


def test_a_naive_time_or_a_non_rgb_image_is_refused_with_what_to_pass():
    with pytest.raises(ValueError, match=r"naive time 2026-11-27 14:03:05.*datetime.now\(\).astimezone\(\)"):
        report(created=CREATED.replace(tzinfo=None))
    with pytest.raises(ValueError, match=r"The image must be an RGB uint8 array.*float64 of shape \(4, 4\)"):
        report(image=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="at least one model reading; received none"):
        report(readings=())


def test_the_model_version_comes_from_the_card():
    assert replace(CARD, version="2.1").version_text == "2.1"
    assert CARD.version_text == "trained 2026-11-26T22:57:52Z"
    assert replace(CARD, training=Training()).version_text == "unknown (the card records none)"
