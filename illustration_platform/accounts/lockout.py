"""Counting failed log-ins (django-axes): whose they are, and the answer once an account is locked out."""

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from illustration_platform.api.errors import is_api_request


def folded_username(request, credentials=None):
    """AXES_USERNAME_CALLABLE: the address as accounts are looked up, case-folded; else "Mio@x" and "mio@X" would
    each have their own count, and capitals would buy a guesser more tries."""
    source = credentials if credentials is not None else request.POST
    return str(source.get("username") or "").strip().lower()


def locked_out(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the API's error shape under /api/, a page elsewhere; 429 with Retry-After."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    message = ngettext(
        "Too many failed log-ins for this account from your address. Try again in %(minutes)s minute, or reset "
        "your password.",
        "Too many failed log-ins for this account from your address. Try again in %(minutes)s minutes, or reset "
        "your password.",
        minutes,
    ) % {"minutes": minutes}
    if is_api_request(request):
        response = JsonResponse({"error": {"code": "locked_out", "message": message}}, status=429)
    else:
        response = render(request, "accounts/locked_out.html", {"message": message}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
