"""The ``entra-mw`` command.

- ``entra-mw demo``: the whole story (chat agent → weather API, every token flow) on the embedded FakeEntra.
- ``entra-mw emulator``: FakeEntra over HTTPS on loopback, with a ready-made tenant; writes the settings to use.
- ``entra-mw decode TOKEN``: a token's header and claims, **not verified**, signature elided.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._version import __version__

__all__ = ["main"]


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def decode_token(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a compact JWT into its header and claims without verifying anything."""
    parts = token.strip().split(".")
    if len(parts) == 5:
        raise ValueError("this is an encrypted token (JWE): its claims cannot be read without the key")
    if len(parts) != 3:
        raise ValueError(f"a JWT has 3 dot-separated parts; this has {len(parts)}")
    try:
        header = _b64url_json(parts[0])
        claims = _b64url_json(parts[1])
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise ValueError(f"not a readable JWT: {type(exc).__name__}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("not a readable JWT: header and payload must be JSON objects")
    return header, claims


def _cmd_decode(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    raw = sys.stdin.read() if args.token == "-" else args.token
    if raw.lower().startswith("bearer "):
        raw = raw[7:]
    try:
        header, claims = decode_token(raw)
    except ValueError as exc:
        err.write(f"entra-mw decode: {exc}\n")
        return 2
    out.write("NOT VERIFIED: decoded without checking the signature, issuer, audience or lifetime.\n")
    out.write(json.dumps({"header": header, "claims": claims, "signature": "<elided>"}, indent=2) + "\n")
    return 0


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._demo import run_demo

    return run_demo(out=out, verbose=not args.quiet)


def _cmd_emulator(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._emulator import run_emulator

    return run_emulator(port=args.port, env_file=args.env_file, out=out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entra-mw", description="Microsoft Entra ID for Python apps, in-process.")
    parser.add_argument("--version", action="version", version=f"entra-mw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run every token flow against the embedded FakeEntra and print the trace")
    demo.add_argument("--quiet", action="store_true", help="print only the verdicts")
    demo.set_defaults(func=_cmd_demo)
    emu = sub.add_parser("emulator", help="serve FakeEntra over HTTPS on 127.0.0.1")
    emu.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    emu.add_argument(
        "--env-file", default="entra-emulator.env", help="where to write the AzureAd__* settings and the CA path"
    )
    emu.set_defaults(func=_cmd_emulator)
    dec = sub.add_parser("decode", help="show a token's header and claims (NOT verified)")
    dec.add_argument("token", help="the token, or - to read it from standard input")
    dec.set_defaults(func=_cmd_decode)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args, out or sys.stdout, err or sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
