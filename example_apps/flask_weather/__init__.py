"""A small weather API on Flask, protected by Microsoft Entra ID (``python -m example_apps.flask_weather``)."""
