"""Image files made by the tests: good works, and a corpus of bad files with the message each must get."""

import io
import random
import struct
import zipfile
import zlib

from PIL import Image

from tests.support.c2pa_certs import sign_image, training_mining


def encode(image, fmt="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pattern(seed, size=(320, 320), mode="RGB"):
    """A distinct, compressible image per seed (random 8×8 colour blocks) whose perceptual hashes differ."""
    rng = random.Random(seed)
    small = Image.new("RGB", (8, 8))
    small.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(64)])
    return small.resize(size, Image.NEAREST).convert(mode)


def good_png(seed=1, size=(320, 320)):
    return encode(pattern(seed, size))


def good_jpeg(seed=1, size=(320, 320)):
    return encode(pattern(seed, size), "JPEG", quality=90)


def good_webp(seed=1, size=(320, 320)):
    return encode(pattern(seed, size), "WEBP", quality=90)


def _png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_header_only(width, height):
    """A PNG that claims huge dimensions but holds a few bytes of pixel data (never decoded by the validator)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")


def jpeg_with_dimensions(width, height):
    """A real small JPEG whose SOF header is patched to claim other dimensions."""
    data = bytearray(good_jpeg(5, (300, 300)))
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at != -1:
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("no SOF marker")


def png_with_text(key, value):
    image = pattern(7)
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(key, value)
    return encode(image, pnginfo=info)


def zip_bytes():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", "<html><script>alert(1)</script></html>")
    return buffer.getvalue()


def animated_gif():
    frames = [pattern(seed, (300, 300)).convert("P") for seed in (1, 2, 3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def animated(fmt):
    frames = [pattern(seed, (300, 300)) for seed in (1, 2, 3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def real_decompression_bomb():
    """A genuine bomb: 7000×7000 (49 MP) one-bit PNG, a few kilobytes on disk."""
    return encode(Image.new("1", (7000, 7000)), optimize=True)


def exif_rotated_jpeg():
    """A 400×300 JPEG whose EXIF orientation (6) says it is shown rotated 90°, i.e. 300×400."""
    image = pattern(11, (400, 300))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", exif=exif.tobytes())


def sixteen_bit_png():
    image = Image.new("I;16", (300, 300))
    image.putdata([(x * 200) % 65536 for x in range(300 * 300)])
    return encode(image)


def palette_transparent_png():
    image = Image.new("P", (300, 300), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 150, 300))
    return encode(image, transparency=0)


def la_png():
    return encode(Image.new("LA", (300, 300), (40, 0)))


def rgba_png():
    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    image.paste((0, 128, 0, 255), (0, 0, 100, 300))
    return encode(image)


def cmyk_jpeg():
    return encode(Image.new("CMYK", (300, 300), (0, 255, 255, 0)), "JPEG", quality=95)


def linear_rgb_profile():
    """An ICC v2 profile with sRGB's primaries and a linear tone curve: its grey 128 is sRGB's 188."""
    def s15(value):
        return struct.pack(">i", round(value * 65536))

    def xyz(x, y, z):
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    curve = b"curv" + bytes(4) + struct.pack(">I", 0)  # no points: the identity
    text = b"linear sRGB\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ "
              + bytes(12) + b"acsp" + bytes(4 * 4 + 8 + 4) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(4 + 16 + 28))
    return header + table + data


def grey_with_profile(fmt, profile):
    return encode(Image.new("RGB", (300, 300), (128, 128, 128)), fmt, icc_profile=profile)


# (file name, bytes, the message the refusal must contain, settings to override)
def bad_corpus():
    png = good_png(3)
    jpeg = good_jpeg(4)
    webp = good_webp(6)
    return [
        ("empty.png", b"", "The file is empty.", {}),
        ("page.png", b"<!DOCTYPE html><html><body>hi</body></html>", "The file is an HTML page, not a PNG, JPEG or WebP image.", {}),
        ("script.png", b"<script>alert(1)</script>", "The file is an HTML page, not a PNG, JPEG or WebP image.", {}),
        ("drawing.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300"></svg>', "The file is an SVG drawing, not a PNG, JPEG or WebP image.", {}),
        ("drawing-xml.png", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "The file is an SVG drawing, not a PNG, JPEG or WebP image.", {}),
        ("feed.jpg", b'<?xml version="1.0"?><rss></rss>', "The file is an XML or HTML document, not a PNG, JPEG or WebP image.", {}),
        ("doc.png", b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", "The file is a PDF document, not a PNG, JPEG or WebP image.", {}),
        ("archive.png", zip_bytes(), "The file is a ZIP archive, not a PNG, JPEG or WebP image.", {}),
        ("program.png", b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "The file is an executable program, not a PNG, JPEG or WebP image.", {}),
        ("program.webp", b"MZ\x90\x00" + b"\x00" * 64, "The file is an executable program, not a PNG, JPEG or WebP image.", {}),
        ("still.png", encode(pattern(8), "GIF"), "The file is a GIF image, not a PNG, JPEG or WebP image.", {}),
        ("animated.gif", animated_gif(), "The file is a GIF image, not a PNG, JPEG or WebP image.", {}),
        ("bitmap.png", encode(pattern(9), "BMP"), "The file is a BMP image, not a PNG, JPEG or WebP image.", {}),
        ("scan.png", encode(pattern(10), "TIFF"), "The file is a TIFF image, not a PNG, JPEG or WebP image.", {}),
        ("noise.png", bytes(random.Random(1).randrange(256) for _ in range(4000)), "The file is not a PNG, JPEG or WebP image.", {}),
        ("words.png", b"just some words, not an image", "The file is not a PNG, JPEG or WebP image.", {}),
        ("truncated.png", png[: len(png) // 2], "The image is truncated or corrupt and cannot be read.", {}),
        ("truncated.jpg", jpeg[: len(jpeg) // 2], "The image is truncated or corrupt and cannot be read.", {}),
        ("truncated.webp", webp[: len(webp) // 2], "The image is truncated or corrupt and cannot be read.", {}),
        ("magic-only.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "The image is truncated or corrupt and cannot be read.", {}),
        ("magic-only.jpg", b"\xff\xd8\xff\xe0" + b"\x13" * 100, "The image is truncated or corrupt and cannot be read.", {}),
        ("bad-crc.png", png[:29] + b"\x00\x00\x00\x00" + png[33:], "The image is truncated or corrupt and cannot be read.", {}),
        ("html-after-magic.png", b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>", "The image is truncated or corrupt and cannot be read.", {}),
        ("huge-header.png", png_header_only(8000, 8000), "The image is 8000×8000 pixels; the limit is 40000000 pixels in all.", {}),
        ("giant-header.png", png_header_only(50000, 50000), "The image has too many pixels (a possible decompression bomb); the limit is 40000000 pixels.", {}),
        ("huge-header.jpg", jpeg_with_dimensions(9000, 9000), "The image is 9000×9000 pixels; the limit is 40000000 pixels in all.", {}),
        ("bomb.png", real_decompression_bomb(), "The image is 7000×7000 pixels; the limit is 40000000 pixels in all.", {}),
        ("tiny.png", good_png(12, (100, 100)), "The image is 100×100 pixels; each side must be at least 256 pixels.", {}),
        ("strip.jpg", good_jpeg(13, (2000, 40)), "The image is 2000×40 pixels; each side must be at least 256 pixels.", {}),
        ("big.png", good_png(14), "; the limit is 1.0 kB.", {"WORK_MAX_BYTES": 1000}),
        ("animated.webp", animated("WEBP"), "Animated images are not accepted; upload a single still frame as PNG, JPEG or WebP.", {}),
        ("animated.png", animated("PNG"), "Animated images are not accepted; upload a single still frame as PNG, JPEG or WebP.", {}),
        ("zip-polyglot.png", png + zip_bytes(), "The file has extra data after the end of the PNG image, so it may also be another kind of file.", {}),
        ("zip-polyglot.jpg", jpeg + zip_bytes(), "The file has extra data after the end of the JPEG image, so it may also be another kind of file.", {}),
        ("html-tail.jpg", jpeg + b"<html><script>alert(1)</script></html>", "The file has extra data after the end of the JPEG image, so it may also be another kind of file.", {}),
        ("html-in-text.png", png_with_text("Comment", "<html><script>alert(1)</script></html>"), "The file contains HTML or SVG markup, so it may also be another kind of file.", {}),
        ("webp-tail.webp", webp + b"PK\x03\x04junk", "The WebP file's length does not match its header, so it is truncated or has extra data.", {}),
    ]


# (file name, bytes, expected (width, height), a pixel to check in the RGB training copy and its colour or None)
def normalised_corpus():
    return [
        ("cmyk.jpg", cmyk_jpeg(), (300, 300), ((10, 10), (255, 0, 0))),
        ("sixteen-bit.png", sixteen_bit_png(), (300, 300), None),
        ("palette-transparent.png", palette_transparent_png(), (300, 300), ((200, 10), (255, 255, 255))),
        ("grey-alpha.png", la_png(), (300, 300), ((10, 10), (255, 255, 255))),
        ("rgba.png", rgba_png(), (300, 300), ((200, 10), (255, 255, 255))),
        ("rotated.jpg", exif_rotated_jpeg(), (300, 400), None),
        ("one-bit.png", encode(Image.new("1", (300, 300), 1)), (300, 300), ((5, 5), (255, 255, 255))),
        ("jpeg-named.png", good_jpeg(15), (320, 320), None),
        ("still.webp", good_webp(16), (320, 320), None),
        ("linear-profile.png", grey_with_profile("PNG", linear_rgb_profile()), (300, 300), ((5, 5), (188, 188, 188))),
        ("linear-profile.jpg", grey_with_profile("JPEG", linear_rgb_profile()), (300, 300), ((5, 5), (188, 188, 188))),
        ("unreadable-profile.png", grey_with_profile("PNG", b"not a profile"), (300, 300), ((5, 5), (128, 128, 128))),
    ]


def xmp_packet(value):
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/">'
        f'<plus:DataMining rdf:resource="http://ns.useplus.org/ldf/vocab/{value}"/>'
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode("utf-8")


def png_with_xmp(value, seed=20):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp_packet(value).decode("utf-8"))
    return encode(pattern(seed), pnginfo=info)


def jpeg_with_xmp(value, seed=21):
    return encode(pattern(seed), "JPEG", xmp=xmp_packet(value))


def signed(fmt, seed, **uses):
    label = uses.pop("label", "cawg.training-mining")
    data = good_png(seed) if fmt == "png" else good_jpeg(seed)
    return sign_image(data, f"image/{'png' if fmt == 'png' else 'jpeg'}", [training_mining(label, **uses)] if uses else [])
