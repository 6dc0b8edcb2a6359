"""Turning any image Pillow opens into the 8-bit RGB the models see: pure PIL, no torch, no Django.

One function for every door a picture comes in by: the upload gate (licensing.validation, which
stores its result as a work's training copy), the training loader (lora_training, for the CLI's
--data folders) and evaluate_style's --works.
"""

from __future__ import annotations

import io

from PIL import Image, ImageCms

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """An sRGB copy: 16-bit scaled to 8 (Pillow's own conversion clips them to white), floats read as 0-1 when
    they all lie there (else as 0-255), palette/alpha composited on white, CMYK and the rest converted, and an
    embedded RGB or CMYK colour profile (Display P3, Adobe RGB, a press's CMYK) converted to sRGB, the space the
    models and every other work are in."""
    profile = _embedded_profile(image)
    if image.mode == "CMYK" and profile is not None and _colour_space(profile) == "CMYK":
        converted = _to_srgb(image, profile)
        if converted is not None:
            return converted
    if image.mode in SIXTEEN_BIT_MODES:
        image = image.convert("I") if image.mode != "I" else image
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    elif image.mode == "F":
        low, high = image.getextrema()
        if 0.0 <= low and high <= 1.0:  # a float image's usual range; as 0-255 it would be black
            image = image.point(lambda value: value * 255.0)
        image = image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))  # white in any RGB space
        background.paste(image, mask=image.getchannel("A"))
        image = background
    elif image.mode != "RGB":
        return image.convert("RGB")  # grey, or CMYK without a profile: nothing to convert from
    if profile is not None and _colour_space(profile) == "RGB":
        return _to_srgb(image, profile) or image
    return image


_SRGB = ImageCms.createProfile("sRGB")


def _embedded_profile(image: Image.Image) -> ImageCms.ImageCmsProfile | None:
    data = image.info.get("icc_profile")
    if not data:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(data))
    except (OSError, ImageCms.PyCMSError):  # a profile littlecms cannot read: the pixels are taken as sRGB
        return None


def _colour_space(profile: ImageCms.ImageCmsProfile) -> str:
    return profile.profile.xcolor_space.strip()


def _to_srgb(image: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image | None:
    try:
        return ImageCms.profileToProfile(image, profile, _SRGB, renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                         outputMode="RGB")
    except ImageCms.PyCMSError:  # a profile that does not fit the pixels: they are taken as they are
        return None
