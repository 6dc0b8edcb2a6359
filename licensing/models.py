from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Artist(models.Model):
    """An illustrator's profile; having one gives a user the artist role."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="artist")
    display_name = models.CharField(_("display name"), max_length=80)
    slug = models.SlugField(_("slug"), unique=True)
    bio = models.TextField(_("bio"), blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["display_name"]

    def __str__(self):
        return self.display_name
