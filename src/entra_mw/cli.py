"""The ``entra-mw`` command.

- ``entra-mw demo``: the whole story (chat agent → weather API, every token flow) on the embedded FakeEntra.
- ``entra-mw emulator``: FakeEntra over HTTPS on loopback, with a stable directory; writes the settings to use.
- ``entra-mw token``: a token from the emulator for a test user, an app or an agent (plain, for ``curl``).
- ``entra-mw decode TOKEN``: a token's header and claims as JSON, **not verified**, signature elided.

Expected failures end as one line on standard error and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from ._version import __version__

__all__ = ["main"]


class CommandError(Exception):
    """An expected failure of a subcommand: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the usage is one `--help` away.
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


_DEMO_EXAMPLES = """\
example:
  entra-mw demo            # every flow, with each token request and the claims of each token
  entra-mw demo --quiet    # only the verdicts
"""

_EMULATOR_EXAMPLES = """\
example:
  entra-mw emulator                                  # https://127.0.0.1:44321/, settings in the cache dir
  set -a; . ~/.cache/entra-mw/emulator.env; set +a   # in the shell of the app to point at it
"""

_TOKEN_EXAMPLES = """\
examples:
  entra-mw token --user alice --scope Weather.Read         # delegated token for alice
  entra-mw token --app --role Weather.Read.All             # app-only token for the client app
  entra-mw token --agent                                    # autonomous agent
  entra-mw token --agent --user alice                       # the agent, On-Behalf-Of alice
  entra-mw token --agent --agent-user weather-agent         # the agent's own user account
  entra-mw token --user alice --decode                      # show the claims instead
  curl -H "Authorization: Bearer $(entra-mw token --user alice --scope Weather.Read)" http://127.0.0.1:8000/
"""

_DECODE_EXAMPLES = """\
examples:
  entra-mw decode eyJ0eXAiOi...                 # header, claims and dates as JSON on stdout
  entra-mw token --user alice | entra-mw decode - | jq .claims.scp
"""


def _cmd_decode(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._tokenview import describe_token

    try:
        raw = sys.stdin.read() if args.token == "-" else args.token
    except UnicodeDecodeError:
        raise CommandError("standard input is not text: a token is ASCII") from None
    raw = raw.strip()
    if raw[:7].lower() == "bearer ":
        raw = raw[7:].strip()
    try:
        view = describe_token(raw)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    err.write("NOT VERIFIED: decoded without checking the signature, issuer, audience or lifetime.\n")
    out.write(json.dumps(view, indent=2, ensure_ascii=False) + "\n")
    return 0


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CommandError(
            "the demo needs the 'demo' extra: pip install 'entra-mw[demo]' (from a checkout: pip install -e '.[demo]')"
        ) from None
    from ._demo import run_demo
    from ._term import Palette
    from .errors import EntraError

    try:
        return run_demo(out=out, verbose=not args.quiet, palette=Palette(out))
    except (EntraError, OSError, RuntimeError) as exc:
        # The demo's own servers could not start, or the embedded FakeEntra refused: say so in one line.
        raise CommandError(f"the demo stopped: {type(exc).__name__}: {exc}") from None


def _cmd_emulator(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._emulator import EmulatorError, run_emulator

    try:
        return run_emulator(port=args.port, env_file=args.env_file, seed=args.seed, out=out)
    except EmulatorError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:  # TLS material or sockets failing in a way the emulator does not name itself
        raise CommandError(f"{type(exc).__name__}: {exc.strerror or exc}") from None


def _cmd_token(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import contextlib

    from ._emulator import EmulatorError
    from ._tokencmd import Mode, Target, TokenRequestSpec, get_token, in_process_target, target_from_settings
    from ._tokenview import describe_token

    if args.app and (args.user or args.agent_user):
        raise CommandError("--app is a token for the client app itself; it takes no --user or --agent-user")
    if args.agent_user and not args.agent:
        raise CommandError("--agent-user needs --agent")
    if args.agent and args.user and args.agent_user:
        raise CommandError("--agent takes either --user (On-Behalf-Of) or --agent-user, not both")
    app_only = args.app or (args.agent and not args.user and not args.agent_user)
    if args.roles and not app_only:
        raise CommandError("--role applies to app-only tokens (--app, or --agent alone); users get --scope")
    if args.scopes and app_only:
        raise CommandError("--scope applies to tokens for a user; an app-only token carries its granted --role(s)")
    mode: Mode
    if args.agent:
        mode = "agent"
    elif args.app:
        mode = "app"
    elif args.user:
        mode = "user"
    else:
        raise CommandError("say whose token: --user NAME, --app or --agent")
    spec = TokenRequestSpec(
        mode=mode,
        user=args.user,
        agent_user=args.agent_user,
        scopes=tuple(args.scopes),
        roles=tuple(args.roles),
        api=args.api,
    )
    with contextlib.ExitStack() as stack:
        try:
            target: Target
            if args.in_process:
                target = stack.enter_context(in_process_target(args.seed))
                if not args.decode:
                    err.write(
                        "entra-mw token: from an in-process FakeEntra: no running API trusts its signing key; "
                        "use the emulator for tokens to send\n"
                    )
            else:
                target = target_from_settings(Path(args.env_file) if args.env_file else None)
            token = get_token(target, spec)
        except EmulatorError as exc:
            raise CommandError(str(exc)) from None
    if args.decode:
        out.write(json.dumps(describe_token(token), indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(token + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="entra-mw", description="Microsoft Entra ID for Python apps, in-process.")
    parser.add_argument("--version", action="version", version=f"entra-mw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    raw = argparse.RawDescriptionHelpFormatter

    demo = sub.add_parser(
        "demo",
        help="run every token flow against the embedded FakeEntra and print the trace",
        description="Chat client → agent → weather API, every token flow on a local FakeEntra (needs entra-mw[demo]).",
        epilog=_DEMO_EXAMPLES,
        formatter_class=raw,
    )
    demo.add_argument("--quiet", action="store_true", help="print only the verdicts")
    demo.set_defaults(func=_cmd_demo)

    emu = sub.add_parser(
        "emulator",
        help="serve a local Entra ID (FakeEntra) over HTTPS on 127.0.0.1",
        description=(
            "Serve FakeEntra over HTTPS on 127.0.0.1 with a directory that stays the same across restarts, and "
            "write the settings an app needs (AzureAd__*, the CA bundle, the test users) to a private file."
        ),
        epilog=_EMULATOR_EXAMPLES,
        formatter_class=raw,
    )
    emu.add_argument("--port", type=_port, default=None, help="port to listen on (default 44321; 0: a free one)")
    emu.add_argument(
        "--env-file", default=None, help="where to write the settings (default: ~/.cache/entra-mw/emulator.env)"
    )
    emu.add_argument("--seed", default=None, help="derive the tenant, ids and secrets from this (default: entra-mw)")
    emu.set_defaults(func=_cmd_emulator)

    tok = sub.add_parser(
        "token",
        help="print a token from the emulator for a test user, an app or an agent",
        description=(
            "Get a token from the running emulator (found through its settings file) the way apps get them, and "
            "print it alone on stdout, for curl. Short scope names are scopes of the protected API."
        ),
        epilog=_TOKEN_EXAMPLES,
        formatter_class=raw,
    )
    who = tok.add_mutually_exclusive_group()
    who.add_argument("--app", action="store_true", help="an app-only token for the emulator's client app")
    who.add_argument("--agent", action="store_true", help="a token for the emulator's agent identity")
    tok.add_argument("--user", metavar="NAME", help="a delegated token for this test user (alice, bob)")
    tok.add_argument(
        "--agent-user", metavar="NAME", nargs="?", const="weather-agent", help="with --agent: as its user account"
    )
    tok.add_argument("--scope", dest="scopes", action="append", default=[], help="a delegated scope (repeatable)")
    tok.add_argument("--role", dest="roles", action="append", default=[], help="an app role the token must carry")
    tok.add_argument("--api", help="the API's app id or App ID URI (default: the emulator's protected API)")
    tok.add_argument("--decode", action="store_true", help="print the token's claims (JSON) instead of the token")
    tok.add_argument("--env-file", default=None, help="the emulator's settings (default: ~/.cache/entra-mw/...)")
    tok.add_argument("--in-process", action="store_true", help="use a FakeEntra in this process, not the emulator")
    tok.add_argument("--seed", default="entra-mw", help=argparse.SUPPRESS)
    tok.set_defaults(func=_cmd_token)

    dec = sub.add_parser(
        "decode",
        help="show a token's header and claims (NOT verified)",
        description="Print a token's header, claims and dates as JSON on stdout; nothing is verified.",
        epilog=_DECODE_EXAMPLES,
        formatter_class=raw,
    )
    dec.add_argument("token", help="the token (or 'Bearer <token>'), or - to read it from standard input")
    dec.set_defaults(func=_cmd_decode)
    from .sidecar._cli import add_sidecar_parser  # the sidecar's options and its environment help live there

    add_sidecar_parser(sub)
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 0 and 65535, not {value}")
    return value


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``entra-mw``; returns the exit code (2 for an expected failure, reported as one line)."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    for name in ("entra_mw", "msal"):
        # Without a handler anywhere, Python prints warnings to stderr; the command's one line says it all.
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    if getattr(args, "port", None) is None and args.command == "emulator":
        from ._emulator import DEFAULT_PORT

        args.port = DEFAULT_PORT
    if getattr(args, "seed", None) is None and args.command == "emulator":
        from ._emulator import DEFAULT_SEED

        args.seed = DEFAULT_SEED
    try:
        code: int = args.func(args, stdout, stderr)
    except CommandError as exc:
        stderr.write(f"entra-mw {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
