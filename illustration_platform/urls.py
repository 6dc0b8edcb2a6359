from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from illustration_platform.site.views import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("api/", include("illustration_platform.api.urls")),
    path("account/", include("illustration_platform.accounts.urls")),
    path("studio/style/", include("generation.urls")),
    path("studio/", include("licensing.urls")),
    path("", include("illustration_platform.site.urls")),
]

handler500 = "illustration_platform.api.errors.server_error"

if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
