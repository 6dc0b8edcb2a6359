"""Staff see everything; what changes consent or what generation may use goes through the services only."""

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from licensing.admin import ReadOnlyAdmin

from . import services
from .models import AdapterVersion, BaseModel, Style, TrainingJob


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "sha256", "path", "created_at"]
    readonly_fields = ["sha256", "created_at"]


class AdapterVersionInline(admin.TabularInline):
    model = AdapterVersion
    fields = ["number", "status", "preset", "snapshot", "weights_sha256", "retired_reason", "failure_reason"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    # The stored reasons are templates with their values apart; staff read the sentences.
    @admin.display(description=_("retired reason"))
    def retired_reason(self, version):
        return version.retired_reason_shown

    @admin.display(description=_("failure reason"))
    def failure_reason(self, version):
        return version.failure_reason_shown

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("style", "snapshot__artist")


@admin.action(description=_("Unpublish the selected styles"), permissions=["change"])
def unpublish_styles(modeladmin, request, queryset):
    for style in queryset:
        services.style_unpublish(style=style)
    messages.success(request, _("Unpublished %(count)d style(s).") % {"count": len(queryset)})


@admin.register(Style)
class StyleAdmin(admin.ModelAdmin):
    list_display = ["name", "artist", "published_version", "created_at"]
    list_select_related = ["artist", "published_version__style"]
    search_fields = ["name", "artist__display_name"]
    # Publishing is the artist's act; staff can only take a style down (the action).
    readonly_fields = ["artist", "published_version"]
    actions = [unpublish_styles]
    inlines = [AdapterVersionInline]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # its versions are the audit trail of what was trained on whose works


class TrainingJobInline(admin.StackedInline):
    model = TrainingJob
    fields = readonly_fields = [
        "step", "total_steps", "eta_seconds", "attempts", "heartbeat_at", "worker", "cancel_requested", "log", "error_detail",
    ]
    can_delete = False


@admin.register(AdapterVersion)
class AdapterVersionAdmin(ReadOnlyAdmin):
    """Read-only: versions come from trainings, and their status from the training and withdrawal services
    (a retired version set back to ready here would reach generation)."""

    list_display = ["style", "number", "status", "preset", "base_model", "created_at", "finished_at"]
    list_filter = ["status", "preset"]
    search_fields = ["style__name", "style__artist__display_name"]
    inlines = [TrainingJobInline]
