"""The web sign-in routes: ``urlpatterns += [path("auth/", include("entra_mw.contrib.django.signin_urls"))]``
gives ``auth/login``, ``auth/callback`` (the redirect URI to register) and ``auth/logout`` (namespace
``entra_mw_signin``)."""

from __future__ import annotations

from django.urls import path

from . import signin

app_name = "entra_mw_signin"

urlpatterns = [
    path("login", signin.login, name="login"),
    path("callback", signin.callback, name="callback"),
    path("logout", signin.logout, name="logout"),
]
