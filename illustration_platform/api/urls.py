from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny

from illustration_platform.accounts.api.views import MeView

from .views import ApiRootView

urlpatterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("me/", MeView.as_view(), name="api-me"),
    # AllowAny said outright (it is open either way) so the schema shows it needs no sign-in.
    path("auth/token/", ObtainAuthToken.as_view(permission_classes=[AllowAny]), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("licensing.api.urls")),
    path("", include("generation.api.urls")),
]
