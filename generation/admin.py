from django.contrib import admin

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


@admin.register(Style)
class StyleAdmin(admin.ModelAdmin):
    list_display = ["name", "artist", "published_version", "created_at"]
    search_fields = ["name", "artist__display_name"]
    inlines = [AdapterVersionInline]


class TrainingJobInline(admin.StackedInline):
    model = TrainingJob
    readonly_fields = ["step", "total_steps", "eta_seconds", "attempts", "heartbeat_at", "worker", "cancel_requested", "log", "error_detail"]
    exclude = ["losses", "previews"]
    can_delete = False


@admin.register(AdapterVersion)
class AdapterVersionAdmin(admin.ModelAdmin):
    list_display = ["style", "number", "status", "preset", "base_model", "created_at", "finished_at"]
    list_filter = ["status", "preset"]
    search_fields = ["style__name", "style__artist__display_name"]
    readonly_fields = ["snapshot", "base_model", "hyperparameters", "weights_path", "weights_sha256", "metrics", "retired_at"]
    inlines = [TrainingJobInline]
