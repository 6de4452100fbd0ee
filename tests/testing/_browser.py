"""A person at a browser, as far as FakeEntra's pages need one: an httpx2 client (it keeps cookies) that opens
URLs without following redirects and submits the page's one form with the page's own hidden fields."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx2


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, str] = field(default_factory=dict)  # button name -> value (submit buttons with a name)
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (name, type) of every input, in order


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        elif tag == "form":
            self.forms.append(Form(action=a.get("action", ""), method=a.get("method", "get").lower()))
        elif tag == "input" and self.forms:
            name, kind = a.get("name", ""), a.get("type", "text")
            self.forms[-1].inputs.append((name, kind))
            if name:
                self.forms[-1].fields[name] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1].buttons[a["name"]] = a.get("value", "")


def forms_of(response: httpx2.Response) -> tuple[list[Form], int]:
    parser = _FormParser()
    parser.feed(response.text)
    return parser.forms, parser.scripts


class Browser:
    """Drives FakeEntra's sign-in (``username``/``password``) and consent (``decision``) forms."""

    def __init__(self, client: httpx2.Client) -> None:
        self.client = client

    def open(self, url: str) -> httpx2.Response:
        return self.client.get(url, follow_redirects=False)

    def submit(self, page: httpx2.Response, **values: str) -> httpx2.Response:
        forms, _ = forms_of(page)
        assert len(forms) == 1, page.text
        form = forms[0]
        data = {**form.fields, **values}
        url = urllib.parse.urljoin(str(page.url), form.action)
        return self.client.post(url, data=data, follow_redirects=False)

    def sign_in(self, page: httpx2.Response, username: str, password: str) -> httpx2.Response:
        return self.submit(page, username=username, password=password)

    def consent(self, page: httpx2.Response, *, accept: bool = True) -> httpx2.Response:
        return self.submit(page, decision="accept" if accept else "deny")


def redirect_params(response: httpx2.Response) -> dict[str, str]:
    """The parameters of an authorization response sent by redirect (query or fragment)."""
    assert response.status_code == 302, (response.status_code, response.text[:500])
    location = urllib.parse.urlsplit(response.headers["location"])
    raw = location.fragment or location.query
    return dict(urllib.parse.parse_qsl(raw))


def location_of(response: httpx2.Response) -> str:
    assert response.status_code == 302, (response.status_code, response.text[:500])
    return response.headers["location"]
