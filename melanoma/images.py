"""Decoding and resizing of dermoscopic images: the one path used by training, CLI and app.

Every image that reaches a model passes through `decode_image` and `to_model_input`, so the
pixels a model is trained on and the pixels it is served are produced by the same code.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from melanoma.dicom import DicomInfo

# A dermoscope image is at most a few tens of megapixels; anything that declares more is refused
# before its pixels are decoded (a "decompression bomb" is a tiny file declaring a huge canvas).
MAX_PIXELS = 50_000_000
MIN_SIDE = 32
MAX_ASPECT_RATIO = 10.0
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "GIF", "MPO", "WEBP")
# The file names the uploader, the CLI's folder scan and the data layouts accept: one list for all.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm")
# A DICOM Part 10 file carries "DICM" after a 128-byte preamble, whatever its name (PACS exports often have none).
DICOM_MAGIC, DICOM_MAGIC_OFFSET = b"DICM", 128
# A DICOM UID (PS3.5 9.1): numbers without leading zeros joined by dots, at most 64 characters.
UID_PATTERN, UID_MAX_LENGTH = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"), 64


class ImageError(ValueError):
    """An input that is not a usable image; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image as uint8 pixels plus what the decoder noticed about the original."""

    pixels: np.ndarray  # (height, width, 3) uint8
    notes: tuple[str, ...] = ()
    dicom: DicomInfo | None = None  # what a DICOM file said about itself (melanoma.dicom); None for other formats


def valid_uid(value: str) -> str:
    """`value` if it is a well-formed DICOM UID, else "": a UID read from a file goes into file names
    and FHIR references, and a malformed one may be a path ("../..") or a patient's name."""
    return value if len(value) <= UID_MAX_LENGTH and UID_PATTERN.fullmatch(value) else ""


def file_stem(image_name: str, dicom: DicomInfo | None = None) -> str:
    """The stem of every file made from an image (its maps, report and FHIR Bundle): a DICOM image's
    SOP Instance UID, since a PACS export's file name may be the patient's (or "dicom-image" when it
    has no well-formed one); else the image's own name."""
    return (valid_uid(dicom.sop_instance_uid) or "dicom-image") if dicom else PurePath(image_name).stem


def _to_8_bits(array: np.ndarray) -> np.ndarray:
    """High-bit-depth samples onto 0-255 by the bit depth they use: the fewest bits, at least 8, that hold
    their highest value, so a 12-bit sensor's data in a 16-bit container is not darkened, and an image
    converted up from 8 bits reads as its original (a stretch from lowest to highest would change its
    contrast, and with it the score). Float samples, which have no bit depth, are stretched from their
    lowest to their highest."""
    samples = np.asarray(array)
    array = samples.astype(np.float64)
    if np.issubdtype(samples.dtype, np.integer):
        bits = max(8, int(np.ceil(np.log2(max(float(array.max()), 0.0) + 1.0))))
        return np.round(np.clip(array, 0, None) / (2.0**bits - 1.0) * 255.0).astype(np.uint8)
    low, high = float(array.min()), float(array.max())
    scaled = np.zeros_like(array) if high <= low else (array - low) / (high - low) * 255.0
    return np.round(scaled).astype(np.uint8)


def _rescaled_note(stored: str) -> str:
    return f"{stored} high-bit-depth image rescaled to 8 bits"


def _sixteen_bit_colour(image: Image.Image) -> str | None:
    """How a PNG or TIFF stores its 16-bit-per-channel RGB(A) samples ("RGB;16B"), or None for any other image.

    Pillow opens such a file as 8-bit RGB(A), keeping each sample's high byte only; its undecoded
    tile still says how the samples are stored (a BMP's "BGR;16" is 16 bits per pixel, not per channel)."""
    if image.format not in ("PNG", "TIFF") or image.mode not in ("RGB", "RGBA") or not image.tile:
        return None
    args = image.tile[0].args
    stored = args if isinstance(args, str) else next(iter(args or ()), "")
    return stored if isinstance(stored, str) and ";16" in stored else None


def _full_depth_colour(data: bytes, image: Image.Image) -> Image.Image:
    """The 16-bit colour image in `data` decoded at full depth (OpenCV: Pillow keeps the high byte) and
    rescaled to 8 bits like a 16-bit grey one; its alpha, if any, scaled as is, and its EXIF kept for
    the orientation."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    expected = (image.height, image.width, len(image.mode))
    if decoded is None or decoded.dtype != np.uint16 or decoded.shape != expected:
        found = "nothing" if decoded is None else f"{decoded.dtype} samples of shape {decoded.shape}"
        raise ValueError(f"expected 16-bit samples of shape {expected} at full depth; OpenCV decoded {found}")
    channels = [_to_8_bits(decoded[..., 2::-1])]  # OpenCV's BGR(A) order
    if image.mode == "RGBA":
        channels.append(np.round(decoded[..., 3:] / 257.0).astype(np.uint8))
    full_depth = Image.fromarray(np.concatenate(channels, axis=-1), mode=image.mode)
    full_depth.info["exif"] = image.getexif().tobytes()
    return full_depth


def _to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Convert any PIL mode to 8-bit RGB, scaling 16-bit and float data instead of clipping it."""
    notes: list[str] = []
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(_to_8_bits(np.asarray(image)), mode="L")
        notes.append(_rescaled_note(mode))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
        notes.append("transparency flattened onto white")
    if image.mode in ("L", "1"):
        notes.append("greyscale image replicated to three channels")
    if image.mode == "CMYK":
        notes.append("CMYK image converted to RGB")
    return image.convert("RGB"), notes


def check_size(width: int, height: int, name: str) -> None:
    """Refuse, before decoding, a canvas too large to decode safely, too small to show a lesion, or too elongated."""
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: the image declares {width}×{height} pixels, more than the "
            f"{MAX_PIXELS:,} accepted. Export it at a lower resolution and upload again."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"{name}: the image is {width}×{height} pixels; at least {MIN_SIDE} pixels per side "
            f"are needed to see a lesion. Upload the full-resolution image."
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ImageError(
            f"{name}: the image is {width}×{height} pixels, an aspect ratio above "
            f"{MAX_ASPECT_RATIO:.0f}:1, which is not a dermoscopic photograph. Crop it to the lesion."
        )


def _pillow_identifies(data: bytes) -> bool:
    """Whether the bytes open as an image of a supported format (reading the header only): a PACS
    export may name a JPEG .dcm."""
    try:
        Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS).close()
    except Exception:  # anything Pillow cannot open is for the DICOM reader to judge
        return False
    return True


def decode_image(data: bytes, name: str = "image") -> DecodedImage:
    """Decode image bytes to RGB uint8, honouring EXIF orientation; raise ImageError if unusable.

    DICOM files (the "DICM" preamble, or a .dcm name on bytes that are not an image Pillow knows) go
    to melanoma.dicom, imported only then so that pydicom loads only when a DICOM file arrives.
    """
    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes). Upload the original image file.")
    named_dicom = name.lower().endswith(".dcm")
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)] == DICOM_MAGIC or (
        named_dicom and not _pillow_identifies(data)
    ):
        from melanoma.dicom import read_dicom

        return read_dicom(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in SUPPORTED_FORMATS:
                raise ImageError(
                    f"{name}: {image.format} images are not supported. Use one of: {', '.join(SUPPORTED_FORMATS)}."
                )
            check_size(*image.size, name)  # before the pixels are decoded; EXIF rotation changes none of it
            notes = [f"named .dcm, but a {image.format} image: read as one, without DICOM facts"] if named_dicom else []
            if getattr(image, "n_frames", 1) > 1:
                notes.append(f"animated or multi-page file: only the first of {image.n_frames} frames used")
                image.seek(0)
            if stored := _sixteen_bit_colour(image):  # before the transposition, which drops the stored layout
                image = _full_depth_colour(data, image)
                notes.append(_rescaled_note(stored))
            transposed = ImageOps.exif_transpose(image)
            if transposed is not None and transposed.size != image.size:
                notes.append("rotated according to its EXIF orientation")
            image = transposed if transposed is not None else image
            image.load()
            rgb, conversion_notes = _to_rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(
            f"{name}: the image declares more than the {MAX_PIXELS:,} pixels accepted ({error}). "
            "Export it at a lower resolution and upload again."
        ) from error
    except UnidentifiedImageError as error:
        raise ImageError(
            f"{name}: this is not a readable image ({type(error).__name__}). "
            f"Upload a JPEG, PNG, BMP or TIFF dermoscopic image."
        ) from error
    except Exception as error:  # Pillow's decoders fail on damaged data in many ways: IndexError, TypeError, ...
        raise ImageError(
            f"{name}: the image data is corrupt or truncated ({type(error).__name__}: {error}). Export or copy the "
            "original file again."
        ) from error
    return DecodedImage(
        pixels=np.asarray(rgb, dtype=np.uint8),
        notes=tuple(notes + conversion_notes),
    )


def read_image(path: str) -> DecodedImage:
    """Decode an image file from disk (see `decode_image`)."""
    with open(path, "rb") as handle:
        return decode_image(handle.read(), name=str(path))


def to_model_input(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize RGB uint8 pixels to the square size × size input every model takes.

    The whole image is resized (no crop), as the study did, with PIL's antialiased bilinear
    filter, so a downscale from 600×450 and from 200×150 give comparable pictures.
    """
    if pixels.shape[:2] == (size, size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def display_copy(pixels: np.ndarray, max_width: int = 600) -> np.ndarray:
    """The image as the page and the report show it: at most `max_width` wide, aspect kept, never enlarged.

    The same resizer as the model input (PIL's), so what the clinician sees is what was scored.
    """
    if pixels.shape[1] <= max_width:
        return pixels
    return np.asarray(
        ImageOps.contain(Image.fromarray(pixels), (max_width, pixels.shape[0]), Image.BILINEAR), dtype=np.uint8
    )
