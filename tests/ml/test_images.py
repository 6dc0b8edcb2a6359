"""Every door a picture comes in by gives the same sRGB pixels: embedded colour profiles are converted."""

import io

from PIL import Image, ImageCms

from generation.ml.images import to_rgb
from tests.licensing.images import linear_rgb_profile


def test_an_rgb_image_in_another_colour_space_is_converted_to_srgb():
    image = Image.new("RGB", (4, 4), (128, 128, 128))
    image.info["icc_profile"] = linear_rgb_profile()
    assert to_rgb(image).getpixel((0, 0)) == (188, 188, 188)


def test_transparency_is_flattened_on_white_before_the_conversion():
    image = Image.new("RGBA", (4, 4), (128, 128, 128, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.info["icc_profile"] = linear_rgb_profile()
    converted = to_rgb(image)
    assert converted.mode == "RGB"
    assert converted.getpixel((0, 0)) == (255, 255, 255) and converted.getpixel((1, 1)) == (188, 188, 188)


def test_an_srgb_profile_leaves_the_pixels_as_they_are():
    image = Image.new("RGB", (4, 4), (37, 200, 90))
    image.info["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert to_rgb(image).getpixel((0, 0)) == (37, 200, 90)


def test_a_profile_that_does_not_fit_the_pixels_is_ignored():
    grey = Image.new("L", (4, 4), 128)
    grey.info["icc_profile"] = linear_rgb_profile()  # an RGB profile on grey pixels
    assert to_rgb(grey).getpixel((0, 0)) == (128, 128, 128)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    cmyk.info["icc_profile"] = linear_rgb_profile()
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)


def test_the_loaders_read_the_profile_of_a_saved_file(tmp_path):
    from generation.ml.lora_training import load_training_image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, "PNG", icc_profile=linear_rgb_profile())
    (tmp_path / "work.png").write_bytes(buffer.getvalue())
    assert load_training_image(tmp_path / "work.png", 32).getpixel((0, 0)) == (188, 188, 188)
