from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("forecast", views.forecast),
    path("stations", views.stations),
    path("outlook", views.outlook),
    path("observations", views.Observations.as_view()),
]
