from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SiteConfig(AppConfig):
    name = "illustration_platform.site"
    label = "site_pages"
    verbose_name = _("Site pages")
