from django.contrib import admin
from django.urls import include, path

from chatproject import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("", include("rooms.urls")),
]
