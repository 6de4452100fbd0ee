from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("healthz", views.healthz),
    path("forecast", views.forecast),
    path("forecast/provider", views.provider_forecast),
    path("stations", views.stations),
    path("observations", views.Observations.as_view()),
]
