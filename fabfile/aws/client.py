"""boto3 clients for an environment, and what an AWS error means for the operator.

Credentials come from boto3's own chain (AWS_PROFILE, ~/.aws, SSO, the instance role), never
from config/environments.yml. Every call has short timeouts and standard retries, so a task
against an unreachable endpoint fails in seconds. Errors become one line:
- exit 2 (BadInput) for what the operator configured: no credentials, an unknown profile, a
  secret or parameter path that does not exist;
- exit 1 (StepFailed) for what AWS answered: access denied, expired credentials, throttling,
  an endpoint that does not answer.
No message ever carries a value that was sent (AWS's messages name resources, never values).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from fabfile.config import AwsSettings, Environment
from fabfile.errors import BadInput, StepFailed

NOT_FOUND = ("ResourceNotFoundException", "ParameterNotFound", "NoSuchEntity",
             "InvalidGroup.NotFound", "TargetGroupNotFound", "NoSuchBucket")
_sessions: dict[tuple[str | None, str], Any] = {}
EXPIRED = ("ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired")


def settings(env: Environment) -> AwsSettings:
    if env.aws is None:
        raise BadInput(f"environment {env.name} has no aws: block; add aws: {{region: "
                       "eu-west-1} to config/environments.yml")
    return env.aws


def client(env: Environment, service: str) -> Any:
    """A boto3 client for `service` in the environment's region (and endpoint, in tests)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    aws = settings(env)
    key = (aws.profile, aws.region)
    if key not in _sessions:  # a session costs a few tenths of a second: one per run
        try:
            _sessions[key] = boto3.session.Session(profile_name=aws.profile,
                                                   region_name=aws.region)
        except ProfileNotFound:
            raise BadInput(f"AWS profile {aws.profile} is not in ~/.aws/config; fix "
                           f"aws.profile of {env.name} or create the profile") from None
    config = Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard",
                                                                 "max_attempts": 3})
    return _sessions[key].client(service, endpoint_url=aws.endpoint_url, config=config)


@contextlib.contextmanager
def answered(env: Environment, what: str) -> Iterator[None]:
    """Turn boto3's exceptions into one line and the right exit code; `what` names the call
    for the operator ("reading Secrets Manager secret jafar/prod")."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise BadInput(f"{what}: no AWS credentials found (boto3 looks at AWS_PROFILE, "
                       "~/.aws/credentials, SSO and the instance role); log in, e.g. aws sso "
                       "login, and run it again") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "error"))
        message = " ".join(str(error.get("Message", "")).split())[:200]
        if code in NOT_FOUND:
            raise BadInput(f"{what}: AWS says it does not exist ({code}); check the name in "
                           "config/environments.yml") from None
        if code in EXPIRED:
            raise StepFailed(f"{what}: the AWS credentials have expired ({code}); log in "
                             "again, e.g. aws sso login") from None
        raise StepFailed(f"{what}: AWS answered {code}: {message}") from None
    except EndpointConnectionError:
        raise StepFailed(f"{what}: the AWS endpoint of {env.name} does not answer "
                         f"({settings(env).endpoint_url or settings(env).region})") from None
    except BotoCoreError as exc:
        raise StepFailed(f"{what}: {type(exc).__name__}") from None


def caller(env: Environment) -> str:
    """Who AWS takes us for (the identity CloudTrail records a write under)."""
    with answered(env, "asking AWS who we are (sts get-caller-identity)"):
        return str(client(env, "sts").get_caller_identity()["Arn"])
