"""Reads of the licensing app that need more than one line of ORM."""

from django.db.models import Q
from django.shortcuts import get_object_or_404

from .models import Artist, ConsentEvent, ConsentTerms, Work


def works_of_artist(*, artist):
    return (
        Work.objects.filter(artist=artist, status=Work.Status.ACTIVE)
        .select_related("current_consent", "current_consent__terms")
        .with_copy_held()
        .order_by("-created_at", "-id")
    )


def work_for_user(*, user, pk):
    """One active work of the signed-in artist; anything else (another artist's, deleted, missing) is a 404."""
    return get_object_or_404(
        Work.objects.select_related("artist", "current_consent", "current_consent__terms").with_copy_held(),
        pk=pk, artist__user=user, status=Work.Status.ACTIVE,
    )


def work_with_history(*, user, pk):
    """One work of the signed-in artist, deleted or not: its consent history outlives it. Another's is a 404."""
    return get_object_or_404(Work, pk=pk, artist__user=user)


def work_in_a_snapshot(*, work):
    """Whether any of the artist's frozen training sets holds the work: what was trained on it is retired when
    its consent goes."""
    return any(work.pk in snapshot.work_ids for snapshot in work.artist.snapshots.only("entries"))


def works_opted_in(*, artist, terms):
    """Active works whose latest event is a grant under `terms`, whether or not they can be trained on."""
    return Work.objects.filter(
        artist=artist, status=Work.Status.ACTIVE, current_consent__kind=ConsentEvent.Kind.GRANTED, current_consent__terms=terms,
    ).order_by("pk")


def works_for_training(*, artist, terms):
    """Works a snapshot may hold: opted in under `terms`, captioned, no do-not-train signal, not held as the same
    image as another artist's work."""
    return (
        works_opted_in(artist=artist, terms=terms).filter(do_not_train=False).exclude(caption="").not_held_for_review()
    )


def works_needing_reconsent(*, artist, terms):
    """Opted-in works whose grant was under an older terms version (still valid for past training, not future)."""
    if terms is None:
        return Work.objects.none()
    return (
        Work.objects.filter(artist=artist, status=Work.Status.ACTIVE, current_consent__kind=ConsentEvent.Kind.GRANTED)
        .exclude(current_consent__terms=terms)
        .order_by("pk")
    )


def consent_history(*, artist, work=None):
    events = ConsentEvent.objects.filter(work__artist=artist).select_related("work", "terms", "actor")
    if work is not None:
        events = events.filter(work=work)
    return events.order_by("-created_at", "-id")


def artist_public(*, slug):
    """An artist still on the platform: not left, and an account staff have not deactivated (generation treats such
    an artist as off the platform too)."""
    return get_object_or_404(Artist, slug=slug, left_at__isnull=True, user__is_active=True)


def works_shown(*, artist):
    """The works on the artist's public page: a work held as another artist's image waits for staff there too."""
    return (
        Work.objects.filter(artist=artist, status=Work.Status.ACTIVE, shown_on_profile=True).not_held_for_review()
        .order_by("-created_at", "-id")
    )


def studio_summary(*, artist):
    terms = ConsentTerms.current(ConsentTerms.Kind.TRAINING)
    works = works_of_artist(artist=artist)
    return {
        "terms": terms,
        "total": works.count(),
        "opted_in": works.filter(current_consent__kind=ConsentEvent.Kind.GRANTED).count(),
        "for_training": works_for_training(artist=artist, terms=terms).count() if terms else 0,
        "needs_reconsent": list(works_needing_reconsent(artist=artist, terms=terms).values_list("pk", flat=True)),
        "do_not_train": works.filter(do_not_train=True).count(),
        "uncaptioned": works.filter(Q(caption="")).count(),
    }
