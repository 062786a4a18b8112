"""The endpoint's bearer token: given (``--token``, ``--token-file``, ``KENNEL_TOKEN``), or made once and kept.

A server other machines can reach never runs without a token unless ``--no-auth`` says so: with none given,
kennel makes one, keeps it in ``$KENNEL_HOME/serve-token`` (mode 0600) and uses that one from then on. A server on
loopback needs none. The token is printed once, by the command line, when it is made; it is never logged.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kennel.atomic import atomic_path
from kennel.errors import PathError, UsageError
from kennel.home import kennel_home

TOKEN_ENV = "KENNEL_TOKEN"
STORED_NAME = "serve-token"


@dataclass(frozen=True)
class ServeToken:
    """The token to require (None: none), where it came from, and whether it was made just now."""

    value: str | None = field(repr=False)  # kept out of the repr, should the object end up in a log record
    source: str  # "--token", "--token-file", "KENNEL_TOKEN", "stored", "generated", or "none"
    path: Path | None = None  # the file it was read from or written to
    generated: bool = False


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only: ``localhost``, 127.0.0.0/8, ``::1``
    (with or without brackets). Any other name, and ``0.0.0.0`` or ``::``, may be reached from elsewhere."""
    name = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def stored_token_path() -> Path:
    return kennel_home() / STORED_NAME


def checked(token: str, source: str) -> str:
    """``token`` without surrounding whitespace, or a UsageError naming ``source`` (never the token)."""
    token = token.strip()
    if not token:
        raise UsageError(f"{source}: the token is empty")
    # It travels in a header as ``Bearer TOKEN``: printable ASCII without spaces, as RFC 6750's token68 is.
    if not all("!" <= char <= "~" for char in token):
        raise UsageError(f"{source}: the token has spaces or characters outside printable ASCII")
    return token


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PathError.of(exc, "cannot read the token", path) from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file, so no token") from None


def resolve_token(
    host: str,
    *,
    token: str | None = None,
    token_file: Path | str | None = None,
    no_auth: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ServeToken:
    """The token a server bound to ``host`` requires.

    In order: ``--token``; ``--token-file``; ``$KENNEL_TOKEN``; then, for a host other machines may reach, the
    stored token, or a new one. Flags come before the environment, so a variable left in a shell does not
    override what the command says. ``--no-auth`` turns the token off even then, and cannot be combined with a
    token flag; a loopback server without a token given runs without one.
    """
    environ = os.environ if environ is None else environ
    if token is not None and token_file is not None:
        raise UsageError("give --token or --token-file, not both")
    if no_auth and (token is not None or token_file is not None):
        raise UsageError("--no-auth and a token (--token or --token-file) contradict each other; give one")
    if no_auth:
        return ServeToken(None, "none")
    if token is not None:
        return ServeToken(checked(token, "--token"), "--token")
    if token_file is not None:
        path = Path(token_file).expanduser()
        return ServeToken(checked(read_text(path), f"--token-file {path}"), "--token-file", path)
    if environ.get(TOKEN_ENV) is not None:
        return ServeToken(checked(environ[TOKEN_ENV], f"${TOKEN_ENV}"), TOKEN_ENV)
    if is_loopback(host):
        return ServeToken(None, "none")
    return stored_or_new_token(stored_token_path())


def stored_or_new_token(path: Path) -> ServeToken:
    """The token kept at ``path``, or a new one written there with mode 0600."""
    if path.is_file():
        # A token that others on this machine could read is no secret: kennel made it 0600 and will not use it
        # once that has been widened (POSIX only; Windows keeps no such bits).
        if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"{path}: readable by other users; chmod 600 it, or delete it to have a new one made")
        text = read_text(path)
        if text.strip():  # an empty file is no token: a new one replaces it
            return ServeToken(checked(text, str(path)), "stored", path)
    value = secrets.token_urlsafe(32)
    try:
        with atomic_path(path) as tmp:
            os.chmod(tmp, 0o600)  # before the token is in it; the rename keeps the mode
            tmp.write_text(value + "\n", encoding="utf-8")
    except OSError as exc:
        raise PathError.of(exc, "cannot store the endpoint's token", path) from None
    return ServeToken(value, "generated", path, generated=True)
