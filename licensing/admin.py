from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from . import services

from .models import Artist, ConsentEvent, ConsentTerms, DatasetSnapshot, Work


@admin.register(Artist)
class ArtistAdmin(admin.ModelAdmin):
    list_display = ["display_name", "slug", "user", "agreement", "left_at", "created_at"]
    search_fields = ["display_name", "slug", "user__email"]
    list_filter = ["left_at"]
    prepopulated_fields = {"slug": ["display_name"]}
    raw_id_fields = ["user"]
    # Accepting the agreement and leaving are the artist's own acts, recorded by the services with their
    # consent events; staff editing them would forge an acceptance or undo a departure.
    readonly_fields = ["agreement", "agreement_accepted_at", "left_at"]


@admin.register(ConsentTerms)
class ConsentTermsAdmin(admin.ModelAdmin):
    """New terms are a new version; the words of a version someone has accepted never change."""

    list_display = ["kind", "version", "title", "is_active", "published_at"]
    list_filter = ["kind", "is_active"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and self._accepted(obj):
            return ["kind", "version", "title", "text"]
        return []

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or not self._accepted(obj))

    @staticmethod
    def _accepted(terms):
        return (
            ConsentEvent.objects.filter(terms=terms).exists()
            or Artist.objects.filter(agreement=terms).exists()
            or DatasetSnapshot.objects.filter(terms=terms).exists()
        )


@admin.action(description=_("Delete the selected works (withdraws their consent, retires their adapters)"), permissions=["change"])
def delete_works(modeladmin, request, queryset):
    deleted = services.works_delete(works=list(queryset), actor=request.user)
    messages.success(request, _("Deleted %(count)d work(s).") % {"count": len(deleted)})


@admin.register(Work)
class WorkAdmin(admin.ModelAdmin):
    """Works arrive through the validated upload and leave through the withdrawal service (the action):
    a status or do-not-train flag edited here would skip the consent event and the adapters' retirement."""

    list_display = ["id", "artist", "original_name", "status", "do_not_train", "shown_on_profile", "current_consent", "created_at"]
    list_filter = ["status", "do_not_train", "shown_on_profile"]
    search_fields = ["artist__display_name", "original_name", "caption", "sha256"]
    raw_id_fields = ["near_duplicate_of"]
    readonly_fields = [
        "artist", "original", "training_image", "status", "do_not_train", "do_not_train_reason", "sha256", "phash", "width", "height", "original_format",
        "current_consent", "deleted_at",
    ]
    actions = [delete_works]

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
    list_display = ["id", "work", "kind", "terms", "actor", "reason", "created_at"]
    list_filter = ["kind", "terms"]
    search_fields = ["work__artist__display_name", "actor__email"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["id", "artist", "terms", "work_count", "fingerprint", "created_at"]
    search_fields = ["artist__display_name", "fingerprint"]
