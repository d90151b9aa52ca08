"""URLs: the admin, plus the demo views (upload, streaming)."""

from demo import views
from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("upload/", views.upload, name="upload"),
    path("stream/", views.stream, name="stream"),
    path("admin/", admin.site.urls),
]
