"""The web app: signs users in (authorization code + PKCE, through this library) and calls the API for them with
a delegated token. Its own credential is whatever the engine was configured with — here a managed identity used
as a federated credential, so the app holds no secret."""

from __future__ import annotations

import html
import json

from flask import Flask

from entra_mw import WebSignIn
from entra_mw.contrib.flask import EntraMW, current_downstream, current_user, login_required

#: The name of the protected API in the web app's configuration (``EntraConfig(downstream_apis=...)``).
API = "claims_api"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str) -> str:
    return _PAGE.format(title=html.escape(title), body=body)


def _sign_out_form() -> str:
    return '<form method="post" action="/auth/logout"><button id="sign-out" type="submit">Sign out</button></form>'


def create_web_app(signin: WebSignIn) -> Flask:
    """The web app: ``/`` (start page), ``/call-api`` (signed-in users: calls the API configured as
    ``claims_api`` for them), and the sign-in routes under ``/auth``."""
    web = Flask("webapp_calls_api.web")
    EntraMW(web, auth=signin.auth, sign_in=signin)

    @web.get("/")
    def index() -> str:
        if not current_user:
            return _page(
                "Web app calls API",
                '<p>You are not signed in.</p><p><a id="sign-in" href="/auth/login">Sign in</a></p>',
            )
        who = html.escape(f"{current_user.name} ({current_user.username})")
        body = (
            f'<p id="user">Signed in as {who}</p>'
            '<p><a id="call-api" href="/call-api">Call the API</a></p>' + _sign_out_form()
        )
        return _page("Web app calls API", body)

    @web.get("/call-api")
    @login_required
    def call_api() -> str:
        # The signed-in user's token for the API (from their session, refreshed silently), sent by Downstream.
        answer = current_downstream.call(API, "api/claims")
        try:
            shown = json.dumps(answer.json(), indent=2, sort_keys=True)
        except ValueError:
            shown = answer.text[:2000]
        body = (
            f'<p>The API answered <span id="api-status">{answer.status_code}</span>:</p>'
            f'<pre id="api-answer">{html.escape(shown)}</pre><p><a href="/">Back</a></p>' + _sign_out_form()
        )
        return _page("The API's answer", body)

    return web
