from django.urls import path

from . import views

urlpatterns = [
    path("styles/", views.StyleListView.as_view(), name="api-styles"),
    path("styles/train/", views.TrainView.as_view(), name="api-style-train"),
    path("styles/<int:style_id>/unpublish/", views.UnpublishView.as_view(), name="api-style-unpublish"),
    path("adapter-versions/<int:version_id>/", views.AdapterVersionView.as_view(), name="api-adapter-version"),
    path("adapter-versions/<int:version_id>/cancel/", views.CancelView.as_view(), name="api-adapter-version-cancel"),
    path("adapter-versions/<int:version_id>/publish/", views.PublishView.as_view(), name="api-adapter-version-publish"),
    path("adapter-versions/<int:version_id>/previews/<str:name>", views.PreviewView.as_view(), name="api-adapter-version-preview"),
]
