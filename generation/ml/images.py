"""Turning any image Pillow opens into the 8-bit RGB the models see: pure PIL, no torch, no Django.

One function for every door a picture comes in by: the upload gate (licensing.validation, which
stores its result as a work's training copy), the training loader (lora_training, for the CLI's
--data folders) and evaluate_style's --works.
"""

from __future__ import annotations

from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy: 16-bit scaled to 8 (Pillow's own conversion clips them to white), floats read as 0-1 when
    they all lie there (else as 0-255), palette/alpha composited on white, CMYK and the rest converted."""
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
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image
