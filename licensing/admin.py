from django.contrib import admin

from .models import Artist


@admin.register(Artist)
class ArtistAdmin(admin.ModelAdmin):
    list_display = ["display_name", "slug", "user", "created_at"]
    search_fields = ["display_name", "slug", "user__email"]
    prepopulated_fields = {"slug": ["display_name"]}
