"""The data plane's private CA (inv tls.data), and how a rollout finds what still runs with old
files: local files and pure parsers, no host."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import replace

import pytest
from cryptography import x509

from fabfile.commands import compose as compose_cmd
from fabfile.commands import tls as tls_cmd
from fabfile.errors import BadInput
from fabfile.ops import datatls
from fabfile.ops.tlsrollout import stale_services
from tests.conftest import shipped


@pytest.fixture
def prod(tmp_path):
    return replace(shipped("prod"), tls_dir=tmp_path / "tls")


def names(path):
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (set(san.get_values_for_type(x509.DNSName)),
            {str(i) for i in san.get_values_for_type(x509.IPAddress)})


def test_first_run_makes_a_ca_and_a_certificate_for_what_the_services_dial(prod):
    made = datatls.ensure(prod)
    assert made == ["new data CA", "new data host certificate"]
    f = datatls.files(prod)
    dns, ips = names(f.cert)
    assert {"mongo-primary", "mongo-secondary", "mongo-arbiter", "redis", "postgres-ledger",
            "localhost"} <= dns
    assert ips == {"127.0.0.1", prod.data_host.private_address}
    assert ipaddress.ip_address(prod.data_host.private_address)
    for private in (f.ca_key, f.key):
        assert private.stat().st_mode & 0o777 == 0o600
    assert (prod.tls_dir.stat().st_mode & 0o077) == 0, "the folder of the CA key is private"
    # a TLS client with the bundle accepts the certificate for the data host's address
    context = ssl.create_default_context(cafile=str(f.bundle))
    assert context.get_ca_certs()[0]["subject"][0][0][1].startswith("jafar prod data CA")
    assert datatls.problem(prod) is None


def test_second_run_changes_nothing(prod):
    datatls.ensure(prod)
    before = {p: p.read_bytes() for p in prod.tls_dir.iterdir()}
    assert datatls.ensure(prod) == []
    assert {p: p.read_bytes() for p in prod.tls_dir.iterdir()} == before


def test_rotation_replaces_both_and_keeps_trusting_the_previous_ca(prod):
    datatls.ensure(prod)
    f = datatls.files(prod)
    old_ca, old_cert = f.ca_cert.read_bytes(), f.cert.read_bytes()
    made = datatls.ensure(prod, rotate=True)
    assert made[0].startswith("new data CA (the previous one stays trusted")
    assert f.ca_cert.read_bytes() != old_ca and f.cert.read_bytes() != old_cert
    bundle = f.bundle.read_bytes()
    assert f.ca_cert.read_bytes() in bundle and old_ca in bundle
    datatls.ensure(prod, rotate=True)  # the next rotation drops the oldest
    assert old_ca not in f.bundle.read_bytes()


def test_a_certificate_that_no_longer_names_the_data_host_is_renewed(prod):
    datatls.ensure(prod)
    data = prod.data_host
    moved = replace(prod, hosts=tuple(replace(h, private_address="10.0.9.9") if h is data
                                      else h for h in prod.hosts))
    assert "does not name what the services dial" in datatls.problem(moved)
    assert datatls.ensure(moved) == ["new data host certificate"]
    assert "10.0.9.9" in names(datatls.files(moved).cert)[1]
    assert datatls.problem(moved) is None


def test_a_certificate_near_its_end_is_renewed(prod, monkeypatch):
    datatls.ensure(prod)
    later = datatls.now() + datetime.timedelta(days=datatls.SERVER_DAYS - 10)
    monkeypatch.setattr(datatls, "now", lambda: later)
    assert datatls.ensure(prod) == ["new data host certificate"]


def test_problems_are_named_without_contents(prod):
    assert "missing" in datatls.problem(prod)
    datatls.ensure(prod)
    f = datatls.files(prod)
    f.cert.write_text("not a certificate\n")
    assert datatls.problem(prod).endswith("is not a PEM certificate")
    with pytest.raises(BadInput, match="has no tls_dir"):
        datatls.files(replace(prod, tls_dir=None))


def test_the_mounted_files_builder_reads_each_container_from_inside():
    assert tls_cmd.mounted("jafar-data", {"redis": ("data_ca_crt", "data_tls_crt")}) == (
        "for c in $(docker ps --quiet --filter label=com.docker.compose.project=jafar-data "
        "--filter label=com.docker.compose.service=redis); do d=$(docker exec \"$c\" sha256sum "
        "/run/secrets/data_ca_crt) && echo \"$c redis data_ca_crt ${d%% *}\"; done; "
        "for c in $(docker ps --quiet --filter label=com.docker.compose.project=jafar-data "
        "--filter label=com.docker.compose.service=redis); do d=$(docker exec \"$c\" sha256sum "
        "/run/secrets/data_tls_crt) && echo \"$c redis data_tls_crt ${d%% *}\"; done; true")
    assert tls_cmd.mounted("jafar-core", {}) == "true"


def test_stale_services_are_those_with_a_container_seeing_another_file():
    wanted = {"data_ca_crt": "a" * 64, "data_tls_crt": "b" * 64}
    output = "\n".join([
        f"c1 redis data_ca_crt {'a' * 64}",
        f"c1 redis data_tls_crt {'0' * 64}",
        f"c2 mongo-primary data_ca_crt {'a' * 64}",
        "noise line",
    ])
    assert stale_services(output, wanted) == (["redis"], True)
    assert stale_services("", wanted) == ([], False)


def test_recreate_replaces_only_the_named_services():
    env = shipped("sandbox")
    assert compose_cmd.recreate(env, "data", ["redis", "mongo-primary"], 30).endswith(
        "up --detach --force-recreate --no-deps --wait --wait-timeout 30 redis mongo-primary")


def verifies(bundle, cert, name):
    """openssl verify, as a TLS client checks a server: chain, purpose and host name."""
    import subprocess

    proc = subprocess.run(["openssl", "verify", "-CAfile", str(bundle), "-purpose", "sslserver",
                           "-verify_hostname", name, str(cert)], capture_output=True, text=True)
    return proc.returncode == 0


def test_during_a_rotation_clients_accept_the_old_and_the_new_certificate(prod, tmp_path):
    datatls.ensure(prod)
    f = datatls.files(prod)
    old_cert = tmp_path / "old.crt"
    old_cert.write_bytes(f.cert.read_bytes())
    old_bundle = tmp_path / "old-bundle.crt"
    old_bundle.write_bytes(f.bundle.read_bytes())
    datatls.ensure(prod, rotate=True)  # the same day: the two CAs must not be confused
    assert verifies(f.bundle, old_cert, "redis"), "new clients still reach old servers"
    assert verifies(f.bundle, f.cert, "mongo-primary")
    assert not verifies(old_bundle, f.cert, "redis"), "old clients must be replaced first"
    assert not verifies(f.bundle, f.cert, "example.com")
