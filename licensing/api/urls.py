from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("works", views.WorkViewSet, basename="works")
router.register("consent-events", views.ConsentEventViewSet, basename="consent-events")
router.register("snapshots", views.DatasetSnapshotViewSet, basename="snapshots")

urlpatterns = [
    path("consent-terms/current/", views.ConsentTermsCurrentView.as_view(), name="consent-terms-current"),
    path("artists/<slug:slug>/", views.PublicArtistView.as_view(), name="artist-public"),
    *router.urls,
]
