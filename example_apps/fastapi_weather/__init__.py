"""A small weather API on FastAPI, protected by Microsoft Entra ID (``python -m example_apps.fastapi_weather``)."""
