"""Infrastructure images by digest, on the shared sandbox (its pins are written by sandbox.up
from what its registry serves): every infrastructure container runs `...@sha256:`; `inv
images.pin --check` finds them current; after a tag is moved in the registry it names the
move and exits 1, writing nothing, and a deploy still runs the pinned bits."""

from __future__ import annotations

import subprocess

import yaml

from tests.conftest import ROOT
from tests.e2e.sandbox_helpers import inner
from tests.e2e.test_03_day2 import inv

INFRA = ("gateway", "prometheus", "alertmanager", "mongo-primary", "mongo-secondary",
         "mongo-arbiter", "redis", "postgres-ledger")


def images() -> dict[str, str]:
    """Service -> the image reference its container was created with (`docker ps` would show
    a tag the image also has, hiding the digest)."""
    ids = inner("ps", "--quiet").split()
    out = inner("inspect", "--format",
                '{{index .Config.Labels "com.docker.compose.service"}} {{.Config.Image}}', *ids)
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=300)


def test_the_infrastructure_runs_by_digest_and_the_pins_are_current(deployed):
    pins = yaml.safe_load((ROOT / ".sandbox" / "pins.yml").read_text())
    running = images()
    assert running["gateway"] == pins["NGINX_IMAGE"]
    assert running["redis"] == pins["REDIS_IMAGE"]
    for service in INFRA:
        assert "@sha256:" in running[service], (service, running[service])
    r = inv("images.pin", "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to do: 6 image pins in" in r.stdout


def test_a_moved_tag_is_reported_and_changes_nothing(deployed):
    pins_file = ROOT / ".sandbox" / "pins.yml"
    before = pins_file.read_text()
    nginx = yaml.safe_load(before)["NGINX_IMAGE"].split("@")[0]   # registry:5000/sandbox/nginx:T
    pushed = "127.0.0.1:5000/" + nginx.split("/", 1)[1]
    original = "jafar-sandbox/nginx:" + nginx.rsplit(":", 1)[1]
    docker("tag", "jafar-sandbox/redis:" + images()["redis"].split("@")[0].rsplit(":", 1)[1],
           pushed)
    docker("push", "--quiet", pushed)
    try:
        r = inv("images.pin", "--check")
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"NGINX_IMAGE: the tag {nginx} moved: sha256:" in r.stdout
        assert "1 pin(s) differ from what the registry serves; nothing written" in r.stdout
        assert pins_file.read_text() == before
        again = inv("deploy", "--only", "core.up")
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout
        assert images()["gateway"] == yaml.safe_load(before)["NGINX_IMAGE"]
    finally:
        docker("tag", original, pushed)
        docker("push", "--quiet", pushed)
    assert inv("images.pin", "--check").returncode == 0
