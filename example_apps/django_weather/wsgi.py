"""WSGI entry point: ``gunicorn example_apps.django_weather.wsgi``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_apps.django_weather.settings")
application = get_wsgi_application()
