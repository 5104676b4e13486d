"""ECR login before a pull: the token from moto's (the AWS stand-in's) get_authorization_token
reaches `docker login --password-stdin` on stdin only, once per host, masked from then on."""

from __future__ import annotations

import base64

import pytest

from fabfile.aws import ecr
from fabfile.config import ECR_HOST, load_environment
from fabfile.ops import registry
from fabfile.remote import Masker, Printer
from tests.conftest import env_yaml
from tests.support import moto_server
from tests.unit.test_config import ONE_HOST

ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


class Host:
    name = "h1"


class FakeResult:
    ok = True
    stdout = "Login Succeeded\n"
    stderr = ""


class Recorder:
    """Stands in for a host's SSH connection: what was run, and what went on stdin."""

    def __init__(self) -> None:
        self.host = Host()
        self.printer = Printer(Masker())
        self.sent: list[tuple[str, bytes]] = []

    def run_with_input(self, command: str, data: bytes, **_: object) -> FakeResult:
        self.sent.append((command, data))
        return FakeResult()


@pytest.fixture
def env(environments, aws, monkeypatch):
    monkeypatch.setattr(ecr, "_tokens", {})
    monkeypatch.setattr(registry, "_done", set())
    text = env_yaml(ONE_HOST, f"aws: {{region: eu-west-1, endpoint_url: '{aws}'}}\n")
    environments(text.replace("127.0.0.1:5000/jafar", f"{ECR}/jafar"))
    return load_environment("test")


def test_an_ecr_registry_is_recognised():
    assert ECR_HOST.fullmatch(ECR)
    assert not ECR_HOST.fullmatch("registry:5000")
    assert not ECR_HOST.fullmatch("123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil")


def test_the_token_goes_on_stdin_once_per_host_and_is_masked(env, aws):
    token = moto_server.client(aws, "ecr").get_authorization_token()["authorizationData"][0]
    password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)[1]
    remote = Recorder()
    registry.login(env, remote)
    registry.login(env, remote)  # the same run: once is enough
    assert remote.sent == [(f"docker login --username AWS --password-stdin {ECR}",
                            f"{password}\n".encode())]
    assert password not in remote.sent[0][0]
    assert remote.printer.mask(f"echo {password}") == "echo ********"


def test_another_registry_needs_no_login(environments, aws):
    environments(env_yaml(ONE_HOST, f"aws: {{region: eu-west-1, endpoint_url: '{aws}'}}\n"))
    remote = Recorder()
    registry.login(load_environment("test"), remote)
    assert remote.sent == []
