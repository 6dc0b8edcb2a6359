from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import services

from .models import Artist, ConsentEvent, ConsentTerms, ConsentTermsTranslation, DatasetSnapshot, Work


class SavesOnlyItsFields(admin.ModelAdmin):
    """Saves only the fields the form changed: a whole-row save from the copy the page read would write back, over
    a withdrawal, a takedown or a departure committed meanwhile, the values it had then."""

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=form.changed_data)
        else:
            obj.save()


@admin.register(Artist)
class ArtistAdmin(SavesOnlyItsFields):
    list_display = ["display_name", "slug", "user", "agreement", "left_at", "created_at"]
    search_fields = ["display_name", "slug", "user__email"]
    list_filter = ["left_at"]
    prepopulated_fields = {"slug": ["display_name"]}
    raw_id_fields = ["user"]
    # Accepting the agreement and leaving are the artist's own acts, recorded by the services with their
    # consent events; staff editing them would forge an acceptance or undo a departure.
    readonly_fields = ["agreement", "agreement_accepted_at", "agreement_language", "left_at"]

    def get_readonly_fields(self, request, obj=None):
        # Moved to another account, the profile's works, consents and styles would become that person's.
        return self.readonly_fields + (["user"] if obj is not None else [])


def _words_open(terms):
    """Whether a terms version's words may still change: not while artists are shown it, who accept it by its
    number, nor once anyone accepted it. A draft is written inactive and made active when ready."""
    return terms is None or not (
        terms.is_active
        or ConsentEvent.objects.filter(terms=terms).exists()
        or Artist.objects.filter(agreement=terms).exists()
        or DatasetSnapshot.objects.filter(terms=terms).exists()
    )


class ConsentTermsTranslationInline(admin.StackedInline):
    """A translation is part of the words shown: fixed when the original is."""

    model = ConsentTermsTranslation
    extra = 0

    def has_add_permission(self, request, obj=None):
        return super().has_add_permission(request, obj) and _words_open(obj)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and _words_open(obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _words_open(obj)


@admin.register(ConsentTerms)
class ConsentTermsAdmin(admin.ModelAdmin):
    """New terms are a new version; see `_words_open` for when a version's words are fixed."""

    list_display = ["kind", "version", "title", "is_active", "published_at"]
    list_filter = ["kind", "is_active"]
    inlines = [ConsentTermsTranslationInline]

    def get_readonly_fields(self, request, obj=None):
        return [] if _words_open(obj) else ["kind", "version", "title", "text"]

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _words_open(obj)


@admin.action(description=_("Delete the selected works (withdraws their consent, retires their adapters)"), permissions=["change"])
def delete_works(modeladmin, request, queryset):
    deleted = services.works_delete(works=list(queryset), actor=request.user)
    messages.success(request, ngettext("Deleted %(count)d work.", "Deleted %(count)d works.", len(deleted)) % {"count": len(deleted)})


def _work_figure(heading, work, side=240):
    """A work's picture with who uploaded it and when, for staff comparing a held work with its match."""
    if work.is_deleted:
        return format_html('<figure class="work-figure"><strong>{}</strong><p>{}</p></figure>', heading,
                           _("Work #%(id)s has been deleted.") % {"id": work.pk})
    return format_html(
        '<figure class="work-figure"><strong>{}</strong>'
        '<a href="{}"><img src="{}" alt="{}" width="{}" height="{}" loading="lazy"></a>'
        '<figcaption>{}<br>{}<br>{}×{} {} · sha256 {}</figcaption></figure>',
        heading,
        reverse("admin:licensing_work_change", args=[work.pk]), reverse("licensing:work_file", args=[work.pk, "original"]),
        _("Work #%(id)s") % {"id": work.pk}, side, side,
        _("Work #%(id)s of %(artist)s (%(slug)s)") % {"id": work.pk, "artist": work.artist.display_name,
                                                     "slug": work.artist.slug},
        _("uploaded %(time)s UTC") % {"time": f"{work.created_at:%Y-%m-%d %H:%M}"},
        work.width, work.height, work.original_format, work.sha256[:12],
    )


def _held_comparison(work):
    matched = work.same_image_as
    if matched is None:
        return "—"
    same_file = _("The same file (sha256).") if matched.sha256 == work.sha256 else _(
        "Not the same file: the same picture re-encoded or resized (perceptual hash, confirmed by the pixels).")
    return format_html('<div class="held-comparison">{}{}</div><p>{}</p>',
                       _work_figure(_("Held upload"), work), _work_figure(_("The work it matches"), matched), same_file)


@admin.action(description=_("Confirm that the artist made the selected works held for review (they can be opted in)"),
              permissions=["change"])
def confirm_ownership(modeladmin, request, queryset):
    held = list(queryset.held_for_review().select_related("artist", "same_image_as__artist").order_by("pk"))
    if held and request.POST.get("post") != "yes":
        # Released, a copy can be opted in to another artist's style: staff see both pictures before they decide.
        return TemplateResponse(request, "admin/licensing/work/confirm_ownership.html", {
            **modeladmin.admin_site.each_context(request),
            "title": _("Release the works held for review?"), "opts": modeladmin.model._meta,
            "comparisons": [_held_comparison(work) for work in held], "held": held, "media": modeladmin.media,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        })
    released = services.works_ownership_confirm(works=held, actor=request.user)
    if not released:
        messages.warning(request, _("None of the selected works was held for review; nothing changed."))
        return
    messages.success(request, ngettext(
        "Released %(count)d work held for review.", "Released %(count)d works held for review.", len(released)
    ) % {"count": len(released)})


class HeldForReviewFilter(admin.SimpleListFilter):
    title = _("held for review")
    parameter_name = "held"

    def lookups(self, request, model_admin):
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.held_for_review()
        if self.value() == "no":
            return queryset.not_held_for_review()
        return queryset


class WorkAdminForm(forms.ModelForm):
    def clean(self):
        # The work as read for this request: refused here in the form, where work_update would refuse it too late.
        if self.instance.is_deleted:
            raise forms.ValidationError(_("The work has been deleted."))
        return super().clean()


@admin.register(Work)
class WorkAdmin(admin.ModelAdmin):
    """Works arrive through the validated upload and leave through the withdrawal service (the action):
    a status or do-not-train flag edited here would skip the consent event and the adapters' retirement."""

    form = WorkAdminForm
    list_display = ["id", "artist", "original_name", "status", "do_not_train", "shown_on_profile", "current_consent",
                    "created_at"]
    list_select_related = ["artist", "current_consent"]
    list_filter = ["status", "do_not_train", HeldForReviewFilter, "shown_on_profile"]
    search_fields = ["artist__display_name", "original_name", "caption", "sha256"]
    readonly_fields = [
        "artist", "original", "training_image", "status", "do_not_train", "do_not_train_reason_shown", "sha256", "phash", "width",
        "height", "original_format", "current_consent", "deleted_at", "near_duplicate_of", "same_image_as",
        "ownership_confirmed_at", "ownership_confirmed_by", "staff_told_of_hold_at", "copied_artist_told_at",
        "held_comparison",
    ]
    exclude = ["do_not_train_reason", "do_not_train_params"]  # shown as one sentence, in the reader's language
    actions = [confirm_ownership, delete_works]

    class Media:
        css = {"all": ["licensing/admin.css"]}  # a stylesheet: the site's CSP refuses inline styles

    @admin.display(description=_("do-not-train reason"))
    def do_not_train_reason_shown(self, work):
        return work.do_not_train_reason_shown

    @admin.display(description=_("this work and the other artist's work it matches"))
    def held_comparison(self, work):
        return _held_comparison(work)

    def save_model(self, request, obj, form, change):
        # The service locks the row and refuses a deleted work: the form's copy would write back a consent or status
        # changed since the page was read (a withdrawal undone).
        services.work_update(work=obj, caption=obj.caption, shown_on_profile=obj.shown_on_profile)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ConsentEvent)
class ConsentEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "work", "kind", "terms", "terms_language", "actor", "reason_shown", "created_at"]
    list_select_related = ["work", "terms", "actor"]
    list_filter = ["kind", "terms"]
    search_fields = ["work__artist__display_name", "actor__email"]

    @admin.display(description=_("reason"))
    def reason_shown(self, event):
        return event.reason_shown


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["id", "artist", "terms", "work_count", "fingerprint", "created_at"]
    search_fields = ["artist__display_name", "fingerprint"]
