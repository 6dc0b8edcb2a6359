"""Studio pages: thin views over licensing.services and licensing.selectors."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from illustration_platform.accounts.roles import Role, has_role, role_required

from . import selectors, services
from .forms import ArtistProfileForm, BecomeArtistForm, CaptionsForm
from .models import ConsentTerms, DatasetSnapshot, Work
from .validation import human_size


def _artist(request):
    artist = request.user.artist
    if artist.has_left:
        return None
    return artist


@role_required(Role.ARTIST)
def studio(request):
    artist = request.user.artist
    if artist.has_left:
        return render(request, "licensing/left.html", {"artist": artist})
    works = list(selectors.works_of_artist(artist=artist).select_related("near_duplicate_of"))
    summary = selectors.studio_summary(artist=artist)
    terms = summary["terms"]
    for work in works:
        work.needs_new_consent = work.needs_reconsent(terms)
    copies_held = [work.pk for work in works if work.copy_held_for_review]
    # The terms are shown open while any work may yet be opted in (one without a caption too: a caption typed on
    # this page is saved by the opt-in button itself): consent is given to a text the artist can see.
    consent_to_give = any(
        not (work.do_not_train or work.ownership_held) and (not work.is_opted_in or work.needs_new_consent)
        for work in works
    )
    context = {"artist": artist, "works": works, "summary": summary, "terms": terms, "copies_held": copies_held,
               "consent_to_give": consent_to_give}
    return render(request, "licensing/studio.html", context)


@role_required(Role.ARTIST)
@require_POST
def captions_save(request):
    """The caption editor form: per-work captions and shown flags, plus 'apply to selected' or 'find and replace'."""
    artist = _artist(request) or _gone()
    works = list(selectors.works_of_artist(artist=artist))
    form = CaptionsForm(request.POST, work_ids=[work.pk for work in works])
    if not form.is_valid():
        messages.error(request, _("Select only your own works."))
        return redirect("licensing:studio")
    operation = request.POST.get("operation", "save")
    selected = form.cleaned_data["selected"]
    saved = _save_edited_captions(request, works)  # first, whichever button: a bulk edit applies to what is shown
    if operation == "apply":
        if not selected:
            messages.error(request, _("Select at least one work first."))
        else:
            changed = services.work_captions_apply(artist=artist, work_ids=selected, caption=form.cleaned_data["bulk_caption"])
            messages.success(request, ngettext(
                "Caption applied to %(n)s work.", "Caption applied to %(n)s works.", changed) % {"n": changed})
    elif operation == "replace":
        try:
            changed = services.work_captions_replace(
                artist=artist, find=form.cleaned_data["find"], replace=form.cleaned_data["replace"],
                work_ids=selected or None,
            )
            messages.success(request, ngettext(
                "Replaced in %(n)s caption.", "Replaced in %(n)s captions.", changed) % {"n": changed})
        except services.LicensingError as error:
            messages.error(request, error.message)
    else:
        messages.success(request, ngettext("Saved %(n)s work.", "Saved %(n)s works.", saved) % {"n": saved})
    return redirect("licensing:studio")


def _save_edited_captions(request, works):
    """The captions and shown flags the studio's form sent, where they differ from the saved ones. Every button of
    that form sends them: an artist who edits a caption and then opts the work in consents to the caption they see."""
    changed = 0
    for work in works:
        caption = request.POST.get(f"caption-{work.pk}")
        shown = f"shown-{work.pk}" in request.POST
        if caption is None:
            continue
        if caption.strip() != work.caption or shown != work.shown_on_profile:
            services.work_update(work=work, caption=caption, shown_on_profile=shown)
            changed += 1
    return changed


def _gone():
    raise Http404


def _terms_shown(request):
    """The consent terms version the studio page showed beside its opt-in buttons, and the language it showed them
    in (each None when the form sent none), as keyword arguments of the opt-in services."""
    version, language = request.POST.get("terms_version"), request.POST.get("terms_language") or None
    if version is not None:
        try:
            version = int(version)
        except ValueError:
            version = 0  # no version is 0: an unreadable version is refused as not the one in force
    return {"terms_version": version, "terms_language": language}


@role_required(Role.ARTIST)
@require_POST
def work_consent(request, pk, decision):
    artist = _artist(request) or _gone()
    _save_edited_captions(request, selectors.works_of_artist(artist=artist))
    work = selectors.work_for_user(user=request.user, pk=pk)
    if decision == "opt-in":
        try:
            services.work_opt_in(work=work, actor=request.user, **_terms_shown(request))
            messages.success(request, _("Work #%(id)s is opted in.") % {"id": work.pk})
        except services.LicensingError as error:
            messages.error(request, error.message)
    else:
        services.work_withdraw(work=work, actor=request.user, reason=request.POST.get("reason", ""))
        messages.success(request, _("Consent for work #%(id)s is withdrawn.") % {"id": work.pk})
        _tell_what_the_style_lost(request, work)
    return redirect("licensing:studio")


def _tell_what_the_style_lost(request, work):
    """What a withdrawal did to the artist's style, told where the artist withdrew, not only on the style page."""
    if selectors.work_in_a_snapshot(work=work):
        messages.warning(request, _(
            "Work #%(id)s was among the works a training of your style used: every version trained on it is retired, "
            "and a published one is offline. My style shows whether a retrain on your other works has started."
        ) % {"id": work.pk})


@role_required(Role.ARTIST)
@require_POST
def opt_in_eligible(request):
    artist = _artist(request) or _gone()
    _save_edited_captions(request, selectors.works_of_artist(artist=artist))
    try:
        events = services.works_opt_in_eligible(
            artist=artist, actor=request.user, **_terms_shown(request))
        messages.success(request, ngettext("%(n)s work opted in.", "%(n)s works opted in.", len(events)) % {"n": len(events)})
        held_back = sum(not work.is_eligible for work in selectors.works_of_artist(artist=artist))
        if held_back:
            messages.warning(request, ngettext(
                "%(n)s work cannot be opted in: its row says why (a caption to write, a do-not-train signal, or a "
                "review of who made it).",
                "%(n)s works cannot be opted in: each row says why (a caption to write, a do-not-train signal, or a "
                "review of who made it).",
                held_back) % {"n": held_back})
    except services.LicensingError as error:
        messages.error(request, error.message)
    return redirect("licensing:studio")


@role_required(Role.ARTIST)
@require_POST
def work_delete(request, pk):
    artist = _artist(request) or _gone()
    _save_edited_captions(request, selectors.works_of_artist(artist=artist).exclude(pk=pk))
    work = selectors.work_for_user(user=request.user, pk=pk)
    services.work_delete(work=work, actor=request.user)
    messages.success(request, _("Work #%(id)s is deleted.") % {"id": pk})
    _tell_what_the_style_lost(request, work)
    return redirect("licensing:studio")


@role_required(Role.ARTIST)
def upload(request):
    artist = _artist(request) or _gone()
    return render(request, "licensing/upload.html",
                  {"artist": artist, "min_side": settings.WORK_MIN_SIDE_PX, "max_size": human_size(settings.WORK_MAX_BYTES)})


@role_required(Role.ARTIST)
def consent_history(request):
    artist = request.user.artist
    work = None
    if request.GET.get("work"):
        try:
            work = selectors.work_with_history(user=request.user, pk=int(request.GET["work"]))
        except ValueError:
            raise Http404 from None
    events = selectors.consent_history(artist=artist, work=work)
    return render(request, "licensing/history.html", {"artist": artist, "events": events, "work": work})


@role_required(Role.ARTIST)
def snapshots(request):
    artist = request.user.artist
    if request.method == "POST":
        try:
            snapshot = services.dataset_snapshot_create(artist=artist)
            messages.success(request, _("Snapshot %(id)s of %(n)s works made.") % {"id": snapshot.pk, "n": snapshot.work_count})
        except services.LicensingError as error:
            messages.error(request, error.message)
        return redirect("licensing:snapshots")
    items = DatasetSnapshot.objects.filter(artist=artist).select_related("terms")
    return render(request, "licensing/snapshots.html", {"artist": artist, "snapshots": items})


@login_required
def become_artist(request):
    artist = getattr(request.user, "artist", None)
    if artist is not None and not artist.has_left:
        return redirect("licensing:studio")
    agreement = ConsentTerms.current(ConsentTerms.Kind.ARTIST_AGREEMENT)
    initial = {
        "display_name": request.user.display_name, "agreement_version": agreement and agreement.version,
        "agreement_language": agreement and agreement.language_shown(),
    }
    form = BecomeArtistForm(request.POST or None, initial=initial)
    if request.method == "POST":
        refusal = form.errors.get("agreement_version")
        if form.is_valid():
            try:
                services.artist_become(user=request.user, **form.cleaned_data)
                messages.success(request, _("Welcome, artist! Upload your first works."))
                return redirect("licensing:upload")
            except services.LicensingError as error:
                if error.code in ("terms_changed", "unknown_language"):
                    refusal = [error.message]
                else:
                    form.add_error("slug" if error.code == "slug_taken" else None, error.message)
        if refusal:
            # The box was ticked for another version: the page shows the one in force, unticked, the rest kept.
            kept = {name: request.POST.get(name, "") for name in ("display_name", "slug", "bio", "links", "payout_contact")}
            form = BecomeArtistForm(initial=initial | kept)
            messages.error(request, refusal[0])
    return render(request, "licensing/become_artist.html", {"form": form, "agreement": agreement})


@role_required(Role.ARTIST)
def profile(request):
    artist = _artist(request) or _gone()
    form = ArtistProfileForm(request.POST or None, request.FILES or None, instance=artist)
    if request.method == "POST" and form.is_valid():
        try:
            services.artist_update(artist=artist, **{name: form.cleaned_data[name] for name in form.changed_data})
            messages.success(request, _("Profile saved."))
            return redirect("licensing:profile")
        except services.LicensingError as error:
            form.add_error("slug", error.message)
    return render(request, "licensing/profile.html", {"artist": artist, "form": form})


@role_required(Role.ARTIST)
def leave(request):
    artist = _artist(request) or _gone()
    if request.method == "POST":
        if request.POST.get("confirm") != artist.slug:
            messages.error(request, _("Type your slug to confirm."))
        else:
            services.artist_leave(artist=artist, actor=request.user)
            messages.success(request, _("You have left. Every consent is withdrawn and your works are deleted."))
            return redirect("licensing:studio")
    return render(request, "licensing/leave.html", {"artist": artist})


def artist_page(request, slug):
    artist = selectors.artist_public(slug=slug)
    return render(request, "licensing/artist_page.html", {"artist": artist, "works": selectors.works_shown(artist=artist)})


def work_file(request, pk, kind):
    """An uploaded file: the owner (or staff) sees every file; anyone sees the original of a work shown on a profile."""
    work = Work.objects.filter(pk=pk, status=Work.Status.ACTIVE).select_related("artist__user").first()
    if work is None:
        raise Http404
    owner = request.user.is_authenticated and work.artist.user_id == request.user.pk
    public = kind == "original" and work.shown_on_profile and not work.ownership_held and work.artist.is_on_platform
    if not (owner or public or has_role(request.user, Role.STAFF)):
        raise Http404
    field = work.original if kind == "original" else work.training_image
    if not field:
        raise Http404
    content_type = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[work.original_format] if kind == "original" else "image/png"
    response = FileResponse(field.open("rb"), content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Disposition"] = "inline"
    return response

