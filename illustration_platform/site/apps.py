from django.apps import AppConfig


class SiteConfig(AppConfig):
    name = "illustration_platform.site"
    label = "site_pages"
    verbose_name = "Site pages"
