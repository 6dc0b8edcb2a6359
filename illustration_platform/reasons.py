"""Sentences written once and read later, in the reader's language.

A worker, a withdrawal or an upload writes them without knowing who will read them, or in which language:
they are stored as the catalogue's English (marked with gettext_noop) with their values apart, and translated
when shown. A stored text the catalogue lacks (an artist's own words, an error of the training loop, a row
written before reasons were stored this way) shows as it was written.
"""

from django.utils.translation import gettext


def translated_reason(reason, params=None):
    text = gettext(reason) if reason else ""
    return text % params if params else text
