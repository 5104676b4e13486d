"""The env file check and the masking of its values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabfile import envfile
from fabfile.errors import BadInput
from fabfile.remote import MASK, Masker

EXAMPLE = "REDIS_HOST=\nREDIS_PASSWORD=\nMONGO_APP_USER=\n"
GOOD = "REDIS_HOST=redis\nREDIS_PASSWORD=canary-9f8e7d6c5b4a3921\nMONGO_APP_USER=jafar_app\n"


@pytest.fixture
def files(tmp_path):
    example = tmp_path / ".env.ec2.example"
    example.write_text(EXAMPLE)
    env = tmp_path / ".env.ec2"

    def write(text: str, mode: int = 0o600):
        env.write_text(text)
        env.chmod(mode)
        return env, example
    return write


def test_good_file_has_no_problems(files):
    env, example = files(GOOD)
    assert envfile.problems(env, example) == []
    assert envfile.require_valid(env, example)["REDIS_HOST"] == "redis"


def test_problems_are_reported_by_name_never_by_value(files):
    env, example = files("REDIS_PASSWORD=sh0rtcanary\nMONGO_APP_USER=\n"
                         "EXTRA_KEY=canary-value-123\n", mode=0o644)
    found = envfile.problems(env, example)
    assert found == [
        f"mode is 0644, readable by group or others: chmod 600 {env}",
        "missing keys: REDIS_HOST (copy them from .env.ec2.example)",
        "empty keys: MONGO_APP_USER (fill them from the secrets store)",
        "unknown keys: EXTRA_KEY (not in .env.ec2.example: remove them or add them to the "
        "example)",
        "too short for a credential (< 16 characters): REDIS_PASSWORD",
    ]
    with pytest.raises(BadInput) as exc:
        envfile.require_valid(env, example)
    assert "canary-value-123" not in str(exc.value) and "sh0rtcanary" not in str(exc.value)


def test_malformed_line_names_the_line_not_its_text(files):
    env, example = files(GOOD + "this is canary-secret text\n")
    with pytest.raises(BadInput, match="line 4: not a KEY=VALUE line") as exc:
        envfile.parse(env)
    assert "canary" not in str(exc.value)


def test_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(BadInput, match="cp .env.ec2.example .env.ec2 && chmod 600"):
        envfile.require_valid(tmp_path / ".env.ec2")


def test_mask_every_value_but_addresses_and_ports(files):
    env, _ = files(GOOD)
    mask = Masker(envfile.secrets(envfile.parse(env)))
    assert mask("auth redis with canary-9f8e7d6c5b4a3921 as jafar_app") == \
        f"auth redis with {MASK} as {MASK}"


def test_masker_masks_longest_first():
    assert Masker(["abcd", "abcdefgh"])("xabcdefghx abcd") == f"x{MASK}x {MASK}"


def test_example_file_lists_every_key_empty_or_placeholder():
    keys = envfile.example_keys()
    assert "REDIS_PASSWORD" in keys and "MONGO_KEYFILE" in keys
    values = envfile.parse(envfile.EXAMPLE)
    for key in keys:
        if envfile.CREDENTIAL_KEY.search(key):
            assert values[key] == "", f"{key} has a value in the example"


def test_tracked_secret_files_are_found(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".env.ec2").write_text("A=1\n")
    (tmp_path / ".env.ec2.example").write_text("A=\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "-f", ".env.ec2", ".env.ec2.example"],
                   check=True)
    assert envfile.tracked_secrets(tmp_path) == [".env.ec2"]
    with pytest.raises(BadInput, match=r"git tracks secret file\(s\) .env.ec2"):
        envfile.refuse_tracked_secrets(tmp_path)


def test_configured_secret_files_that_git_tracks_are_refused(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "staging.env").write_text("A=1\n")
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "gateway.pem-key").write_text("k")
    subprocess.run(["git", "-C", str(tmp_path), "add", "-f", "config/staging.env",
                    "tls/gateway.pem-key"], check=True)
    assert envfile.tracked_secrets(tmp_path) == []  # not a usual name...
    extra = (tmp_path / "config" / "staging.env", tmp_path / "tls" / "gateway.pem-key",
             Path("/elsewhere/x.env"))
    assert envfile.tracked_secrets(tmp_path, extra) == ["config/staging.env",
                                                        "tls/gateway.pem-key"]


@pytest.mark.parametrize("line, message", [
    ("ghp_canaryTOKEN0123456789abcdef", "line 4: not a KEY=VALUE line"),
    ("9KEY=canary-value-0123456789", "line 4: not a KEY=VALUE line (a key is letters"),
    ("BAD-KEY=canary-value-0123456789", "line 4: not a KEY=VALUE line (a key is letters"),
    ("REDIS_HOST=canary-second", "REDIS_HOST is given twice (lines 1 and 4); keep one"),
    ("AUTH=ab$REDIS_PASSWORD-canary", "AUTH: '$' outside single quotes (Compose would "
                                      "expand it); write AUTH='...'"),
    ('AUTH="ab${HOME}canary"', "AUTH: '$' outside single quotes"),
    ("AUTH=ab$$cdcanary", "AUTH: '$' outside single quotes"),
])
def test_lines_compose_would_read_differently_are_refused_by_name(files, line, message):
    env, _ = files(GOOD + line + "\n")
    with pytest.raises(BadInput) as exc:
        envfile.parse(env)
    assert message in str(exc.value)
    assert "canary" not in str(exc.value)


def test_a_dollar_in_single_quotes_is_literal(files):
    env, _ = files(GOOD + "AUTH='ab$cd$$ef'\n")
    assert envfile.parse(env)["AUTH"] == "ab$cd$$ef"


@pytest.mark.parametrize("key, value, allowed", [
    ("REDIS_PASSWORD", "canary with spaces-0123456789", "A-Z a-z 0-9 . _ ~ + / = -"),
    ("REDIS_PASSWORD", "canary;reboot-0123456789ab", "A-Z a-z 0-9"),
    ("REDIS_PASSWORD", "canary$(id)-0123456789abc'", None),
    ("MONGO_KEYFILE", "canary-not-base64-0123456789", "one line of base64 characters"),
    ("MONGO_KEYFILE", "c2hvcnQ=" * 200, "one line of base64 characters"),
])
def test_charsets_the_servers_impose(tmp_path, key, value, allowed):
    example = tmp_path / ".env.ec2.example"
    example.write_text(f"{key}=\n")
    env = tmp_path / ".env.ec2"
    quoted = f"'{value}'" if "$" in value else value
    env.write_text(f"{key}={quoted}\n")
    env.chmod(0o600)
    if allowed is None:  # a quote inside single quotes: not a line Compose can read
        with pytest.raises(BadInput):
            envfile.require_valid(env, example)
        return
    with pytest.raises(BadInput) as exc:
        envfile.require_valid(env, example)
    assert f"characters the server cannot take: {key} ({allowed}" in str(exc.value)
    assert "canary" not in str(exc.value)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "is a directory; give the path of a file"),
    (lambda p: p.write_bytes(b"A=1\nB=\xff\xfe canary\n"), "line 2 is not UTF-8 text"),
    (lambda p: p.write_bytes(b"A=" + b"x" * 300_000), "more than 262144: not an env file"),
])
def test_files_that_are_not_env_files(tmp_path, make, message):
    path = tmp_path / "env"
    make(path)
    with pytest.raises(BadInput, match=message) as exc:
        envfile.parse(path)
    assert "canary" not in str(exc.value)


def test_a_character_device_is_not_an_env_file():
    with pytest.raises(BadInput, match="/dev/zero is not a regular file"):
        envfile.parse(Path("/dev/zero"))
