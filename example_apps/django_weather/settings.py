"""Settings of the weather API. Entra ID comes from the official sidecar's variables (``ENTRA_MW = "env"``):
``AzureAd__Instance``, ``AzureAd__TenantId``, ``AzureAd__ClientId``, ``AzureAd__ClientCredentials__0__*`` and
``DownstreamApis__forecast__*`` (``python -m example_apps.django_weather`` sets them for FakeEntra)."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "weather-example-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "example_apps.django_weather.urls"
USE_TZ = True
DATABASES: dict[str, dict[str, str]] = {}  # the API needs none: callers are verified from their tokens

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "entra_mw.contrib.django",
]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "entra_mw.contrib.django.EntraMiddleware",
]

ENTRA_MW = "env"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["entra_mw.contrib.django.rest_framework.EntraAuthentication"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
}
