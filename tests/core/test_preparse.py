"""The strict pre-parser on its own: shapes, base64url canonicality, JSON strictness, header and claim types."""

from __future__ import annotations

import json
from typing import Any

import pytest

from entra_mw import InvalidToken
from entra_mw._preparse import HEADER_MEMO_SIZE, ParsedToken, preparse
from entra_mw.testing._keys import b64url

HEADER: dict[str, Any] = {"alg": "RS256", "typ": "JWT", "kid": "k1"}
CLAIMS: dict[str, Any] = {"aud": "a", "iss": "i", "exp": 2_000_000_000, "nbf": 1, "tid": "t", "ver": "2.0"}
SIG = b64url(b"\x01" * 256)


def seg(value: Any) -> str:
    return b64url(value if isinstance(value, bytes) else json.dumps(value).encode())


def token(header: Any = None, claims: Any = None, sig: str = SIG) -> str:
    return f"{seg(HEADER if header is None else header)}.{seg(CLAIMS if claims is None else claims)}.{sig}"


def parse(value: object, **kw: Any) -> ParsedToken:
    return preparse(value, max_bytes=kw.pop("max_bytes", 16384), algorithms=kw.pop("algorithms", ("RS256",)), **kw)


def refused(value: object, **kw: Any) -> str:
    with pytest.raises(InvalidToken) as info:
        parse(value, **kw)
    return info.value.reason


def test_parses() -> None:
    text = token()
    parsed = parse(text)
    assert parsed.header == HEADER
    assert parsed.claims == CLAIMS
    assert parsed.kid == "k1"
    assert parsed.alg == "RS256"
    assert parsed.signature == b"\x01" * 256
    assert parsed.signing_input == text.rsplit(".", 1)[0].encode()
    assert parse(text.encode()).claims == CLAIMS


def test_size_cap() -> None:
    assert refused(token(), max_bytes=100) == "too_large"
    assert refused(b"x" * 200, max_bytes=100) == "too_large"


@pytest.mark.parametrize(
    "value", [None, 5, ["a.b.c"], {"a": 1}, "", b"", "a.b", "a.b.c.d", "a.b.c.d.e.f", "..", "a..c"]
)
def test_shapes(value: object) -> None:
    assert refused(value) == "malformed"


def test_jwe() -> None:
    assert refused("a.b.c.d.e") == "jwe"


@pytest.mark.parametrize("bad", ["+", "/", "=", " ", "\n", "é", "\x00", "*"])
def test_alphabet(bad: str) -> None:
    head, payload, sig = token().split(".")
    assert refused(f"{head}.{payload}.{sig[:10]}{bad}{sig[11:]}") == "malformed"


def test_non_canonical_trailing_bits() -> None:
    assert len(SIG) % 4 == 2
    head, payload, _ = token().split(".")
    # 'A' (000000) is canonical as the last of 2 leftover characters, 'B' (000001) sets a padding bit.
    assert parse(f"{head}.{payload}.AA").signature == b"\x00"
    assert refused(f"{head}.{payload}.AB") == "malformed"
    assert parse(f"{head}.{payload}.AAA").signature == b"\x00\x00"
    assert refused(f"{head}.{payload}.AAB") == "malformed"
    assert refused(f"{head}.{payload}.AAAAA") == "malformed"  # length ≡ 1 (mod 4)
    assert refused(f"{head}.{payload}.AA==") == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"exp": 2000000000, "exp": 1}',
        b'{"exp": 2000000000, "a": {"b": 1, "b": 2}}',
        b'{"exp": NaN}',
        b'{"exp": Infinity}',
        b"[1, 2]",
        b'"string"',
        b"{",
        b'{"exp": 2000000000} x',
        b"\xff\xfe",
        b'{"exp": 2000000000, "deep": ' + b"[" * 40 + b"]" * 40 + b"}",
        b'{"exp": 2000000000, "deeper": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"exp": ' + b"9" * 5000 + b"}",
    ],
)
def test_strict_json(payload: bytes) -> None:
    assert refused(token(claims=payload), max_bytes=1 << 20) == "malformed"


def test_whitespace_json_is_fine() -> None:
    claims = b' { "exp" : 2000000000 , "aud" : "a" } \n'
    assert parse(token(claims=claims)).claims == {"exp": 2_000_000_000, "aud": "a"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"typ": "JWT", "kid": "k"}, "bad_header"),
        ({"alg": None, "kid": "k"}, "bad_header"),
        ({"alg": "none", "kid": "k"}, "bad_algorithm"),
        ({"alg": "HS256", "kid": "k"}, "bad_algorithm"),
        ({"alg": "rs256", "kid": "k"}, "bad_algorithm"),
        ({"alg": "RS256", "kid": "k", "jku": "https://x"}, "bad_header"),
        ({"alg": "RS256", "kid": "k", "x5u": "https://x"}, "bad_header"),
        ({"alg": "RS256", "kid": "k", "jwk": {}}, "bad_header"),
        ({"alg": "RS256", "kid": "k", "x5c": []}, "bad_header"),
        ({"alg": "RS256", "kid": "k", "crit": ["x"]}, "bad_header"),
        ({"alg": "RS256", "kid": "k", "enc": "A256GCM"}, "jwe"),
        ({"alg": "RS256", "kid": "k", "zip": "DEF"}, "jwe"),
        ({"alg": "RS256", "kid": "k", "typ": "JWE"}, "bad_header"),
        ({"alg": "RS256", "kid": "k", "x5t": 1}, "bad_header"),
        ({"alg": "RS256"}, "bad_header"),
        ({"alg": "RS256", "kid": "\u00e9"}, "bad_header"),
        (["RS256"], "malformed"),
    ],
)
def test_header(header: Any, expected: str) -> None:
    assert refused(token(header=header)) == expected


def test_algorithms_list() -> None:
    text = token(header={"alg": "PS256", "kid": "k"})
    assert refused(text) == "bad_algorithm"
    assert parse(text, algorithms=("RS256", "PS256")).alg == "PS256"


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"aud": "a"}, "no_expiry"),
        ({"exp": True}, "bad_claim"),
        ({"exp": "1"}, "bad_claim"),
        ({"exp": None}, "bad_claim"),
        ({"exp": -1}, "bad_claim"),
        ({"exp": 1e300}, "bad_claim"),
        ({"exp": 2_000_000_000, "nbf": False}, "bad_claim"),
        ({"exp": 2_000_000_000, "iat": [1]}, "bad_claim"),
        ({"exp": 2_000_000_000, "aud": 1}, "bad_claim"),
        ({"exp": 2_000_000_000, "aud": []}, "bad_claim"),
        ({"exp": 2_000_000_000, "aud": ["a", 1]}, "bad_claim"),
        ({"exp": 2_000_000_000, "iss": {"x": 1}}, "bad_claim"),
        ({"exp": 2_000_000_000, "tid": 1}, "bad_claim"),
        ({"exp": 2_000_000_000, "ver": 2.0}, "bad_claim"),
        ({"exp": 2_000_000_000, "scp": ["a"]}, "bad_claim"),
        ({"exp": 2_000_000_000, "roles": "a"}, "bad_claim"),
        ({"exp": 2_000_000_000, "roles": [1]}, "bad_claim"),
    ],
)
def test_claim_types(claims: dict[str, Any], expected: str) -> None:
    assert refused(token(claims=claims)) == expected


def test_float_times() -> None:
    claims = {"exp": 2_000_000_000.5, "nbf": 0, "aud": "a", "roles": []}
    assert parse(token(claims=claims)).claims == claims


def test_header_memo_is_bounded_and_reused() -> None:
    memo: dict[bytes, tuple[dict[str, Any], str, str]] = {}
    first = parse(token(), headers=memo)
    second = parse(token(claims={**CLAIMS, "x": 1}), headers=memo)
    assert first.header is second.header
    for i in range(HEADER_MEMO_SIZE + 10):
        parse(token(header={**HEADER, "kid": f"k{i}"}), headers=memo)
    assert len(memo) == HEADER_MEMO_SIZE
    # A refused header is never remembered.
    assert refused(token(header={"alg": "HS256", "kid": "k"}), headers={}) == "bad_algorithm"
