"""ECR: a registry host name `<account>.dkr.ecr.<region>.amazonaws.com` means each host logs
in before it pulls (fabfile/ops/registry.py), with a token from ecr.get_authorization_token
(valid 12 hours)."""

from __future__ import annotations

import base64

from fabfile.aws.client import answered, client
from fabfile.config import ECR_HOST, Environment
from fabfile.errors import StepFailed

_tokens: dict[str, str] = {}       # registry host -> password, for this run


def registry_host(env: Environment) -> str | None:
    """The ECR host of the environment's registry, or None for any other registry."""
    host = env.registry.split("/", 1)[0]
    return host if ECR_HOST.fullmatch(host) else None


def password(env: Environment, host: str) -> str:
    """The token's password (the token is base64 of `AWS:<password>`)."""
    if host not in _tokens:
        with answered(env, f"asking ECR for a login token for {host}"):
            data = client(env, "ecr").get_authorization_token()["authorizationData"]
        if not data:
            raise StepFailed(f"ECR gave no login token for {host}")
        user, _, secret = base64.b64decode(data[0]["authorizationToken"]).decode().partition(":")
        if user != "AWS" or not secret:
            raise StepFailed(f"ECR's login token for {host} is not for the user AWS")
        _tokens[host] = secret
    return _tokens[host]
