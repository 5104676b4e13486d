"""moto in server mode: the AWS stand-in the tests talk to with real boto3 calls.

A real HTTP endpoint on loopback (moto's ThreadedMotoServer); the suite reaches it through
`aws.endpoint_url`, the one setting that differs from production. moto implements the AWS
APIs in memory; it is not AWS: IAM policies are not enforced, and it answers only what it
implements (an API it lacks answers an error, never a false success).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# moto accepts any credentials; boto3's chain finds these in the environment, as it would
# find an operator's (never in config/environments.yml)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}
REGION = "eu-west-1"


@contextmanager
def running() -> Iterator[str]:
    """Start moto on 127.0.0.1 (a free port); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset(endpoint: str) -> None:
    """Empty every moto backend (between tests that share one server)."""
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=60).raise_for_status()


def client(endpoint: str, service: str):  # noqa: ANN201 - a boto3 client
    """A test's own boto3 client on the stand-in (to arrange and to inspect)."""
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def environment() -> dict[str, str]:
    """The process environment boto3 reads its credentials from, for `inv` subprocesses."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **CREDENTIALS}
