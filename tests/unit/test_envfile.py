"""The env file check and the masking of its values."""

from __future__ import annotations

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
    mask = Masker(envfile.secret_values(env))
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
