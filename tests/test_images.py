"""Decoding: every odd file a camera or PACS export produces is converted correctly or refused clearly."""

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from melanoma.images import MAX_PIXELS, ImageError, decode_image, to_model_input
from tests.synthetic import lesion_image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rgb(width=64, height=48, colour=(200, 100, 50)) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def test_jpeg_decodes_to_rgb_uint8():
    decoded = decode_image(encode(rgb(), "JPEG", quality=100))
    assert decoded.pixels.shape == (48, 64, 3) and decoded.pixels.dtype == np.uint8
    assert np.abs(decoded.pixels.astype(int) - [200, 100, 50]).max() <= 3


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (b"this is a text file, not a picture\n" * 10, "not a readable image"),
        (b"%PDF-1.4\n1 0 obj<<>>endobj\n", "not a readable image"),
    ],
)
def test_non_images_are_refused_with_a_clear_message(data, fragment):
    with pytest.raises(ImageError, match=fragment):
        decode_image(data, name="scan.jpg")


def test_truncated_jpeg_is_refused():
    data = encode(rgb(400, 300), "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], name="cut.jpg")


def test_a_cut_off_animated_gif_is_refused():
    """Pillow fails on this one with an IndexError while counting its frames."""
    image = lesion_image(True, np.random.default_rng(0))
    data = encode(image, "GIF", save_all=True, append_images=[image.rotate(90)])
    with pytest.raises(ImageError, match="cut.gif: the image data is corrupt or truncated"):
        decode_image(data[: int(len(data) * 0.6)], name="cut.gif")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "BMP", "WEBP"])
def test_damaged_files_of_every_format_are_refused_or_read_never_crash(fmt):
    """Bytes changed at random in the header and pixel data: each damaged file decodes or is refused
    with an ImageError; Pillow's other exceptions (TypeError from a damaged TIFF, ...) do not escape."""
    data = encode(rgb(120, 90), fmt)
    rng = np.random.default_rng(1)
    for _ in range(150):
        damaged = bytearray(data)
        for position in rng.integers(0, min(len(data), 300), 3):
            damaged[position] = rng.integers(0, 256)
        try:
            decoded = decode_image(bytes(damaged), name=f"damaged.{fmt.lower()}")
        except ImageError:
            continue
        assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape[2] == 3


def test_a_jpeg_named_dcm_is_read_as_the_jpeg_it_is():
    data = encode(rgb(64, 48), "JPEG")
    decoded = decode_image(data, name="export.dcm")
    assert decoded.dicom is None and decoded.pixels.shape == (48, 64, 3)
    assert decoded.notes[0] == "named .dcm, but a JPEG image: read as one, without DICOM facts"


def test_alpha_is_flattened_onto_white():
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    decoded = decode_image(encode(image, "PNG"))
    assert decoded.pixels[0, 0].tolist() == [255, 255, 255]
    assert any("transparency" in note for note in decoded.notes)


def test_greyscale_is_replicated_to_three_channels():
    decoded = decode_image(encode(Image.new("L", (40, 40), 90), "PNG"))
    assert decoded.pixels.shape == (40, 40, 3) and (decoded.pixels == 90).all()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_images_are_rescaled_not_clipped(fmt):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (40, 1))
    decoded = decode_image(encode(Image.fromarray(ramp), fmt))
    row = decoded.pixels[0, :, 0].astype(int)
    # The ramp stays a ramp: clipping at 255 would keep both ends and the order, and flatten all the rest.
    assert np.abs(row - np.linspace(0, 255, 64)).max() <= 1


def colour_at_depth(pixels: np.ndarray, bits: int, extension: str) -> bytes:
    """8-bit RGB(A) pixels as a 16-bit-per-channel file whose colour samples use `bits` of the 16 (its alpha all
    16, as PNG defines opaque); OpenCV writes BGR."""
    samples = (pixels.astype(np.uint32) * (2**bits - 1) // 255).astype(np.uint16)
    samples[..., 3:] = pixels[..., 3:].astype(np.uint16) * 257
    order = [2, 1, 0, 3][: pixels.shape[-1]]
    return cv2.imencode(extension, samples[..., order])[1].tobytes()


def full_range_colours(seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    pixels[0, 0], pixels[-1, -1] = 0, 255  # spanning 0-255, so the rescale from lowest to highest is exact
    return pixels


@pytest.mark.parametrize("extension", [".png", ".tiff"])
@pytest.mark.parametrize("bits", [12, 15, 16])
def test_16_bit_colour_is_decoded_at_full_depth_not_by_its_high_byte(extension, bits):
    """Pillow kept each sample's high byte: 12-bit data came out 16 times too dark, 15-bit at half brightness."""
    pixels = full_range_colours()
    decoded = decode_image(colour_at_depth(pixels, bits, extension))
    assert np.abs(decoded.pixels.astype(int) - pixels).max() <= 1
    assert any(note.startswith("RGB;16") and "rescaled to 8 bits" in note for note in decoded.notes)


@pytest.mark.parametrize("bits", [12, 16])
def test_16_bit_colour_that_spans_part_of_its_range_keeps_its_contrast(bits):
    """A stretch from the lowest to the highest sample turned a dermoscopic image's 40-200 into 0-255: a
    15-bit copy of a naevus then scored 0.202 against its original's 0.128."""
    pixels = np.random.default_rng(1).integers(40, 201, (40, 60, 3), dtype=np.uint8)
    decoded = decode_image(colour_at_depth(pixels, bits, ".png"))
    assert np.abs(decoded.pixels.astype(int) - pixels).max() <= 1


def test_16_bit_colour_with_alpha_is_flattened_and_keeps_its_exif_orientation():
    pixels = np.dstack([full_range_colours(), np.full((40, 60), 255, np.uint8)])
    pixels[:16, :16] = (255, 0, 0, 255)  # a red marker in the stored top-left corner
    pixels[-8:, -8:, 3] = 0  # transparent: white once flattened
    png = colour_at_depth(pixels, 12, ".png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    payload = exif.tobytes().removeprefix(b"Exif\x00\x00")
    chunk = b"eXIf" + payload
    chunk = struct.pack(">I", len(payload)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    decoded = decode_image(png[:33] + chunk + png[33:])  # after the signature and the IHDR chunk
    assert decoded.pixels.shape == (60, 40, 3)
    assert tuple(decoded.pixels[5, -6]) == (255, 0, 0) and tuple(decoded.pixels[-3, 3]) == (255, 255, 255)
    assert np.abs(decoded.pixels[20:40, 10:30].astype(int) - np.rot90(pixels[10:30, 20:40, :3], -1)).max() <= 1
    assert decoded.notes == (
        "RGBA;16B high-bit-depth image rescaled to 8 bits",
        "rotated according to its EXIF orientation",
        "transparency flattened onto white",
    )


def test_cmyk_jpeg_converts_to_rgb():
    decoded = decode_image(encode(rgb(colour=(0, 0, 255)).convert("CMYK"), "JPEG", quality=100))
    r, g, b = decoded.pixels[20, 20].astype(int)
    assert b > 200 and r < 60 and g < 60


def test_palette_image_converts_to_rgb():
    decoded = decode_image(encode(rgb(colour=(10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"))
    assert np.abs(decoded.pixels[5, 5].astype(int) - [10, 200, 30]).max() <= 8


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (40, 40), c).convert("P") for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(data)
    assert decoded.pixels[0, 0, 0] > 200 and decoded.pixels[0, 0, 2] < 50
    assert any("first of 2 frames" in note for note in decoded.notes)


def test_exif_orientation_is_honoured():
    image = rgb(80, 40, colour=(0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 16, 16))  # a red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    decoded = decode_image(encode(image, "JPEG", quality=100, exif=exif.tobytes()))
    assert decoded.pixels.shape[:2] == (80, 40)
    # A clockwise turn carries the top-left corner to the top right; the other corners stay blue.
    corners = {
        "top left": decoded.pixels[5, 5],
        "top right": decoded.pixels[5, -6],
        "bottom left": decoded.pixels[-6, 5],
        "bottom right": decoded.pixels[-6, -6],
    }
    assert {name for name, (r, g, b) in corners.items() if r > 200 and b < 50} == {"top right"}
    assert all(b > 200 and r < 50 for name, (r, g, b) in corners.items() if name != "top right")
    assert "rotated according to its EXIF orientation" in decoded.notes


@pytest.mark.parametrize("size, fragment", [((20, 20), "at least 32 pixels"), ((8000, 100), "aspect ratio")])
def test_tiny_and_very_wide_images_are_refused(size, fragment):
    with pytest.raises(ImageError, match=fragment):
        decode_image(encode(rgb(*size), "PNG"))


def test_decompression_bomb_is_refused_before_decoding():
    # A 1-bit PNG declaring 20000 x 20000 pixels compresses to a few kilobytes.
    data = encode(Image.new("1", (20000, 20000)), "PNG")
    assert len(data) < 100_000 and 20000 * 20000 > MAX_PIXELS
    with pytest.raises(ImageError, match="more than the"):
        decode_image(data, name="bomb.png")


def test_unicode_and_long_names_appear_in_messages():
    name = "Läsion_рак_" + "x" * 300 + ".jpg"
    with pytest.raises(ImageError) as error:
        decode_image(b"", name=name)
    assert name in str(error.value)


def test_resize_is_square_and_deterministic():
    pixels = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)  # a red band along the left edge: a crop would cut it away
    a, b = to_model_input(pixels, 64), to_model_input(pixels, 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    # The whole image through PIL's antialiased bilinear filter, the resizer training and serving share.
    assert np.array_equal(a, np.asarray(Image.fromarray(pixels).resize((64, 64), Image.BILINEAR)))
    assert (a[:, :5] == (255, 0, 0)).all()  # 20 of 200 columns: the first 6.4 of 64, squashed, not cropped
