"""The one gate every uploaded work passes through (upload page, API and import command alike).

Refusals raise ImageRefused with one clear sentence; nothing here writes a file or a row.
Animated images (GIF, animated WebP, APNG) are refused rather than cut to their first frame:
an artist should choose the still that represents the work.
"""

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass

import imagehash
from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from PIL import Image, ImageFile, ImageOps

from generation.ml.images import to_rgb

from .do_not_train import do_not_train_signal

FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}


class ImageRefused(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


@dataclass
class ValidatedImage:
    data: bytes
    format: str
    mime: str
    extension: str
    width: int
    height: int
    sha256: str
    phash: str
    training_png: bytes
    do_not_train_reason: str
    do_not_train_params: dict


def _sniff(data):
    """The format the first bytes announce: PNG/JPEG/WEBP, or a description of what else the file is (in the
    reader's language: it goes into a sentence)."""
    head = data[:512]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _("a GIF image")
    if lowered.startswith(b"<svg") or (lowered.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return _("an SVG drawing")
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script")):
        return _("an HTML page")
    if lowered.startswith(b"<"):
        return _("an XML or HTML document")
    if head.startswith(b"%PDF"):
        return _("a PDF document")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _("a ZIP archive")
    if head.startswith(b"\x7fELF") or head.startswith(b"MZ") or head[:4] in (b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf"):
        return _("an executable program")
    if head.startswith((b"BM",)):
        return _("a BMP image")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _("a TIFF image")
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return _("an AVIF or HEIC image")
    return ""


def _check_no_hidden_payload(data, kind):
    """Refuse polyglots: bytes after the image's end marker or another format's markers inside."""
    if kind == "PNG":
        end = data.rfind(b"IEND")
        if end == -1 or data[end + 8:].strip(b"\x00"):
            raise ImageRefused(_("The file has extra data after the end of the PNG image, so it may also be another kind of file."))
    elif kind == "JPEG":
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise ImageRefused(_("The file has extra data after the end of the JPEG image, so it may also be another kind of file."))
    elif kind == "WEBP":
        (size,) = struct.unpack("<I", data[4:8])
        if size + 8 != len(data):
            raise ImageRefused(_("The WebP file's length does not match its header, so it is truncated or has extra data."))
    lowered = data[:4096].lower()
    if any(marker in lowered for marker in (b"<script", b"<html", b"<svg", b"<!doctype")):
        raise ImageRefused(_("The file contains HTML or SVG markup, so it may also be another kind of file."))
    if b"PK\x03\x04" in data and b"PK\x05\x06" in data[-65_600:]:
        raise ImageRefused(_("The file contains a ZIP archive, so it may also be another kind of file."))


def human_size(size):
    """A file size as people read one, in decimal units as file managers and browsers show them (Django's
    filesizeformat counts in 1024s but writes "MB", so a 21.9 MB file read "20.9 MB")."""
    if size < 1000:
        return ngettext("%(size)s byte", "%(size)s bytes", size) % {"size": size}
    for unit, scale in (("kB", 10**3), ("MB", 10**6), ("GB", 10**9)):
        if size < scale * 1000 or unit == "GB":
            return f"{size / scale:.1f} {unit}"


def refuse_if_too_large(size):
    """ImageRefused for a file over WORK_MAX_BYTES; the API calls it on the declared size, before reading."""
    limit = settings.WORK_MAX_BYTES
    if size > limit:
        shown_size, shown_limit = human_size(size), human_size(limit)
        if shown_size == shown_limit:  # just over: "21.0 MB; the limit is 21.0 MB" would say nothing
            shown_size = _("%(rounded)s (%(bytes)s bytes)") % {"rounded": shown_size, "bytes": size}
            shown_limit = _("%(rounded)s (%(bytes)s bytes)") % {"rounded": shown_limit, "bytes": limit}
        raise ImageRefused(_("The file is %(size)s; the limit is %(limit)s.") % {"size": shown_size, "limit": shown_limit})


def validate_image(data, *, filename=""):
    """Check an uploaded file completely and prepare its training copy; raise ImageRefused otherwise."""
    if not data:
        raise ImageRefused(_("The file is empty."))
    refuse_if_too_large(len(data))
    kind = _sniff(data)
    if kind not in FORMATS:
        if kind:
            raise ImageRefused(_("The file is %(kind)s, not a PNG, JPEG or WebP image.") % {"kind": kind})
        raise ImageRefused(_("The file is not a PNG, JPEG or WebP image."))
    max_pixels = settings.WORK_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRefused(
                    _("The image is %(w)s×%(h)s pixels; the limit is %(limit)s pixels in all.")
                    % {"w": width, "h": height, "limit": max_pixels}
                )
            if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
                raise ImageRefused(_("Animated images are not accepted; upload a single still frame as PNG, JPEG or WebP."))
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            image.load()
            _check_no_hidden_payload(data, kind)
            upright = ImageOps.exif_transpose(image)
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused(_("The image has too many pixels (a possible decompression bomb); the limit is %(limit)s pixels.") % {"limit": max_pixels}) from None
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, EOFError… for broken files
        raise ImageRefused(_("The image is truncated or corrupt and cannot be read.")) from None
    if image.format != kind:
        raise ImageRefused(_("The file is not a PNG, JPEG or WebP image."))
    width, height = upright.size
    min_side = settings.WORK_MIN_SIDE_PX
    if min(width, height) < min_side:
        raise ImageRefused(
            _("The image is %(w)s×%(h)s pixels; each side must be at least %(min)s pixels.")
            % {"w": width, "h": height, "min": min_side}
        )
    try:
        rgb = to_rgb(upright)
    except Exception:
        raise ImageRefused(_("The image uses a colour format that cannot be converted to RGB.")) from None
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG", optimize=False)
    mime, extension = FORMATS[kind]
    signal = do_not_train_signal(data, mime, image)
    return ValidatedImage(
        data=data,
        format=kind,
        mime=mime,
        extension=extension,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=str(imagehash.phash(rgb)),
        training_png=buffer.getvalue(),
        do_not_train_reason=signal.reason,
        do_not_train_params=signal.params,
    )
