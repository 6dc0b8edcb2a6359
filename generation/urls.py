from django.urls import path

from . import views

app_name = "generation"

urlpatterns = [
    path("", views.style_page, name="style"),
    path("train/", views.train, name="train"),
    path("styles/<int:style_id>/unpublish/", views.unpublish, name="unpublish"),
    path("versions/<int:version_id>/job/", views.job_panel, name="job_panel"),
    path("versions/<int:version_id>/cancel/", views.cancel, name="cancel"),
    path("versions/<int:version_id>/publish/", views.publish, name="publish"),
]
