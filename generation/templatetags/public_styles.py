"""The artist's public page (a licensing template) shows which of their styles generation uses now."""

from django import template

from generation import selectors

register = template.Library()


@register.inclusion_tag("generation/_public_styles.html")
def public_styles(artist):
    return {"versions": selectors.usable_versions_of_artist(artist=artist)}
