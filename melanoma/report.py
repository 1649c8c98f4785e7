"""A PDF report of one case, built in memory for the clinician's record. No Streamlit here.

The Diagnose page gathers what it already shows (each model's probability and verdict in words,
the overlays at the chosen settings, the combined reading, the clinician's notes) into a
CaseReport; `case_report_pdf` lays it out on A4 with fpdf2 and returns the bytes: one page where
it fits, else as many as it needs, each with the footer and its page number. Images go in as
arrays and the PDF comes out as bytes: nothing touches the server's disk.

fpdf2's built-in fonts cover Windows-1252 only, and no Unicode font is guaranteed on a bare Debian
+ pip machine (matplotlib, whose DejaVu Sans would do, is not a dependency). Text the font cannot
show is transliterated (≥ becomes >=, ő becomes o) or written
as [U+XXXX], and the report says so: a note is never lost silently and never crashes the report.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from fpdf import FPDF
from PIL import Image

from melanoma import __version__
from melanoma.card import ModelCard
from melanoma.cases import NO_MAP_NOT_ASSESSED, Decision

ENCODING = "windows-1252"  # what fpdf2 declares for its core fonts (WinAnsiEncoding)
FONT = "Helvetica"
MARGIN = 15.0  # mm, A4 portrait
IMAGE_HEIGHTS = (85.0, 65.0, 50.0, 38.0, 28.0)  # mm: the tallest image row that leaves the text room, tried in turn
FOOTER = 10.0  # mm kept free at the bottom of the page
MIN_NOTE_LINES = 4  # of the notes, kept on the first page with the readings when the image row can shrink
# Symbols clinicians type that have a plain-text spelling; NFKD and [U+XXXX] handle the rest.
TRANSLITERATIONS = {
    "≥": ">=",
    "≤": "<=",
    "≠": "!=",
    "≈": "~",
    "\u2212": "-",
    "→": "->",
    "←": "<-",
    "⇒": "=>",
    "⌀": "diameter ",
    "\u2009": " ",
    "\u202f": " ",
    "\u2011": "-",
}


@dataclass(frozen=True)
class ModelReading:
    """One model's reading of the case, in the words the Diagnose page shows."""

    name: str
    version: str
    sha256: str  # of the weights file, from the model's card (checked when the weights load)
    probability: str  # the page's metric: "73.2%", or "not assessed"
    summary: str  # Decision.summary(): the verdict at the threshold, or why the image was not assessed
    # A diagnosis model's skin-cancer line and differential (a melanoma model's note that it reads
    # melanoma only), then what the probability and the threshold mean; when not assessed, why it has no map.
    meanings: tuple[str, ...]
    # The explanation overlay as shown, RGB uint8; None for a model the page drew no map for (a
    # combined reading's model that adds only to its differential, or one that did not assess the image).
    overlay: np.ndarray | None
    # An occlusion overlay's full colour scale, ± in probability (melanoma.explain.render.signed_scale):
    # the colours alone do not say whether red is a drop of 0.01 or 0.3. None for Grad-CAM (relative).
    scale: float | None = None

    @classmethod
    def from_decision(
        cls,
        decision: Decision,
        card: ModelCard,
        overlay: np.ndarray | None,
        alone: bool = True,
        scale: float | None = None,
    ) -> ModelReading:
        """The reading the page shows for `decision`, identified by the model's card; `alone`: with no
        combined reading beside it (Decision.scope_note); `scale`: its overlay's full scale. A reading
        that did not assess the image keeps no overlay: a map of an output that is no probability
        would read as evidence."""
        if not decision.assessed:
            return cls(
                decision.model,
                card.version_text,
                card.sha256,
                "not assessed",
                decision.summary(),
                (NO_MAP_NOT_ASSESSED,),
                None,
            )
        diagnosis_lines = tuple(
            line
            for line in (decision.skin_cancer_summary(), decision.differential_text(), decision.scope_note(alone))
            if line
        )
        return cls(
            decision.model,
            card.version_text,
            card.sha256,
            f"{decision.probability:.1%}",
            decision.summary(),
            (*diagnosis_lines, decision.calibration_meaning(), decision.threshold_meaning()),
            overlay,
            scale,
        )


@dataclass(frozen=True)
class CaseReport:
    """Everything one case's report says; plain values, so the report matches the page by construction."""

    file_name: str
    image: np.ndarray  # the uploaded image as shown, RGB uint8
    readings: tuple[ModelReading, ...]
    method: str  # "Occlusion sensitivity" or "Grad-CAM"
    patch_size: int | None  # occlusion patch in pixels of the model input; None for Grad-CAM, which has none
    colourmap: str
    opacity: float
    created: datetime  # local time, with its time zone
    disclaimer: str  # ui.DISCLAIMER: decision support, not a diagnosis
    notes: str = ""  # the clinician's own notes
    combined: str | None = None  # CombinedReading.summary() when several models were chosen
    image_notes: tuple[str, ...] = ()  # what decoding changed (DecodedImage.notes)

    def __post_init__(self) -> None:
        if not self.readings:
            raise ValueError("A case report needs at least one model reading; received none. Score the image first.")
        if self.created.tzinfo is None or self.created.utcoffset() is None:
            raise ValueError(
                f"The report time must carry its time zone; received the naive time {self.created}. "
                "Pass datetime.now().astimezone()."
            )
        overlays = ((f"{r.name} overlay", r.overlay) for r in self.mapped_readings)
        for label, pixels in [("image", self.image), *overlays]:
            if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
                raise ValueError(
                    f"The {label} must be an RGB uint8 array of shape (height, width, 3); received "
                    f"{pixels.dtype} of shape {pixels.shape}. Pass the pixels the page shows."
                )

    @property
    def mapped_readings(self) -> tuple[ModelReading, ...]:
        """The readings that carry a map, in the report's order."""
        return tuple(r for r in self.readings if r.overlay is not None)


def format_time(moment: datetime) -> str:
    """Local date and time with the zone's name and offset, e.g. 2026-11-27 14:03:05 CET (UTC+0100)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")


def _fallback(character: str) -> str:
    if character in TRANSLITERATIONS:
        return TRANSLITERATIONS[character]
    if unicodedata.category(character).startswith("C"):
        return " "  # control and format characters: a space keeps the words apart
    base = "".join(c for c in unicodedata.normalize("NFKD", character) if not unicodedata.combining(c))
    if base and base != character and _encodable(base):
        return base
    return f"[U+{ord(character):04X}]"


def _encodable(text: str) -> bool:
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def _plain(text: str) -> str:
    """Line breaks as \\n and tabs as spaces: layout, not characters to report as replaced."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")


def pdf_text(text: str) -> str:
    """`text` in what the PDF's built-in font can show: other characters transliterated or written [U+XXXX]."""
    text = _plain(text)
    return "".join(
        c if c == "\n" or (_encodable(c) and not unicodedata.category(c).startswith("C")) else _fallback(c)
        for c in text
    )


def _explanation(report: CaseReport) -> str:
    settings = f"colour map {report.colourmap}, overlay opacity {report.opacity:.0%}"
    if report.patch_size is None:
        return (
            f"Explanation: {report.method} (no occlusion patch: Grad-CAM reads the network's last convolutional "
            f"layer); {settings}. Dark to bright: how strongly each region drove the melanoma output (relative)."
        )
    low, *_, high = report.colourmap.split("-")
    return (
        f"Explanation: {report.method}, patch size {report.patch_size} pixels of the model input; {settings}. "
        f"{high.capitalize()}: greying this region out lowers the probability (it supports melanoma). "
        f"{low.capitalize()}: greying it out raises the probability (it argues against melanoma)."
    )


class _Document(FPDF):
    """A4 pages, each ending with `footer_text` and its page number."""

    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.footer_text = footer_text

    def footer(self) -> None:
        self.set_y(self.h - MARGIN - FOOTER + 3)
        self.set_font(FONT, "", 7)
        self.multi_cell(0, 7 * 0.45, pdf_text(f"{self.footer_text} Page {self.page_no()} of {{nb}}."), align="L")


class _Page:
    """The report's pages; `draw=False` lays the text out without embedding images, to measure it."""

    def __init__(self, draw: bool, footer_text: str) -> None:
        self.draw = draw
        self.pdf = _Document(footer_text)
        self.pdf.core_fonts_encoding = ENCODING
        self.pdf.set_margins(MARGIN, MARGIN, MARGIN)
        self.pdf.set_auto_page_break(True, margin=MARGIN + FOOTER)  # text flows on above the footer
        self.pdf.add_page()
        self.replaced = False

    @property
    def bottom(self) -> float:
        return self.pdf.h - MARGIN - FOOTER

    def text(self, text: str, size: float = 9.0, style: str = "", gap: float = 0.8) -> None:
        shown = pdf_text(text)
        self.replaced |= shown != _plain(text)
        self.pdf.set_font(FONT, style, size)
        self.pdf.multi_cell(0, size * 0.45, shown, align="L", new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_y(self.pdf.get_y() + gap)

    def together(self, parts: list[tuple[str, float, str, float]]) -> None:
        """Texts (text, size, style, gap after) on one page: a new page first where they would not
        fit in the room left, so a model's reading is never split by a page break."""
        height = 0.0
        for text, size, style, gap in parts:
            self.pdf.set_font(FONT, style, size)
            height += self.pdf.multi_cell(0, size * 0.45, pdf_text(text), dry_run=True, output="HEIGHT") + gap
        if self.pdf.get_y() + height > self.bottom:
            self.pdf.add_page()
        for text, size, style, gap in parts:
            self.text(text, size, style, gap)

    def lines(self, text: str, size: float) -> list[str]:
        self.pdf.set_font(FONT, "", size)
        lines = self.pdf.multi_cell(0, size * 0.45, pdf_text(text), align="L", dry_run=True, output="LINES")
        return [line.encode("latin-1").decode(ENCODING) for line in lines]  # fpdf2 returns its encoded form

    def images(self, pictures: list[tuple[np.ndarray, str]], max_height: float) -> None:
        """A row of images side by side, each captioned, as tall as `max_height` allows."""
        gap = 4.0
        width = (self.pdf.epw - gap * (len(pictures) - 1)) / len(pictures)
        height = min(max_height, max(width * p.shape[0] / p.shape[1] for p, _ in pictures))
        top, lowest = self.pdf.get_y(), self.pdf.get_y()
        for index, (pixels, caption) in enumerate(pictures):
            w = min(width, height * pixels.shape[1] / pixels.shape[0])
            x = MARGIN + index * (width + gap)
            if self.draw:
                self.pdf.image(Image.fromarray(pixels), x=x, y=top, w=w, h=w * pixels.shape[0] / pixels.shape[1])
            self.pdf.set_xy(x, top + height + 1)
            self.pdf.set_font(FONT, "", 7.5)
            self.pdf.multi_cell(width, 3.4, pdf_text(caption), align="L", new_x="LEFT", new_y="NEXT")
            lowest = max(lowest, self.pdf.get_y())
        self.pdf.set_xy(MARGIN, lowest + 2)


def _layout(report: CaseReport, max_image_height: float, draw: bool) -> _Page:
    """Everything but the notes, top to bottom: header, disclaimer, images, explanation, readings."""
    page = _Page(
        draw,
        f"Generated by melanoma-decision-support {__version__} on {format_time(report.created)}. "
        f"{report.disclaimer.split('.')[0]}.",
    )
    page.pdf.set_title("Melanoma decision support: case report")
    page.pdf.set_creator(f"melanoma-decision-support {__version__}")
    page.text("Melanoma decision support: case report", size=15, style="B", gap=1)
    page.text(f"Image: {report.file_name}    Report created: {format_time(report.created)}", gap=0.3)
    for note in report.image_notes:
        page.text(f"Note on the image: {note}.", size=8, gap=0.3)
    page.pdf.set_y(page.pdf.get_y() + 1)
    page.text(report.disclaimer, size=9.5, style="B", gap=2)
    page.images(
        [(report.image, "Uploaded image")]
        + [
            (r.overlay, f"{r.name}: {report.method} overlay" + (f", full scale ±{r.scale:.3f}" if r.scale else ""))
            for r in report.mapped_readings
        ],
        max_image_height,
    )
    if report.mapped_readings:  # with no map, each reading says why it has none
        page.text(_explanation(report), size=8, gap=2)
    if report.combined:
        page.text(report.combined, size=9.5, style="B", gap=2)
    for reading in report.readings:
        page.together(
            [
                (f"{reading.name}: melanoma probability {reading.probability}", 10.5, "B", 0.3),
                (reading.summary, 9.0, "", 0.3),
                *((meaning, 8.5, "", 0.3) for meaning in reading.meanings),
                (f"Model version: {reading.version}\nWeights sha256: {reading.sha256}", 7.5, "", 2.0),
            ]
        )
    return page


def _notes(page: _Page, notes: str) -> None:
    """The clinician's notes, whole: on the next page where they run past this one."""
    page.together([("Clinician's notes", 10.5, "B", 0.3)])
    page.text(notes if notes.strip() else "(none)", style="" if notes.strip() else "I")
    if page.replaced:
        page.text(
            "Characters the PDF's built-in font cannot show are transliterated or written [U+XXXX].", size=7, gap=0
        )


def case_report_pdf(report: CaseReport) -> bytes:
    """The case's A4 report as PDF bytes, built in memory.

    The image row is as tall as leaves room on the first page for every reading and a few lines of
    notes (the text is laid out without images first to find that height). Where even the smallest
    row leaves too little (seven models' readings), the images keep their largest size and the text
    flows onto further pages.
    """
    height = IMAGE_HEIGHTS[0]
    for candidate in IMAGE_HEIGHTS:
        trial = _layout(report, candidate, draw=False)
        needed = (min(len(trial.lines(report.notes, 9.0)), MIN_NOTE_LINES) + 2) * 9.0 * 0.45 + 5
        if trial.pdf.page_no() == 1 and trial.pdf.get_y() + needed <= trial.bottom:
            height = candidate
            break
    page = _layout(report, height, draw=True)
    _notes(page, report.notes)
    return bytes(page.pdf.output())
