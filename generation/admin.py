"""Staff see everything; what changes consent or what generation may use goes through the services only."""

from django.contrib import admin, messages
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from licensing.admin import ReadOnlyAdmin, SavesOnlyItsFields

from . import services
from .models import AdapterVersion, BaseModel, Style, TrainingJob


@admin.register(BaseModel)
class BaseModelAdmin(ReadOnlyAdmin):
    """Read-only: a row is recorded from the folder itself (`base_model_current`). A path edited here would make
    another base's adapters count as trained on the current one, or send a training to another folder."""

    list_display = ["name", "kind", "sha256", "path", "created_at"]


class ShowsReasons:
    """The stored reasons are templates with their values apart; staff read the sentences, in their language."""

    @admin.display(description=_("retired reason"))
    def retired_reason_shown(self, version):
        return version.retired_reason_shown

    @admin.display(description=_("failure reason"))
    def failure_reason_shown(self, version):
        return version.failure_reason_shown


class AdapterVersionInline(ShowsReasons, admin.TabularInline):
    model = AdapterVersion
    fields = ["number", "status", "preset", "snapshot", "weights_sha256", "retired_reason_shown", "failure_reason_shown"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # versions come from trainings

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("style", "snapshot__artist")


@admin.action(description=_("Take down the selected styles"), permissions=["change"])
def take_down_styles(modeladmin, request, queryset):
    styles = list(queryset)
    published = sum(style.published_version_id is not None for style in styles)
    styles = [services.style_take_down(style=style) for style in styles]  # published or not: a training under way does not go live either
    messages.success(request, ngettext(
        "Took down %(count)d style; its artist cannot publish it until you lift the takedown.",
        "Took down %(count)d styles; their artists cannot publish them until you lift the takedown.",
        len(styles)) % {"count": len(styles)})
    if published < len(styles):
        messages.info(request, ngettext(
            "%(count)d selected style was not published; a training of it under way will not go live.",
            "%(count)d selected styles were not published; a training of them under way will not go live.",
            len(styles) - published) % {"count": len(styles) - published})
    unexplained = sum(not style.takedown_reason for style in styles)
    if unexplained:  # the artist reads the reason on their style page; without one they learn only the date
        messages.warning(request, ngettext(
            "%(count)d style taken down has no reason yet: write the one its artist reads in the style's form.",
            "%(count)d styles taken down have no reason yet: write the one each artist reads in the style's form.",
            unexplained) % {"count": unexplained})


@admin.action(description=_("Lift the takedown of the selected styles"), permissions=["change"])
def lift_takedowns(modeladmin, request, queryset):
    down = [style for style in queryset if style.taken_down_at is not None]
    for style in down:
        services.style_takedown_lift(style=style)
    messages.success(request, ngettext(
        "Lifted the takedown of %(count)d style; its artist can publish it again.",
        "Lifted the takedown of %(count)d styles; their artists can publish them again.",
        len(down)) % {"count": len(down)})


@admin.register(Style)
class StyleAdmin(SavesOnlyItsFields):
    list_display = ["name", "artist", "published_version", "taken_down_at", "created_at"]
    list_select_related = ["artist", "published_version__style"]
    list_filter = [("taken_down_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "artist__display_name"]
    # Publishing is the artist's act; staff can only take a style down and lift that (the actions), and write
    # the reason the artist reads while it is down.
    readonly_fields = ["artist", "published_version", "taken_down_at"]
    actions = [take_down_styles, lift_takedowns]
    inlines = [AdapterVersionInline]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + (["takedown_reason"] if obj is None or obj.taken_down_at is None else [])

    @transaction.atomic
    def save_model(self, request, obj, form, change):
        down = Style.objects.select_for_update().filter(pk=obj.pk, taken_down_at__isnull=False).exists()
        if not down and "takedown_reason" in form.changed_data:  # lifted while the page was open: no reason to keep
            form.changed_data.remove("takedown_reason")
        super().save_model(request, obj, form, change)

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

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(AdapterVersion)
class AdapterVersionAdmin(ShowsReasons, ReadOnlyAdmin):
    """Read-only: versions come from trainings, and their status from the training and withdrawal services
    (a retired version set back to ready here would reach generation)."""

    exclude = ["retired_reason", "retired_params", "failure_reason", "failure_params"]
    readonly_fields = ["retired_reason_shown", "failure_reason_shown"]
    list_display = ["style", "number", "status", "preset", "base_model", "created_at", "finished_at"]
    list_filter = ["status", "preset"]
    search_fields = ["style__name", "style__artist__display_name"]
    inlines = [TrainingJobInline]
