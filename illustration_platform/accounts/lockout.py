"""Counting failed log-ins (django-axes): whose they are, and the answer once an account is locked out."""

import ipaddress
import math

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import ngettext

from illustration_platform.api.errors import is_api_request


# axes stores the key in a column of 255 characters.
KEY_LENGTH = 255


def account_key(request, credentials=None):
    """AXES_USERNAME_CALLABLE: the account an attempt is for, as log-in finds it (the database's case folding), so
    every spelling of one address shares one count: "Mio@x", "mio@X", or "mİo@x", which Python's lower() and the
    database's fold apart. An address with no account keeps its own, folded and cut to the column's length. Looked
    up once per request: axes asks several times per attempt."""
    source = credentials if credentials is not None else request.POST
    typed = str(source.get("username") or "").strip()
    known = getattr(request, "_account_keys", None)
    if known is not None and typed in known:
        return known[typed]
    try:
        key = get_user_model().objects.get_by_natural_key(typed).email
    except get_user_model().DoesNotExist:
        key = typed.lower()[:KEY_LENGTH]
    if request is not None:
        request._account_keys = {**(known or {}), typed: key}
    return key


def _network(text):
    """The address in `text` (a port after it dropped), or None. An IPv6 address counts as its /64: one
    subscriber line holds a whole /64, so single addresses would give a guesser endless counts."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


def client_address(request):
    """AXES_CLIENT_IP_CALLABLE: the network a log-in came from. Behind TRUSTED_PROXIES reverse proxies, each of which
    appends the address it was reached from to X-Forwarded-For, it is the entry that many from the right: entries
    further left are the client's own words. With none (the embedded default), or an entry that is not an address,
    REMOTE_ADDR."""
    proxies = settings.TRUSTED_PROXIES
    if proxies:
        hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= proxies and (address := _network(hops[-proxies])):
            return address
    return _network(request.META.get("REMOTE_ADDR", "")) or request.META.get("REMOTE_ADDR")


def forget_failures(user):
    """A password just reset by its mailed link: the lockout's way out, so failures before it no longer count, from
    any address (the link is often opened on another device than the one locked out). A guesser's count starts
    again too: 5 more tries each time the artist resets, against an artist locked out until the quarter hour ends."""
    from axes.utils import reset

    reset(username=user.email)


def locked_out(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the API's error shape under /api/, a page elsewhere; 429 with Retry-After, both
    saying how long the lockout has left."""
    seconds = _seconds_left(request, credentials)
    minutes = math.ceil(seconds / 60)
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
    response["Retry-After"] = str(seconds)
    return response


def _seconds_left(request, credentials):
    """Until the lockout ends: it runs from the failure that started it (later guesses do not extend it)."""
    from axes.models import AccessAttempt

    started = (
        AccessAttempt.objects.filter(username=account_key(request, credentials), ip_address=client_address(request))
        .order_by("-attempt_time").values_list("attempt_time", flat=True).first()
    )
    left = settings.AXES_COOLOFF_TIME - (timezone.now() - started) if started else settings.AXES_COOLOFF_TIME
    return max(1, math.ceil(left.total_seconds()))
