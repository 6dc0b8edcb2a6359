"""The one place that decides who may do what: pages, the API and templates all ask here."""

from enum import Enum
from functools import wraps
from urllib.parse import urlsplit

from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse
from django.shortcuts import render
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission


class Role(str, Enum):
    SUBSCRIBER = "subscriber"
    ARTIST = "artist"
    STAFF = "staff"


def roles_of(user):
    """The roles of a user: every signed-in user is a subscriber; artists have a profile; staff use the admin."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    roles = {Role.SUBSCRIBER}
    if hasattr(user, "artist"):
        roles.add(Role.ARTIST)
    if user.is_staff:
        roles.add(Role.STAFF)
    return frozenset(roles)


def has_role(user, role):
    return role in roles_of(user)


def role_required(role):
    """View decorator: anonymous users go to the log-in page; signed-in users without the role get a 404 (one that
    tells a subscriber at a studio page that the studio is for artists)."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                if request.headers.get("HX-Request"):
                    # A poll from a page whose session ended: the whole page goes to log in, rather than
                    # the log-in form being swapped into a panel of it.
                    page = urlsplit(request.headers.get("HX-Current-URL", "")).path or request.get_full_path()
                    return HttpResponse(status=204, headers={"HX-Redirect": redirect_to_login(page).url})
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, role):
                # Still a 404 (nothing here is theirs), but a subscriber who followed a studio link is told why.
                return render(request, "404.html", {"needs_artist_profile": role == Role.ARTIST}, status=404)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class HasRole(BasePermission):
    """DRF permission for one role; `HasRole.for_role(Role.ARTIST)` makes the class a view lists.

    A signed-in user without the role gets 403 for every id alike; with `not_found=True`, a 404, as the
    pages answer (the style-training API: "others get 404").
    """

    role = None
    not_found = False

    @classmethod
    def for_role(cls, role, not_found=False):
        name = f"Has{role.value.title()}Role{'OrNotFound' if not_found else ''}"
        return type(name, (cls,), {"role": role, "not_found": not_found})

    def has_permission(self, request, view):
        if has_role(request.user, self.role):
            return True
        if self.not_found and request.user.is_authenticated:
            raise NotFound()
        return False


IsArtist = HasRole.for_role(Role.ARTIST)
IsArtistOrNotFound = HasRole.for_role(Role.ARTIST, not_found=True)
