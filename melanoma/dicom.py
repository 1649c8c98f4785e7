"""DICOM in and out: dermoscopic photographs from a PACS, and the case report back into their study.

A hospital keeps dermoscopic images as DICOM (Dermoscopic Photography or VL Photographic Image
Storage) and files reports beside them. `read_dicom` turns such a file into the same
`DecodedImage` every upload becomes, plus a `DicomInfo`: what the page may show (study date, body
site), who the patient is (kept apart and out of every repr, log line and proposed file name), and
the Patient and Study values `encapsulated_pdf` needs to write the PDF case report into the same
study as an Encapsulated PDF. Everything happens in memory; nothing touches the disk.

Anything else a PACS export can hold (a CT slice, a structured report, a multi-frame object, a
compression no installed plugin decodes, a cut-off file) is refused with an ImageError that says
what it is and what is accepted.
"""

from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pydicom
from PIL import Image
from pydicom import config
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder, pixel_array
from pydicom.pixels.utils import _get_jpg_parameters
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    UncompressedTransferSyntaxes,
    generate_uid,
)
from pydicom.valuerep import PersonName

from melanoma import __version__
from melanoma.images import MAX_PIXELS, DecodedImage, ImageError, check_size

DERMOSCOPIC_PHOTOGRAPHY = UID("1.2.840.10008.5.1.4.1.1.77.1.7")
VL_PHOTOGRAPHIC = UID("1.2.840.10008.5.1.4.1.1.77.1.4")
ACCEPTED_SOP_CLASSES = (DERMOSCOPIC_PHOTOGRAPHY, VL_PHOTOGRAPHIC)
ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")
ACCEPTED_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422")  # pydicom converts the two YBR forms to RGB
# Compressed syntaxes a dermoscope or PACS writes for 8-bit colour photographs; each is accepted
# only while an installed plugin decodes it (`decodable_syntaxes`). JPEG 2000 is left out: its
# colour photographs are stored as YBR_ICT / YBR_RCT, which no test here covers.
COMPRESSED_SYNTAXES = tuple(
    UID(uid)
    for uid in (
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1): Pillow or pylibjpeg-libjpeg
        "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 and 4): Pillow or pylibjpeg-libjpeg
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14): pylibjpeg-libjpeg
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction: pylibjpeg-libjpeg
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless: pylibjpeg-libjpeg
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless: pylibjpeg-libjpeg
        "1.2.840.10008.1.2.5",  # RLE Lossless: pydicom itself
    )
)
# JPEG through Pillow when it can: uploaded JPEGs are decoded by Pillow (melanoma.images), so a
# DICOM-wrapped JPEG gives the pixels the same JPEG gives as a file.
PREFERRED_PLUGIN = "pillow"
# A Deflated file's data set is inflated here to at most this many bytes: the pixels of the largest
# accepted photograph and room for its other elements. pydicom would inflate all of it before any
# check could run, and a 2 MB upload can inflate to gigabytes.
MAX_INFLATED_BYTES = MAX_PIXELS * 3 + 16 * 2**20
LATERALITY = {"L": "left", "R": "right", "B": "both sides", "U": "unpaired"}

# The values the Encapsulated PDF copies so that a PACS files it under the same patient and study
# (PS3.3 A.45.1: Patient, General Study and Patient Study modules). Only text-valued attributes;
# sequences (other patient IDs, issuer of accession number) are not carried over.
PATIENT_MODULE = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientComments",
)
GENERAL_STUDY_MODULE = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
PATIENT_STUDY_MODULE = ("PatientAge", "PatientSize", "PatientWeight")
STUDY_KEYWORDS = PATIENT_MODULE + GENERAL_STUDY_MODULE + PATIENT_STUDY_MODULE
# Type 2 attributes: present in every instance, empty when unknown.
REQUIRED_EMPTY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
REPORT_TITLE = "Melanoma decision support: case report"
REPORT_SERIES_NUMBER = 999  # sorts the report's series after the photographs' in a viewer
MANUFACTURER = "melanoma-decision-support"

# pydicom's reading validation warns and logs invalid values verbatim, a patient's name among
# them; this reader validates what it uses itself, so those messages are switched off.
config.settings.reading_validation_mode = config.IGNORE


@dataclass(frozen=True)
class CodedConcept:
    """A DICOM code (e.g. the anatomic region): its scheme ("SCT" is SNOMED CT), value and meaning."""

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True, repr=False)
class DicomIdentity:
    """Who the image shows. Shown only when the clinician asks; its repr withholds the values, so a
    log line or a traceback that prints it reveals nothing."""

    patient_name: str
    patient_id: str
    issuer: str  # IssuerOfPatientID: who assigned the ID (free text)
    birth_date: date | None

    def __repr__(self) -> str:
        return "DicomIdentity(<withheld>)"


@dataclass(frozen=True)
class DicomInfo:
    """What a DICOM photograph says about itself, apart from its pixels.

    The fields are what the page may show without identifying anyone; `identity` is kept apart for
    the clinician who asks, and `study_values` (out of the repr) are the Patient and Study values
    an Encapsulated PDF copies to land in the same study.
    """

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    study_date: date | None
    body_part: str | None  # BodyPartExamined, e.g. "ARM"
    anatomic_region: CodedConcept | None  # AnatomicRegionSequence's first item
    laterality: str | None  # ImageLaterality in words
    study_values: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def sop_class(self) -> str:
        return UID(self.sop_class_uid).name

    @property
    def transfer_syntax(self) -> str:
        return UID(self.transfer_syntax_uid).name

    @property
    def body_site(self) -> str | None:
        """The lesion's site as the file names it, e.g. "Upper arm (left)"; None when it names none."""
        site = self.anatomic_region.meaning if self.anatomic_region else self.body_part
        if site and self.laterality and self.laterality != LATERALITY["U"]:
            return f"{site} ({self.laterality})"
        return site

    @property
    def identity(self) -> DicomIdentity:
        values = dict(self.study_values)
        return DicomIdentity(
            _display_name(values.get("PatientName", "")),
            values.get("PatientID", ""),
            values.get("IssuerOfPatientID", ""),
            _date(values.get("PatientBirthDate")),
        )

    def summary(self) -> str:
        """One line for the page: the kind of object, study date and body site; nothing identifying."""
        parts = [f"DICOM {self.sop_class}", f"{self.transfer_syntax}"]
        if self.study_date:
            parts.append(f"study date {self.study_date.isoformat()}")
        if self.body_site:
            parts.append(f"body site {self.body_site}")
        return "; ".join(parts)


@dataclass(frozen=True)
class EncapsulatedReport:
    """The case report as a DICOM Encapsulated PDF, with the UIDs it was given."""

    data: bytes
    sop_instance_uid: str
    series_instance_uid: str

    @property
    def file_name(self) -> str:
        """A file name from the new instance's UID: never from the patient or the upload's name."""
        return f"{self.sop_instance_uid}.dcm"


def _display_name(value: str) -> str:
    """DICOM's "Family^Given^Middle^Prefix^Suffix" as a person reads it."""
    name = PersonName(value)
    words = [name.name_prefix, name.given_name, name.middle_name, name.family_name, name.name_suffix]
    return " ".join(word for word in words if word) or value


def _date(value: str | None) -> date | None:
    try:
        return datetime.strptime(value, "%Y%m%d").date() if value else None
    except ValueError:
        return None  # a malformed DA is shown as unknown rather than refusing the image


def _text(value) -> str:
    """An element's value as DICOM text (multiple values joined by a backslash)."""
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value)
    return "" if value is None else str(value)


def decodable_syntaxes() -> tuple[UID, ...]:
    """The transfer syntaxes accepted here: uncompressed ones, and each of `COMPRESSED_SYNTAXES`
    an installed plugin decodes."""
    return tuple(UncompressedTransferSyntaxes) + tuple(
        uid for uid in COMPRESSED_SYNTAXES if get_decoder(uid).is_available
    )


def _accepted_classes() -> str:
    return " or ".join(f"{uid.name} ({uid})" for uid in ACCEPTED_SOP_CLASSES)


def _inflate(body: bytes, name: str) -> bytes:
    """A Deflated data set (PS3.5 A.5: raw deflate after the file meta), inflated no further than
    MAX_INFLATED_BYTES."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, MAX_INFLATED_BYTES + 1)
    except zlib.error as error:
        raise ImageError(
            f"{name}: the DICOM file's Deflated data set cannot be inflated ({error}); it is corrupt. "
            "Export it from the PACS again."
        ) from error
    if len(inflated) > MAX_INFLATED_BYTES:
        raise ImageError(
            f"{name}: the DICOM file's Deflated data set inflates to more than {MAX_INFLATED_BYTES:,} bytes, "
            f"more than a photograph of the {MAX_PIXELS:,} pixels accepted needs; it was not inflated further. "
            "Ask the PACS to export the image uncompressed (Explicit VR Little Endian) or as JPEG Baseline."
        )
    if not inflater.eof:
        raise ImageError(
            f"{name}: the DICOM file's Deflated data set ends before its deflate stream does "
            f"({len(body):,} bytes inflate to {len(inflated):,}); the file is truncated. Copy or export it again."
        )
    return inflated


def _parse(data: bytes, name: str) -> Dataset:
    """The dataset, or an ImageError. A Deflated data set is inflated here, within
    MAX_INFLATED_BYTES, rather than by dcmread, which inflates all of it. Only an error's type is
    quoted: a parser's message may repeat a value from the file, and a value may be a name."""
    try:
        stream = io.BytesIO(data)
        preamble = read_preamble(stream, force=True)
        meta = _read_file_meta_info(stream)  # pydicom's reader of group 2, the one dcmread uses
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return pydicom.dcmread(io.BytesIO(data), force=True)
        body = io.BytesIO(_inflate(data[stream.tell() :], name))
        return FileDataset(body, read_dataset(body, False, True), preamble, meta, False, True)
    except ImageError:
        raise
    except Exception as error:  # pydicom raises many types on malformed input; all mean the same here
        raise ImageError(
            f"{name}: this looks like a DICOM file but cannot be read ({type(error).__name__}); it is "
            "corrupt or truncated. Export it from the PACS again."
        ) from error


def _check_complete(dataset: Dataset, name: str) -> None:
    """pydicom reads a cut-off file without complaint, leaving its last element short: find that."""
    if not dataset and dataset.file_meta:
        raise ImageError(
            f"{name}: the DICOM file is incomplete: its file meta information is there, but its data set could "
            "not be read to the end (the file is truncated, as by an interrupted copy or download). Copy or "
            "export the file again."
        )
    if not dataset:
        raise ImageError(
            f"{name}: the file holds no DICOM data elements; it is empty or not a DICOM file. Export the image "
            "from the PACS again."
        )
    last = dataset.get_item(list(dataset.keys())[-1])
    declared = getattr(last, "length", 0xFFFFFFFF)
    value = getattr(last, "value", None)
    if declared != 0xFFFFFFFF and isinstance(value, bytes) and len(value) < declared:
        keyword = keyword_for_tag(last.tag) or str(last.tag)
        raise ImageError(
            f"{name}: the DICOM file is truncated: its last element ({keyword}) holds {len(value):,} of "
            f"its {declared:,} bytes. Copy or export the file again."
        )


def _check_object(dataset: Dataset, name: str) -> str:
    """The SOP class's name when it is a single-frame photograph with pixel data; else an ImageError."""
    sop_class = dataset.get("SOPClassUID")
    if not sop_class:
        raise ImageError(
            f"{name}: this DICOM file names no SOP Class, so what it holds is unknown. "
            f"Export the dermoscopic image from the PACS as {_accepted_classes()}."
        )
    sop_class = UID(str(sop_class))
    has_pixels = "PixelData" in dataset
    if sop_class not in ACCEPTED_SOP_CLASSES:
        modality = dataset.get("Modality") or "not stated"
        pixels = "" if has_pixels else ", without pixel data"
        raise ImageError(
            f"{name}: this DICOM file is a {sop_class.name} object (modality {modality}{pixels}); that SOP "
            f"class is not accepted here. Accepted: {_accepted_classes()}. Export the dermoscopic image from the "
            "PACS as one of these, or save its picture as PNG or JPEG and upload that."
        )
    if not has_pixels:
        raise ImageError(
            f"{name}: this {sop_class.name} object holds no pixel data (Pixel Data is missing; the file "
            "may be truncated). Export the image again with its pixels."
        )
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames > 1:
        raise ImageError(
            f"{name}: this {sop_class.name} object holds {frames} frames; one photograph per file is "
            "accepted. Export the frame to assess as an image of its own."
        )
    return sop_class.name


def _check_pixels(dataset: Dataset, name: str) -> UID:
    """The transfer syntax when the pixels are an 8-bit colour image this installation decodes."""
    syntax = dataset.file_meta.get("TransferSyntaxUID")  # dcmread always gives file meta, empty without one
    if not syntax:
        raise ImageError(
            f"{name}: the DICOM file states no transfer syntax (no file meta information), so its "
            "pixels cannot be read. Export it as a DICOM Part 10 file."
        )
    syntax = UID(str(syntax))
    accepted = decodable_syntaxes()
    if syntax not in accepted:
        # A decoder is worth naming only for the syntaxes accepted once one is installed; the rest
        # (JPEG 2000 among them) are refused whatever is installed.
        why = (
            f"which this installation has no decoder for (install one of: "
            f"{'; '.join(get_decoder(syntax).missing_dependencies)})"
            if syntax in COMPRESSED_SYNTAXES
            else "a transfer syntax this tool does not accept"
        )
        raise ImageError(
            f"{name}: the pixels are stored as {syntax.name} ({syntax}), {why}. Accepted: "
            f"{', '.join(uid.name for uid in accepted)}. Ask the PACS to export the image uncompressed (Explicit "
            "VR Little Endian) or as JPEG Baseline, or decompress the file (e.g. GDCM's gdcmconv --raw in.dcm "
            "out.dcm) and upload that."
        )
    photometric = str(dataset.get("PhotometricInterpretation", "not stated"))
    if photometric not in ACCEPTED_PHOTOMETRIC:
        raise ImageError(
            f"{name}: the pixels are stored as {photometric}; accepted: {', '.join(ACCEPTED_PHOTOMETRIC)}."
            " Export the image as a colour photograph."
        )
    samples, bits = dataset.get("SamplesPerPixel"), dataset.get("BitsAllocated")
    if samples != 3 or bits != 8:
        raise ImageError(
            f"{name}: the pixels have {samples} samples of {bits} bits; accepted: 3 samples of 8 bits "
            "(a colour photograph). Export the image as 8-bit colour."
        )
    columns, rows = int(dataset.get("Columns") or 0), int(dataset.get("Rows") or 0)
    check_size(columns, rows, name)
    if syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        _check_codestream(dataset, syntax, (columns, rows), name)
    return syntax


def _codestream_size(frame: bytes, syntax: UID) -> tuple[int, int] | None:
    """(width, height) from a JPEG or JPEG-LS frame's header, without decoding it: Pillow's (the
    decoder of JPEG here) for JPEG, pydicom's own header parser for JPEG-LS, which Pillow cannot
    open. None when the header cannot be read."""
    if syntax in JPEGLSTransferSyntaxes:
        header = _get_jpg_parameters(frame)
        return (header["width"], header["height"]) if "width" in header and "height" in header else None
    try:
        with Image.open(io.BytesIO(frame), formats=("JPEG",)) as image:
            return image.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise
    except Exception:  # Pillow raises many types on a damaged header; all mean the same here
        return None


def _check_codestream(dataset: Dataset, syntax: UID, declared: tuple[int, int], name: str) -> None:
    """A decoder allocates what the codestream declares, not what Rows and Columns say: a frame
    declaring 12000×12000 inside a 128×96 header was decoded whole (850 MB) before failing. Its
    size is read from its header and held to the same limits and to the header's."""
    try:
        frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            size = _codestream_size(frame, syntax)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ImageError(
            f"{name}: the {syntax.name} frame declares more than the {MAX_PIXELS:,} pixels accepted ({error}). "
            "Export the image at a lower resolution and upload again."
        ) from error
    except Exception as error:  # a damaged encapsulation fails in many ways; all mean the same here
        raise ImageError(
            f"{name}: the {syntax.name} pixel data holds no readable frame ({type(error).__name__}); it is "
            "corrupt or truncated. Export the image again."
        ) from error
    if size is None:
        raise ImageError(
            f"{name}: the {syntax.name} frame has no readable header (no image size found); it is corrupt or "
            "truncated. Export the image again."
        )
    check_size(*size, name)
    if size != declared:
        raise ImageError(
            f"{name}: the {syntax.name} frame is {size[0]}×{size[1]} pixels, but the DICOM header (Columns × "
            f"Rows) says {declared[0]}×{declared[1]}; the file is inconsistent. Export the image again."
        )


def _decode(dataset: Dataset, syntax: UID, name: str) -> np.ndarray:
    compressed = syntax not in UncompressedTransferSyntaxes
    plugin = PREFERRED_PLUGIN if compressed and PREFERRED_PLUGIN in get_decoder(syntax).available_plugins else ""
    # A compressed frame is decoded colour-by-pixel whatever the header's Planar Configuration says
    # (PS3.5 8.2.1: it is meaningless for JPEG; RLE's decoder sets its own): taking the header's 1
    # would scramble the pixels, and a header without one would be refused.
    layout = {"planar_configuration": 0} if compressed else {}
    try:
        pixels = pixel_array(dataset, decoding_plugin=plugin, **layout)
    except Exception as error:  # each decoder plugin raises its own types on corrupt data
        raise ImageError(
            f"{name}: the {syntax.name} pixel data cannot be decoded ({error}); it is corrupt or "
            "truncated. Export the image again."
        ) from error
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _coded(item: Dataset) -> CodedConcept:
    return CodedConcept(
        str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeValue", "")), str(item.get("CodeMeaning", ""))
    )


def _info(dataset: Dataset, syntax: UID) -> DicomInfo:
    regions = dataset.get("AnatomicRegionSequence") or []
    laterality = str(dataset.get("ImageLaterality", "")).upper()
    values = tuple((keyword, _text(dataset.get(keyword))) for keyword in STUDY_KEYWORDS if keyword in dataset)
    return DicomInfo(
        sop_class_uid=str(dataset.SOPClassUID),
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
        series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
        study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
        transfer_syntax_uid=str(syntax),
        study_date=_date(str(dataset.get("StudyDate", "")) or None),
        body_part=dataset.get("BodyPartExamined") or None,
        anatomic_region=_coded(regions[0]) if regions else None,
        laterality=LATERALITY.get(laterality),
        study_values=values,
    )


def read_dicom(data: bytes, name: str = "image") -> DecodedImage:
    """A DICOM dermoscopic photograph as RGB uint8 pixels, with its `DicomInfo` in `.dicom`.

    Raises ImageError for anything but a single-frame, 8-bit colour photograph of an accepted SOP
    class in a transfer syntax an installed plugin decodes.
    """
    dataset = _parse(data, name)
    try:
        _check_complete(dataset, name)
        sop_class = _check_object(dataset, name)
        syntax = _check_pixels(dataset, name)
        pixels = _decode(dataset, syntax, name)
        notes = [f"DICOM {sop_class} read ({syntax.name})"]
        photometric = str(dataset.PhotometricInterpretation)
        if photometric != "RGB":
            notes.append(f"{photometric} colour converted to RGB")
        return DecodedImage(pixels=pixels, notes=tuple(notes), dicom=_info(dataset, syntax))
    except ImageError:
        raise
    except Exception as error:  # pydicom decodes each element when it is first read: a damaged one fails there
        raise ImageError(
            f"{name}: an element of this DICOM file is damaged ({type(error).__name__}); it is corrupt. Export it "
            "from the PACS again."
        ) from error


def _dicom_time(moment: datetime) -> tuple[str, str, str]:
    """DICOM date, time and UTC offset ("+0100") of a zone-aware time."""
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S"), moment.strftime("%z")


# Why a photograph gets no DICOM report, for the page and the error alike.
NO_STUDY_UID = (
    "The photograph names no Study Instance UID, so a report cannot be filed into its study. Download the PDF instead."
)


def encapsulated_pdf(pdf: bytes, source: DicomInfo, created: datetime, title: str = REPORT_TITLE) -> EncapsulatedReport:
    """The PDF case report as a DICOM Encapsulated PDF (PS3.3 A.45.1) in the study of `source`.

    Patient and Study values are copied from the photograph, the series and instance are new,
    and the photograph is named as the source instance. Written to bytes in memory.
    """
    if not pdf.startswith(b"%PDF-"):
        raise ValueError(
            f"Expected PDF bytes (starting with %PDF-); received {pdf[:8]!r}. Pass case_report_pdf's output."
        )
    if not source.study_instance_uid:
        raise ValueError(NO_STUDY_UID)
    if created.utcoffset() is None:
        raise ValueError(
            f"The report time must carry its time zone; received the naive time {created}. "
            "Pass datetime.now().astimezone()."
        )
    day, time, offset = _dicom_time(created)
    series_uid, instance_uid = generate_uid(), generate_uid()
    dataset = Dataset()
    dataset.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: any name from the source can be written
    for keyword in REQUIRED_EMPTY:
        setattr(dataset, keyword, "")
    for keyword, value in source.study_values:
        setattr(dataset, keyword, value)
    dataset.SOPClassUID, dataset.SOPInstanceUID = ENCAPSULATED_PDF, instance_uid
    dataset.InstanceCreationDate, dataset.InstanceCreationTime, dataset.TimezoneOffsetFromUTC = day, time, offset
    dataset.Modality, dataset.SeriesInstanceUID, dataset.SeriesNumber = "DOC", series_uid, REPORT_SERIES_NUMBER
    dataset.SeriesDescription = title
    dataset.Manufacturer, dataset.SoftwareVersions = MANUFACTURER, __version__
    dataset.ConversionType = "WSD"  # SC Equipment: made on a workstation
    dataset.InstanceNumber = 1
    dataset.ContentDate, dataset.ContentTime = day, time
    dataset.AcquisitionDateTime = f"{day}{time}{offset}"
    # The clinician's notes in the report may name the patient: de-identification tools must treat
    # the document as identifying.
    dataset.BurnedInAnnotation = "YES"
    dataset.DocumentTitle = title
    dataset.ConceptNameCodeSequence = Sequence()
    source_item = Dataset()
    source_item.ReferencedSOPClassUID = source.sop_class_uid
    source_item.ReferencedSOPInstanceUID = source.sop_instance_uid
    dataset.SourceInstanceSequence = Sequence([source_item])
    dataset.MIMETypeOfEncapsulatedDocument = "application/pdf"
    dataset.EncapsulatedDocumentLength = len(pdf)
    dataset.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)  # OB values have even length
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    dataset.file_meta.MediaStorageSOPInstanceUID = instance_uid
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return EncapsulatedReport(buffer.getvalue(), instance_uid, series_uid)
