"""DICOM in and out: a PACS export decodes to the pixels of the same photograph as PNG or JPEG, anything
else is refused with its own message, and the case report goes back into the same study."""

import io
import logging
import re
import warnings
from datetime import datetime, timedelta, timezone

import numpy as np
import pydicom
import pytest
from fpdf import FPDF
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pypdf import PdfReader

import melanoma.dicom
from melanoma.dicom import (
    DERMOSCOPIC_PHOTOGRAPHY,
    ENCAPSULATED_PDF,
    NO_STUDY_UID,
    VL_PHOTOGRAPHIC,
    _codestream_size,
    encapsulated_pdf,
    read_dicom,
)
from melanoma.images import IMAGE_EXTENSIONS, ImageError, decode_image, file_stem

CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
# Who the test photographs show: none of these may leave the module except through `identity`.
PATIENT_NAME, PATIENT_ID, BIRTH_DATE = "Kovacs^Ilona", "MRN-4711-KI", "19610412"
IDENTIFYING = ("Kovacs", "Ilona", PATIENT_ID, BIRTH_DATE, "1961-04-12")


def lesion_pixels(height: int = 96, width: int = 128) -> np.ndarray:
    """A smooth skin-coloured field with a dark blob: JPEG-friendly, like a dermoscopic photograph."""
    y, x = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((x - width / 2) / (width / 5)) ** 2 + ((y - height / 2) / (height / 5)) ** 2))
    skin = np.stack([200 + 0.2 * x, 150 + 0.2 * y, 120 + 0.1 * (x + y) / 2], axis=-1)
    return np.clip(skin * (1 - 0.7 * blob[..., None]), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def dicom_bytes(
    pixels: np.ndarray | None,
    sop_class: str = DERMOSCOPIC_PHOTOGRAPHY,
    syntax: str = ExplicitVRLittleEndian,
    photometric: str = "RGB",
    fragments: list[bytes] | None = None,
    **attributes,
) -> bytes:
    """A DICOM Part 10 file as a PACS would export it; `fragments` encapsulate compressed frames."""
    dataset = Dataset()
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, generate_uid()
    dataset.PatientName, dataset.PatientID, dataset.PatientBirthDate, dataset.PatientSex = (
        PATIENT_NAME,
        PATIENT_ID,
        BIRTH_DATE,
        "F",
    )
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.StudyDate, dataset.StudyTime, dataset.AccessionNumber, dataset.StudyID = "20240513", "101500", "ACC77", "S1"
    dataset.ReferringPhysicianName, dataset.Modality = "", "XC"
    if pixels is not None:
        dataset.Rows, dataset.Columns = pixels.shape[:2]
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, photometric, 0
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
        dataset.PixelData = encapsulate(fragments) if fragments else pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    if fragments:
        dataset["PixelData"].VR = "OB"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.file_meta.MediaStorageSOPClassUID, dataset.file_meta.MediaStorageSOPInstanceUID = (
        sop_class,
        dataset.SOPInstanceUID,
    )
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def region(meaning: str = "Upper arm", value: str = "40983000") -> Sequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return Sequence([item])


@pytest.mark.parametrize("sop_class", [DERMOSCOPIC_PHOTOGRAPHY, VL_PHOTOGRAPHIC])
def test_uncompressed_rgb_decodes_to_the_same_pixels_as_its_png(sop_class):
    pixels = lesion_pixels()
    from_dicom = decode_image(dicom_bytes(pixels, sop_class), name="IMG0001")
    from_png = decode_image(encode(pixels, "PNG"), name="lesion.png")
    assert np.array_equal(from_dicom.pixels, from_png.pixels) and np.array_equal(from_dicom.pixels, pixels)
    assert from_dicom.dicom.sop_class_uid == sop_class and from_png.dicom is None


@pytest.mark.parametrize("sop_class", [DERMOSCOPIC_PHOTOGRAPHY, VL_PHOTOGRAPHIC])
def test_ybr_full_422_jpeg_baseline_decodes_like_the_same_jpeg_through_pillow(sop_class):
    pixels = lesion_pixels()
    jpeg = encode(pixels, "JPEG", quality=90, subsampling="4:2:2")
    data = dicom_bytes(pixels, sop_class, JPEGBaseline8Bit, "YBR_FULL_422", fragments=[jpeg])
    from_dicom = decode_image(data, name="lesion.dcm")
    from_jpeg = decode_image(jpeg, name="lesion.jpg")
    assert from_dicom.pixels.shape == from_jpeg.pixels.shape == pixels.shape
    assert np.abs(from_dicom.pixels.astype(int) - from_jpeg.pixels.astype(int)).max() <= 2
    assert "YBR_FULL_422 colour converted to RGB" in from_dicom.notes
    assert from_dicom.dicom.transfer_syntax == "JPEG Baseline (Process 1)"


def test_rle_lossless_decodes_exactly():
    pixels = lesion_pixels()
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels)))
    dataset.compress(RLELossless, pixels)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    assert np.array_equal(read_dicom(buffer.getvalue()).pixels, pixels)


@pytest.mark.parametrize("name", ["photo.jpg", "IM000017", "export.DCM"])
def test_dicom_is_recognised_by_its_preamble_whatever_the_name(name):
    assert ".dcm" in IMAGE_EXTENSIONS
    assert decode_image(dicom_bytes(lesion_pixels()), name=name).dicom is not None


def test_metadata_for_the_page_is_apart_from_the_identity():
    data = dicom_bytes(lesion_pixels(), AnatomicRegionSequence=region(), ImageLaterality="L", BodyPartExamined="ARM")
    info = read_dicom(data).dicom
    assert info.study_date.isoformat() == "2024-05-13" and info.body_part == "ARM"
    assert (info.anatomic_region.scheme, info.anatomic_region.value) == ("SCT", "40983000")
    assert info.body_site == "Upper arm (left)"
    assert info.summary() == (
        "DICOM Dermoscopic Photography Image Storage; Explicit VR Little Endian; "
        "study date 2024-05-13; body site Upper arm (left)"
    )
    identity = info.identity
    assert (identity.patient_name, identity.patient_id, identity.birth_date.isoformat()) == (
        "Ilona Kovacs",
        PATIENT_ID,
        "1961-04-12",
    )
    for shown in (repr(info), repr(identity), info.summary()):
        assert not any(value in shown for value in IDENTIFYING)


def ct_image() -> bytes:
    return dicom_bytes(
        None,
        CT_IMAGE,
        Modality="CT",
        Rows=64,
        Columns=64,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        BitsAllocated=16,
        BitsStored=12,
        HighBit=11,
        PixelRepresentation=0,
        PixelData=np.zeros((64, 64), np.uint16).tobytes(),
    )


def multi_frame() -> bytes:
    frames = np.stack([lesion_pixels(), lesion_pixels()])
    return dicom_bytes(lesion_pixels(), NumberOfFrames=2, PixelData=frames.tobytes())


def truncated() -> bytes:
    data = dicom_bytes(lesion_pixels())
    return data[: len(data) // 2]


def compressed_without_plugin() -> bytes:
    assert not get_decoder(HTJ2KLossless).is_available, "pylibjpeg-openjpeg is installed: pick another syntax"
    return dicom_bytes(lesion_pixels(), syntax=HTJ2KLossless, fragments=[b"\xff\x4f\xff\x51" + bytes(64)])


@pytest.mark.parametrize(
    "make, fragments",
    [
        (
            ct_image,
            ["CT Image Storage", "modality CT", "SOP class is not accepted", "Dermoscopic Photography Image Storage"],
        ),
        (
            lambda: dicom_bytes(None, BASIC_TEXT_SR, Modality="SR"),
            ["Basic Text SR Storage", "modality SR, without pixel data", "VL Photographic Image Storage"],
        ),
        (lambda: dicom_bytes(None), ["Dermoscopic Photography Image Storage object holds no pixel data"]),
        (multi_frame, ["holds 2 frames", "one photograph per file"]),
        (truncated, ["truncated", "PixelData", "of its 36,864 bytes"]),
        (
            compressed_without_plugin,
            [
                "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
                "a transfer syntax this tool does not accept",
                "Accepted: ",
                "JPEG Baseline (Process 1)",
            ],
        ),
        (
            lambda: dicom_bytes(lesion_pixels(), photometric="PALETTE COLOR"),
            ["stored as PALETTE COLOR", "YBR_FULL_422"],
        ),
        (lambda: dicom_bytes(lesion_pixels(), SOPClassUID=None), ["names no SOP Class"]),
    ],
)
def test_what_is_not_a_photograph_is_refused_with_its_own_message(make, fragments):
    with pytest.raises(ImageError) as refused:
        decode_image(make(), name="export.dcm")
    message = str(refused.value)
    assert message.startswith("export.dcm: ") and all(fragment in message for fragment in fragments), message
    assert not any(value in message for value in IDENTIFYING)


def test_a_damaged_element_is_refused_and_nothing_else_escapes():
    """pydicom decodes an element when it is first read, after the file has parsed: a number of
    frames that is no number, then random damage to the header and cut-off files, are each read or
    refused with an ImageError, never another exception."""
    data = dicom_bytes(lesion_pixels(), NumberOfFrames="7")
    not_a_number = data.replace(b"\x28\x00\x08\x00IS\x02\x007 ", b"\x28\x00\x08\x00IS\x02\x00ab")
    assert not_a_number != data
    with pytest.raises(ImageError, match="export.dcm: an element of this DICOM file is damaged"):
        decode_image(not_a_number, name="export.dcm")
    data, rng = lesion_file()[0], np.random.default_rng(2)
    for attempt in range(300):
        damaged = bytearray(data[: rng.integers(1, len(data))] if attempt % 2 else data)
        for position in rng.integers(0, min(len(damaged), 1200), 3):
            damaged[position] = rng.integers(0, 256)
        try:
            decode_image(bytes(damaged), name="export.dcm")
        except ImageError as refused:
            assert not any(value in str(refused) for value in IDENTIFYING)


def lesion_file() -> tuple[bytes, np.ndarray]:
    pixels = lesion_pixels()
    return dicom_bytes(pixels, AnatomicRegionSequence=region(), ImageLaterality="R", PatientAge="063Y"), pixels


def report_pdf(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def test_the_report_goes_into_the_same_study_as_an_encapsulated_pdf():
    data, _ = lesion_file()
    source = read_dicom(data).dicom
    pdf = report_pdf("Melanoma decision support: case report. Suspicious for melanoma: probability 73.2%.")
    created = datetime(2024, 5, 13, 10, 42, 7, tzinfo=timezone(timedelta(hours=2)))
    report = encapsulated_pdf(pdf, source, created)
    assert report.data[128:132] == b"DICM"
    written = pydicom.dcmread(io.BytesIO(report.data))
    original = pydicom.dcmread(io.BytesIO(data))
    assert written.SOPClassUID == ENCAPSULATED_PDF and written.Modality == "DOC"
    assert written.MIMETypeOfEncapsulatedDocument == "application/pdf"
    for keyword in (
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "PatientAge",
    ):
        assert written[keyword].value == original[keyword].value, keyword
    assert written.SeriesInstanceUID == report.series_instance_uid != original.SeriesInstanceUID
    assert written.SOPInstanceUID == report.sop_instance_uid != original.SOPInstanceUID
    assert written.file_meta.MediaStorageSOPInstanceUID == report.sop_instance_uid
    assert (written.ContentDate, written.ContentTime, written.TimezoneOffsetFromUTC) == ("20240513", "104207", "+0200")
    reference = written.SourceInstanceSequence[0]
    assert reference.ReferencedSOPInstanceUID == original.SOPInstanceUID
    document = bytes(written.EncapsulatedDocument)[: written.EncapsulatedDocumentLength]
    assert document == pdf
    text = PdfReader(io.BytesIO(document)).pages[0].extract_text()
    assert "Suspicious for melanoma: probability 73.2%." in text
    assert report.file_name == f"{report.sop_instance_uid}.dcm"
    with pytest.raises(ImageError, match="Encapsulated PDF Storage object .modality DOC, without pixel data"):
        decode_image(report.data, name="report.dcm")


def test_the_report_needs_a_pdf_and_a_time_zone():
    source = read_dicom(lesion_file()[0]).dicom
    with pytest.raises(ValueError, match="Expected PDF bytes"):
        encapsulated_pdf(b"<html>", source, datetime.now().astimezone())
    with pytest.raises(ValueError, match="time zone"):
        encapsulated_pdf(report_pdf("x"), source, datetime.now())
    no_study = read_dicom(dicom_bytes(lesion_pixels(), StudyInstanceUID="")).dicom
    with pytest.raises(ValueError, match=re.escape(NO_STUDY_UID)):
        encapsulated_pdf(report_pdf("x"), no_study, datetime.now().astimezone())


def test_no_identity_reaches_a_log_a_warning_or_a_file_name(caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing a deliberately invalid value below
        # Values pydicom would flag when validating on read, quoting them: the patient's name in a UID,
        # and in a 16-character field.
        data = dicom_bytes(
            lesion_pixels(),
            StudyID=f"{PATIENT_NAME}-{PATIENT_ID}-{BIRTH_DATE}",
            FrameOfReferenceUID=f"1.2.{PATIENT_NAME}",
        )
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_image(data, name="IM0001")
        report = encapsulated_pdf(report_pdf("report"), decoded.dicom, datetime.now().astimezone())
        for broken in (truncated(), multi_frame(), data[:700]):
            with pytest.raises(ImageError):
                decode_image(broken, name="IM0002")
    said = [record.getMessage() for record in caplog.records] + [str(warning.message) for warning in caught]
    said += [report.file_name, repr(decoded)]
    assert not any(value in line for line in said for value in IDENTIFYING), said


@pytest.mark.parametrize("planar_configuration", [0, 1, None])
def test_a_jpeg_decodes_colour_by_pixel_whatever_its_planar_configuration_says(planar_configuration):
    """PS3.5 8.2.1: Planar Configuration is meaningless for JPEG; a header saying 1, or saying nothing,
    gives the same pixels as the JPEG uploaded as a file, not scrambled ones or a refusal."""
    pixels = lesion_pixels()
    jpeg = encode(pixels, "JPEG", quality=95)
    data = dicom_bytes(
        pixels,
        syntax=JPEGBaseline8Bit,
        photometric="YBR_FULL_422",
        fragments=[jpeg],
        PlanarConfiguration=planar_configuration,  # None: an empty value, which pydicom reads as absent
    )
    assert np.array_equal(decode_image(data, name="lesion.dcm").pixels, decode_image(jpeg, name="lesion.jpg").pixels)


def deflated(pixels: np.ndarray, padding: int = 0) -> bytes:
    """The photograph as Deflated Explicit VR Little Endian, with `padding` zero bytes in a private
    element after the pixels (zeros deflate to almost nothing)."""
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels)))
    if padding:
        dataset.private_block(0x7FE1, "MELANOMA TEST", create=True).add_new(0x00, "OB", bytes(padding))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def test_a_deflated_file_decodes_exactly_and_inflates_no_further_than_a_photograph_needs(monkeypatch):
    """dcmread inflates a Deflated data set whole before anything can be checked (a 2 MB upload
    inflated to 2 GiB); here it is inflated to at most MAX_INFLATED_BYTES (made small for the test)."""
    pixels = lesion_pixels()
    decoded = decode_image(deflated(pixels), name="export.dcm")
    assert np.array_equal(decoded.pixels, pixels)
    assert decoded.dicom.transfer_syntax == "Deflated Explicit VR Little Endian"
    monkeypatch.setattr(melanoma.dicom, "MAX_INFLATED_BYTES", 2**20)
    bomb = deflated(pixels, padding=4 * 2**20)
    assert len(bomb) < 2**16
    with pytest.raises(
        ImageError, match="export.dcm: the DICOM file's Deflated data set inflates to more than 1,048,576"
    ):
        decode_image(bomb, name="export.dcm")
    with pytest.raises(ImageError, match="export.dcm: the DICOM file's Deflated data set ends before .* truncated"):
        decode_image(deflated(pixels)[:-100], name="export.dcm")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width × height: its pixels cannot be more than
    a few, but a decoder would allocate the canvas it claims."""
    jpeg = bytearray(encode(lesion_pixels(), "JPEG", quality=90))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(jpeg)


@pytest.mark.parametrize(
    "frame, message",
    [
        (lambda: jpeg_declaring(8000, 8000), "the image declares 8000×8000 pixels, more than the 50,000,000 accepted"),
        (
            lambda: encode(lesion_pixels(192, 256), "JPEG", quality=90),
            "frame is 256×192 pixels, but the DICOM header (Columns × Rows) says 128×96",
        ),
        (lambda: b"\xff\xd8" + bytes(64), "frame has no readable header"),
    ],
)
def test_a_jpeg_frame_is_held_to_the_size_limits_and_to_the_header_before_it_is_decoded(frame, message):
    """The 50-megapixel limit checked only Rows and Columns: a frame claiming more inside a 128×96
    header was decoded whole and then blamed as corruption."""
    data = dicom_bytes(lesion_pixels(), syntax=JPEGBaseline8Bit, photometric="YBR_FULL_422", fragments=[frame()])
    with pytest.raises(ImageError) as refused:
        decode_image(data, name="export.dcm")
    assert str(refused.value).startswith("export.dcm: ") and message in str(refused.value), refused.value


def test_a_jpeg_ls_frame_size_is_read_without_pillow():
    """Pillow cannot open JPEG-LS (accepted where pylibjpeg-libjpeg is installed); its size comes
    from pydicom's header parser instead, so the same limits hold."""
    header = b"\xff\xd8\xff\xf7\x00\x11\x08" + (9000).to_bytes(2, "big") + (12000).to_bytes(2, "big") + b"\x03"
    frame = header + bytes([1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]) + b"\xff\xda\x00\x0c" + bytes(10)
    assert _codestream_size(frame, JPEGLSLossless) == (12000, 9000)
    assert _codestream_size(b"\xff\xd8" + bytes(16), JPEGLSLossless) is None


@pytest.mark.parametrize(
    "uid, stem",
    [
        ("1.2.840.10008.5.1.4.1.1.77.1.7", "1.2.840.10008.5.1.4.1.1.77.1.7"),
        ("0.1", "0.1"),
        ("../../escaped/Kovacs_Ilona", "dicom-image"),
        ("1.2.03", "dicom-image"),  # a leading zero
        ("1.2.", "dicom-image"),
        ("1.2.x3", "dicom-image"),
        ("1." + "2" * 63, "dicom-image"),  # 65 characters
    ],
)
def test_only_a_well_formed_uid_names_a_file(uid, stem):
    info = read_dicom(dicom_bytes(lesion_pixels(), SOPInstanceUID=uid)).dicom
    assert file_stem("Kovacs_Ilona.dcm", info) == stem


def test_refusals_say_plainly_what_is_accepted_and_what_to_do():
    """JPEG 2000 is refused on purpose, so no plugin is named for it (Pillow's J2K decoder is even
    installed); a syntax a plugin would make accepted names the plugin; a Secondary Capture is refused
    for its SOP class, not judged as 'not a photograph'; a cut-off JPEG DICOM says it is incomplete."""
    pixels = lesion_pixels()
    jpeg = dicom_bytes(pixels, syntax=JPEGBaseline8Bit, photometric="YBR_FULL_422", fragments=[encode(pixels, "JPEG")])
    cases = [
        (
            dicom_bytes(pixels, syntax=JPEG2000, photometric="YBR_ICT", fragments=[encode(pixels, "JPEG2000")]),
            ["JPEG 2000 Image Compression", "does not accept", "JPEG Baseline (Process 1)", "gdcmconv --raw"],
        ),
        (
            dicom_bytes(pixels, sop_class=SECONDARY_CAPTURE),
            ["Secondary Capture Image Storage", "SOP class is not accepted", "VL Photographic Image Storage"],
        ),
        (jpeg[:-20], ["the DICOM file is incomplete", "truncated", "Copy or export the file again"]),
    ]
    for data, fragments in cases:
        with pytest.raises(ImageError) as refused:
            decode_image(data, name="export.dcm")
        message = str(refused.value)
        assert all(fragment in message for fragment in fragments), message
        assert not any(word in message for word in ("pylibjpeg", "not a photograph", "holds no data elements"))
    if not get_decoder(JPEGLosslessSV1).is_available:
        lossless = dicom_bytes(pixels, syntax=JPEGLosslessSV1, fragments=[b"\xff\xd8" + bytes(64)])
        with pytest.raises(ImageError, match="no decoder for .install one of: .*pylibjpeg-libjpeg.*Accepted: "):
            decode_image(lossless, name="export.dcm")
