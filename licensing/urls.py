from django.urls import path, re_path

from . import views

app_name = "licensing"

urlpatterns = [
    path("", views.studio, name="studio"),
    path("become-artist/", views.become_artist, name="become_artist"),
    path("profile/", views.profile, name="profile"),
    path("leave/", views.leave, name="leave"),
    path("upload/", views.upload, name="upload"),
    path("captions/", views.captions_save, name="captions"),
    path("works/opt-in-eligible/", views.opt_in_eligible, name="opt_in_eligible"),
    re_path(r"^works/(?P<pk>[0-9]+)/(?P<decision>opt-in|opt-out)/$", views.work_consent, name="work_consent"),
    path("works/<int:pk>/delete/", views.work_delete, name="work_delete"),
    re_path(r"^works/(?P<pk>[0-9]+)/file/(?P<kind>original|training)$", views.work_file, name="work_file"),
    path("history/", views.consent_history, name="history"),
    path("snapshots/", views.snapshots, name="snapshots"),
    path("artists/<slug:slug>/", views.artist_page, name="artist_page"),
]
