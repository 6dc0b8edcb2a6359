"""Counting failed log-ins (django-axes): whose they are, and the answer once an account is locked out."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from illustration_platform.api.errors import is_api_request


def account_key(request, credentials=None):
    """AXES_USERNAME_CALLABLE: the account an attempt is for, as log-in finds it (the database's case folding), so
    every spelling of one address shares one count: "Mio@x", "mio@X", or "mİo@x", which Python's lower() and the
    database's fold apart. An address with no account keeps its own, folded."""
    source = credentials if credentials is not None else request.POST
    typed = str(source.get("username") or "").strip()
    try:
        return get_user_model().objects.get_by_natural_key(typed).email
    except get_user_model().DoesNotExist:
        return typed.lower()


def client_address(request):
    """AXES_CLIENT_IP_CALLABLE: the address a log-in came from. Behind TRUSTED_PROXIES reverse proxies, each of which
    appends the address it was reached from to X-Forwarded-For, it is the entry that many from the right: entries
    further left are the client's own words. With none (the embedded default), or a header too short, REMOTE_ADDR."""
    proxies = settings.TRUSTED_PROXIES
    if proxies:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR")


def forget_failures(user):
    """A password just reset by its mailed link: the lockout's way out, so failures before it no longer count."""
    from axes.utils import reset

    reset(username=user.email)


def locked_out(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the API's error shape under /api/, a page elsewhere; 429 with Retry-After."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    message = ngettext(
        "Too many failed log-ins for this account from your network (IP) address. Try again in %(minutes)s minute, "
        "or reset your password.",
        "Too many failed log-ins for this account from your network (IP) address. Try again in %(minutes)s "
        "minutes, or reset your password.",
        minutes,
    ) % {"minutes": minutes}
    if is_api_request(request):
        response = JsonResponse({"error": {"code": "locked_out", "message": message}}, status=429)
    else:
        response = render(request, "accounts/locked_out.html", {"message": message}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
