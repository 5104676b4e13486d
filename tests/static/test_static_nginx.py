"""The gateway's nginx.conf: `nginx -t` with a throwaway certificate, then a real nginx run on
loopback ports (a copy of the file: only the certificate prefix, the listen ports and /tmp/
change) to check redirects, headers, JSON errors and the access log."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from static_helpers import JAFAR_SERVICES, ROOT, require_tool

CONF = ROOT / "config" / "nginx" / "nginx.conf"
CERT_PREFIX = "/etc/nginx/certs/"
ROUTES = {"/api/": "api-service", "/auth/": "auth-service", "/wallet/": "wallet-service",
          "/transactions/": "transaction-service", "/ledger/": "ledger-service",
          "/notifications/": "notification-service", "/risk/": "risk-service"}


@pytest.fixture(scope="module")
def certdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("openssl")
    path = tmp_path_factory.mktemp("nginx-certs")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(path / "tls.key"),
                    "-out", str(path / "tls.crt")], check=True, capture_output=True, timeout=120)
    return path


def conf_copy(directory: Path, certdir: Path, text: str | None = None) -> Path:
    text = CONF.read_text() if text is None else text
    assert CERT_PREFIX + "tls.crt" in text and CERT_PREFIX + "tls.key" in text
    path = directory / "nginx.conf"
    path.write_text(text.replace(CERT_PREFIX, f"{certdir}/"))
    return path


def nginx_test(conf: Path) -> subprocess.CompletedProcess[str]:
    require_tool("nginx")
    return subprocess.run(["nginx", "-t", "-p", str(conf.parent), "-c", str(conf),
                           "-g", "error_log stderr;"], capture_output=True, text=True,
                          timeout=60)


def test_nginx_t_accepts_the_config(tmp_path: Path, certdir: Path):
    proc = nginx_test(conf_copy(tmp_path, certdir))
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr


def test_nginx_t_can_fail(tmp_path: Path, certdir: Path):
    """The check is real: a broken copy is refused."""
    broken = CONF.read_text().replace("server_tokens off;", "server_tokens off")
    proc = nginx_test(conf_copy(tmp_path, certdir, broken))
    assert proc.returncode != 0


def directives(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_read_only_root_requirements():
    text = directives(CONF.read_text())
    assert not re.search(r"^\s*user\s", text, re.M), "no `user` directive (contract)"
    assert re.search(r"^\s*pid\s+/tmp/nginx\.pid;", text, re.M)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        match = re.search(rf"^\s*{kind}_temp_path\s+(\S+);", text, re.M)
        assert match and match.group(1).startswith("/tmp/"), f"{kind}_temp_path not under /tmp"
    assert not re.search(r"^\s*include\s", text, re.M), "one self-contained file"


def test_tls_and_hardening_directives():
    text = directives(CONF.read_text())
    assert re.search(r"^\s*ssl_protocols\s+TLSv1\.2 TLSv1\.3;", text, re.M)
    ciphers = re.search(r"^\s*ssl_ciphers\s+(\S+);", text, re.M).group(1).split(":")
    assert ciphers and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c)
                           for c in ciphers)
    assert re.search(r"^\s*server_tokens\s+off;", text, re.M)
    assert "resolver 127.0.0.11 valid=10s ipv6=off;" in text
    assert re.search(r"limit_req_zone .*zone=per_ip", text)
    assert re.search(r"limit_req_zone .*zone=auth_per_ip", text)
    assert re.search(r"^\s*client_max_body_size\s", text, re.M)


def test_one_location_per_service():
    text = directives(CONF.read_text())
    for prefix, service in ROUTES.items():
        block = re.search(rf"location {re.escape(prefix)} \{{(.*?)\}}", text, re.S)
        assert block, f"no location {prefix}"
        body = block.group(1)
        assert f"set $upstream http://{service}:3000;" in body, f"{prefix} -> {service}"
        assert "proxy_pass $upstream;" in body
    assert set(ROUTES.values()) == set(JAFAR_SERVICES)
    auth = re.search(r"location /auth/ \{(.*?)\}", text, re.S).group(1)
    assert "zone=auth_per_ip" in auth


def test_access_log_carries_no_token():
    text = directives(CONF.read_text())
    fmt = re.search(r"log_format\s+(\w+)\s+escape=json(.*?);", text, re.S)
    assert fmt, "JSON access log format"
    body = fmt.group(2)
    for variable in ("$request ", "$request\"", "$request_uri", "$args", "$query_string",
                     "$http_authorization", "$http_cookie", "$cookie_", "$arg_"):
        assert variable not in body, f"access log records {variable.strip()}"
    assert "$uri" in body
    assert re.search(rf"access_log\s+\S+\s+{fmt.group(1)};", text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, certdir: Path):
    """The real nginx running the config on two loopback ports; yields (http, https, log)."""
    require_tool("nginx")
    work = tmp_path_factory.mktemp("nginx-run")
    http_port, https_port = free_port(), free_port()
    text = CONF.read_text()
    text = text.replace("listen 80 default_server;",
                        f"listen 127.0.0.1:{http_port} default_server;")
    text = text.replace("listen 443 ssl default_server;",
                        f"listen 127.0.0.1:{https_port} ssl default_server;")
    text = text.replace(" /tmp/", f" {work}/")
    assert str(http_port) in text and str(https_port) in text
    conf = conf_copy(work, certdir, text)
    log = (work / "out.log").open("w")
    proc = subprocess.Popen(["nginx", "-p", str(work), "-c", str(conf),
                             "-g", "daemon off; error_log stderr;"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    if proc.poll() is not None:
        log.close()
        pytest.fail(f"nginx did not start: {(work / 'out.log').read_text()}")
    yield http_port, https_port, work / "out.log"
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def https(port: int, path: str, headers: dict[str, str] | None = None,
          version: ssl.TLSVersion | None = None) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if version is not None:
        context.minimum_version = context.maximum_version = version
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, body
    conn.close()
    return result


def test_health_answers_200_with_security_headers(gateway: tuple[int, int, Path]):
    _, port, _ = gateway
    status, headers, body = https(port, "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert headers["strict-transport-security"].startswith("max-age=")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    assert headers["server"] == "nginx", "server_tokens off hides the version"
    assert headers["x-request-id"]


def test_http_redirects_to_https(gateway: tuple[int, int, Path]):
    http_port, _, _ = gateway
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    conn.request("GET", "/api/accounts?x=1", headers={"Host": "bank.example"})
    response = conn.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == "https://bank.example/api/accounts?x=1"
    conn.close()


def test_tls_1_2_and_1_3_only(gateway: tuple[int, int, Path]):
    _, port, _ = gateway
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert https(port, "/health", version=version)[0] == 200
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        return  # this OpenSSL cannot even offer TLS 1.1: nothing older can connect
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            context.wrap_socket(raw, server_hostname="localhost").close()


def test_unknown_path_is_json_404(gateway: tuple[int, int, Path]):
    _, port, _ = gateway
    status, headers, body = https(port, "/nothing-here")
    assert status == 404 and json.loads(body) == {"error": "not found"}
    assert headers["x-frame-options"] == "DENY"


def access_entry(log: Path, request_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and f'"{request_id}"' in line:
                return json.loads(line)
        time.sleep(0.1)
    pytest.fail(f"no JSON access log line for {request_id}: {log.read_text()}")


def test_missing_service_is_503_and_access_log_has_no_token(gateway: tuple[int, int, Path]):
    """nginx starts without the services (names resolved per request): a route whose service
    cannot be resolved answers 503 JSON. The access log line has the path, not the query
    string; no log line has the Authorization header or the cookie."""
    _, port, log = gateway
    status, headers, body = https(
        port, "/api/accounts?page=QUERYMARK123",
        headers={"Authorization": "Bearer HEADERSECRET456", "Cookie": "sid=COOKIESECRET789",
                 "X-Request-ID": "req-static-0001"})
    assert status == 503 and json.loads(body) == {"error": "service unavailable"}
    assert headers["x-request-id"] == "req-static-0001"
    entry = access_entry(log, "req-static-0001")
    assert entry["uri"] == "/api/accounts" and entry["status"] == 503
    assert "QUERYMARK123" not in json.dumps(entry)
    text = log.read_text()
    assert "HEADERSECRET456" not in text and "COOKIESECRET789" not in text


@pytest.mark.parametrize("param", ["access_token", "token", "password", "API_KEY"])
def test_credentials_in_the_url_are_refused_and_never_logged(gateway: tuple[int, int, Path],
                                                            param: str):
    _, port, log = gateway
    status, _, body = https(port, f"/auth/login?x=1&{param}=URLSECRET{param}",
                            headers={"X-Request-ID": f"req-static-{param}"})
    assert status == 400 and "credentials" in json.loads(body)["error"]
    assert access_entry(log, f"req-static-{param}")["uri"] == "/auth/login"
    assert f"URLSECRET{param}" not in log.read_text()


def test_forwarded_for_is_trusted_only_from_the_vpc():
    text = directives(CONF.read_text())
    trusted = re.findall(r"^\s*set_real_ip_from\s+(\S+);", text, re.M)
    assert trusted == ["10.0.0.0/8"], "Docker bridge ranges must not be trusted"


def test_forwarded_for_from_an_untrusted_peer_is_ignored(gateway: tuple[int, int, Path]):
    _, port, log = gateway
    https(port, "/health-no", headers={"X-Forwarded-For": "203.0.113.7",
                                       "X-Request-ID": "req-static-xff"})
    assert access_entry(log, "req-static-xff")["remote_addr"] == "127.0.0.1"
