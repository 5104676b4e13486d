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

from fabfile.commands.routing import gateway_conf
from fabfile.services import JAFAR

CONF = ROOT / "config" / "nginx" / "nginx.conf"
CERTS = {"/run/secrets/gateway_tls_crt": "tls.crt", "/run/secrets/gateway_tls_key": "tls.key"}
GENERATED = "/etc/nginx/jafar/"
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


SERVES = ("localhost", "bank.example")
PROXIES = ("10.0.0.0/24",)


def conf_copy(directory: Path, certdir: Path, text: str | None = None,
              routes: dict[str, list[str]] | None = None) -> Path:
    """A copy using a throwaway certificate and the gateway file the suite writes (every
    route without a replica unless `routes` gives some; serving SERVES, trusting PROXIES)."""
    text = CONF.read_text() if text is None else text
    assert all(path in text for path in CERTS)
    assert GENERATED + "*.conf" in text
    generated = directory / "jafar"
    generated.mkdir(exist_ok=True)
    (generated / "gateway.conf").write_text(gateway_conf(routes or {}, SERVES, PROXIES))
    path = directory / "nginx.conf"
    for secret, name in CERTS.items():
        text = text.replace(secret, str(certdir / name))
    path.write_text(text.replace(GENERATED, f"{generated}/"))
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
    includes = re.findall(r"^\s*include\s+(\S+);", text, re.M)
    assert includes == ["/etc/nginx/jafar/*.conf"], "only the suite's generated settings"


def test_tls_and_hardening_directives():
    text = directives(CONF.read_text())
    assert re.search(r"^\s*ssl_protocols\s+TLSv1\.2 TLSv1\.3;", text, re.M)
    ciphers = re.search(r"^\s*ssl_ciphers\s+(\S+);", text, re.M).group(1).split(":")
    assert ciphers and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c)
                           for c in ciphers)
    assert re.search(r"^\s*server_tokens\s+off;", text, re.M)
    assert not re.search(r"^\s*resolver\s", text, re.M), "routes do not follow Docker's DNS"
    assert re.search(r"limit_req_zone .*zone=per_ip", text)
    assert re.search(r"limit_req_zone .*zone=auth_per_ip", text)
    assert re.search(r"^\s*client_max_body_size\s", text, re.M)


def test_one_location_per_service():
    text = directives(CONF.read_text())
    for prefix, service in ROUTES.items():
        block = re.search(rf"location {re.escape(prefix)} \{{(.*?)\}}", text, re.S)
        assert block, f"no location {prefix}"
        body = block.group(1)
        upstream = next(s.upstream for s in JAFAR if s.name == service)
        assert f"proxy_pass http://{upstream};" in body, f"{prefix} -> {service}"
    assert set(ROUTES.values()) == set(JAFAR_SERVICES)
    assert {s.route: s.name for s in JAFAR} == ROUTES  # the suite's catalogue agrees
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
    deadline = time.monotonic() + 60
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
    conn.request("GET", path, headers={"Host": "localhost", **(headers or {})})
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
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and f'"{request_id}"' in line:
                return json.loads(line)
        time.sleep(0.1)
    pytest.fail(f"no JSON access log line for {request_id}: {log.read_text()}")


def test_missing_service_is_503_and_access_log_has_no_token(gateway: tuple[int, int, Path]):
    """nginx starts without the services: a route whose upstream list has no replica answers
    503 JSON. The access log line has the path, not the query string; no log line has the
    Authorization header or the cookie."""
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


def test_a_listed_replica_gets_the_request_unchanged(tmp_path: Path, certdir: Path):
    """The upstream file routes a service to its replicas: a local server stands in for one
    replica of api-service and receives the URI unchanged."""
    import http.server
    import threading

    seen: list[str] = []

    class Replica(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 3000), Replica)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    text = CONF.read_text().replace("listen 443 ssl default_server;",
                                    f"listen 127.0.0.1:{port} ssl default_server;")
    text = text.replace("listen 80 default_server;", f"listen 127.0.0.1:{free_port()};")
    text = text.replace(" /tmp/", f" {tmp_path}/")
    conf = conf_copy(tmp_path, certdir, text, routes={"api-service": ["127.0.0.1"]})
    proc = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(conf),
                             "-g", "daemon off; error_log stderr;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                status = https(port, "/api/accounts/7?x=1")[0]
            except OSError:
                time.sleep(0.1)
        assert status == 200 and seen == ["/api/accounts/7?x=1"]
        assert https(port, "/wallet/x")[0] == 503  # no replica listed for wallet
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        server.shutdown()


def test_forwarded_for_is_trusted_only_from_the_configured_proxies():
    text = directives(CONF.read_text())
    assert not re.findall(r"^\s*set_real_ip_from\s+(\S+);", text, re.M), "only from config"
    generated = gateway_conf({}, SERVES, PROXIES)
    assert re.findall(r"^set_real_ip_from\s+(\S+);", generated, re.M) == list(PROXIES)
    assert "set_real_ip_from" not in gateway_conf({}, SERVES, ())


def test_requests_for_an_unknown_host_are_closed(gateway: tuple[int, int, Path]):
    """No answer (nginx's 444) for a Host the gateway does not serve, on HTTP and HTTPS: no
    redirect or proxying is built from a client's Host. /health still answers (the load
    balancer checks by address)."""
    http_port, port, _ = gateway
    for path in ("/api/accounts", "/nothing-here"):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            https(port, path, headers={"Host": "evil.example"})
    assert https(port, "/health", headers={"Host": "10.9.8.7"})[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    conn.request("GET", "/api/x", headers={"Host": "evil.example"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()


@pytest.mark.parametrize("query", ["acc%65ss_token=x", "a=1&pass%77ord=x", "%74oken"])
def test_percent_encoded_parameter_names_are_refused(gateway: tuple[int, int, Path],
                                                     query: str):
    _, port, _ = gateway
    status, _, body = https(port, f"/api/x?{query}")
    assert status == 400 and "percent-encoded" in json.loads(body)["error"]
    assert https(port, "/api/x?name=a%20b")[0] != 400  # encoded values are fine


def test_forwarded_for_from_an_untrusted_peer_is_ignored(gateway: tuple[int, int, Path]):
    _, port, log = gateway
    https(port, "/health-no", headers={"X-Forwarded-For": "203.0.113.7",
                                       "X-Request-ID": "req-static-xff"})
    assert access_entry(log, "req-static-xff")["remote_addr"] == "127.0.0.1"
