"""Where ``kennel serve``'s token comes from: flags, then the environment, then the one kennel makes and keeps."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kennel.errors import PathError, UsageError
from kennel.serve.tokens import TOKEN_ENV, is_loopback, resolve_token, stored_token_path

NO_ENV: dict[str, str] = {}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_flag_beats_the_file_and_the_file_beats_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text("from-file\n")
    env = {TOKEN_ENV: "from-env"}
    assert resolve_token("0.0.0.0", token="from-flag", environ=env).value == "from-flag"
    from_file = resolve_token("0.0.0.0", token_file=file, environ=env)
    assert (from_file.value, from_file.source, from_file.path) == ("from-file", "--token-file", file)
    from_env = resolve_token("0.0.0.0", environ=env)
    assert (from_env.value, from_env.source, from_env.generated) == ("from-env", TOKEN_ENV, False)
    assert not stored_token_path().exists()


def test_a_given_token_is_used_on_loopback_too() -> None:
    assert resolve_token("127.0.0.1", token=" secret ", environ=NO_ENV).value == "secret"
    assert resolve_token("localhost", environ={TOKEN_ENV: "secret"}).value == "secret"


def test_loopback_needs_no_token_and_writes_none() -> None:
    resolved = resolve_token("127.0.0.1", environ=NO_ENV)
    assert (resolved.value, resolved.source, resolved.generated) == (None, "none", False)
    assert not stored_token_path().exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"token": "a", "token_file": "f"}, "not both"),
        ({"token": "a", "no_auth": True}, "contradict"),
        ({"token_file": "f", "no_auth": True}, "contradict"),
        ({"token": "   "}, "--token: the token is empty"),
        ({"token": "two words"}, "spaces"),
        ({"token": "naïve"}, "printable ASCII"),
    ],
)
def test_unusable_flags_are_one_line_usage_errors(arguments: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as raised:
        resolve_token("0.0.0.0", environ=NO_ENV, **arguments)
    assert "\n" not in str(raised.value)
    for secret in ("two words", "naïve"):
        assert secret not in str(raised.value)


def test_an_empty_environment_variable_is_refused() -> None:
    with pytest.raises(UsageError, match=r"\$KENNEL_TOKEN: the token is empty"):
        resolve_token("0.0.0.0", environ={TOKEN_ENV: ""})


def test_an_empty_or_missing_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(UsageError, match="empty"):
        resolve_token("0.0.0.0", token_file=empty, environ=NO_ENV)
    with pytest.raises(PathError, match="no such file"):
        resolve_token("0.0.0.0", token_file=tmp_path / "absent", environ=NO_ENV)


def test_no_auth_turns_the_token_off_even_with_the_variable_set() -> None:
    resolved = resolve_token("0.0.0.0", no_auth=True, environ={TOKEN_ENV: "ambient"})
    assert (resolved.value, resolved.source) == (None, "none")
    assert not stored_token_path().exists()


def test_a_reachable_server_gets_a_token_made_once_kept_0600_and_reused(kennel_home: Path) -> None:
    made = resolve_token("0.0.0.0", environ=NO_ENV)
    assert made.generated and made.source == "generated"
    assert made.path == kennel_home / "serve-token" == stored_token_path()
    assert len(made.value) >= 40
    assert made.path.read_text().strip() == made.value
    if os.name == "posix":
        assert stat.S_IMODE(made.path.stat().st_mode) == 0o600
    assert [p.name for p in kennel_home.iterdir() if p.name.startswith(".serve-token")] == []  # no temp file left
    again = resolve_token("192.168.1.20", environ=NO_ENV)
    assert (again.value, again.source, again.generated) == (made.value, "stored", False)
    assert made.value not in repr(made)


def test_an_empty_stored_token_is_replaced(kennel_home: Path) -> None:
    path = stored_token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    path.chmod(0o600)
    made = resolve_token("0.0.0.0", environ=NO_ENV)
    assert made.generated and path.read_text().strip() == made.value


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_stored_token_others_can_read_is_refused() -> None:
    made = resolve_token("0.0.0.0", environ=NO_ENV)
    made.path.chmod(0o644)
    with pytest.raises(UsageError, match="chmod 600") as raised:
        resolve_token("0.0.0.0", environ=NO_ENV)
    assert made.value not in str(raised.value)
