"""Which styles generation uses now, for pages of other apps: an artist's public page (licensing) and the home
page's list of the artists whose styles can be used (site)."""

from django import template

from generation import selectors

register = template.Library()


@register.inclusion_tag("generation/_public_styles.html")
def public_styles(artist):
    return {"versions": selectors.usable_versions_of_artist(artist=artist)}


@register.inclusion_tag("generation/_styles_in_use.html")
def styles_in_use():
    return {"versions": selectors.styles_in_use()}
