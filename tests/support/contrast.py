"""WCAG contrast of text against its own background, read from the browser's computed styles."""

import re


def _luminance(rgb):
    def channel(value):
        value /= 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (channel(v) for v in rgb)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def _rgb(css_colour):
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    return red, green, blue


def contrast_ratio(foreground, background):
    lighter, darker = sorted((_luminance(_rgb(foreground)), _luminance(_rgb(background))), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def badge_contrasts(page):
    """(text, contrast ratio) of every .badge on the page; each has a background of its own."""
    styles = page.evaluate(
        "() => [...document.querySelectorAll('.badge')].map(e => "
        "[e.textContent.trim(), getComputedStyle(e).color, getComputedStyle(e).backgroundColor])"
    )
    return [(text, round(contrast_ratio(colour, background), 2)) for text, colour, background in styles]
