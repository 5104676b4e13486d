"""The gateway's upstream lists: which replicas take traffic (health before traffic, drain
before stop).

Docker's DNS lists a replica as soon as it starts, healthy or not, so the gateway does not route
by DNS. It proxies each route to an nginx `upstream` block that lists exactly the replicas the
suite has seen healthy, by address. The suite writes that file (state/gateway/gateway.conf,
mounted into the gateway at /etc/nginx/jafar/; it also holds the host names the gateway serves
and the proxies it trusts for X-Forwarded-For), checks it with `nginx -t`, reloads nginx
(graceful: old workers finish what they have in flight), and waits until every old worker has
exited. Only then is a replica that left the list stopped.
"""

from __future__ import annotations

import shlex

from fabfile.commands.compose import LABEL
from fabfile.services import JAFAR, JAFAR_PORT

# A route with no replica (scaled to 0, or none healthy yet): nginx needs a server in every
# upstream; a `down` one makes the gateway answer 503 at once ("no live upstreams").
NOWHERE = "server 127.0.0.1:9 down;"
# nginx's process titles: a worker of the old configuration keeps its title until it exits.
WORKERS = ("for p in /proc/[0-9]*; do t=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null) || continue; "
           "case $t in 'nginx: worker process'*) echo ${p#/proc/};; esac; done")


def gateway_file(deploy_path: str) -> str:
    return f"{deploy_path}/state/gateway/gateway.conf"


def gateway_conf(routes: dict[str, list[str]], server_names: tuple[str, ...],
                 trusted_proxies: tuple[str, ...]) -> str:
    """The gateway's generated settings: an nginx upstream block per service (`routes` maps a
    service name to the addresses of its routable replicas), the host names it serves
    ($jafar_known_host), and the proxies whose X-Forwarded-For it believes. Same input, same
    bytes (addresses sorted)."""
    blocks = ["# written by the jafar deploy suite (inv core.up / scale / release): routable "
              "replicas only; do not edit",
              "map $host $jafar_known_host {\n    default 0;\n" +
              "".join(f"    {name} 1;\n" for name in server_names) + "}",
              *(f"set_real_ip_from {cidr};" for cidr in trusted_proxies)]
    for s in JAFAR:
        servers = [f"server {ip}:{JAFAR_PORT} max_fails=1 fail_timeout=5s;"
                   for ip in sorted(routes.get(s.name, []), key=_ip_key)] or [NOWHERE]
        blocks.append(f"upstream {s.upstream} {{\n" +
                      "".join(f"    {line}\n" for line in servers) + "}")
    return "\n".join(blocks) + "\n"


def _ip_key(ip: str) -> tuple[int, ...]:
    return tuple(int(p) for p in ip.split(".") if p.isdigit())


def gateway_id(core_project: str) -> str:
    """The running gateway container's id (empty when it does not run)."""
    return shlex.join(["docker", "ps", "--quiet", "--filter", f"label={LABEL}={core_project}",
                       "--filter", "label=com.docker.compose.service=gateway",
                       "--filter", "status=running"])


def apply(deploy_path: str, core_project: str, drain_seconds: int) -> str:
    """Install the upstream file given on stdin. When it differs and the gateway runs: `nginx -t`
    (the previous file is put back if it fails), graceful reload, then wait until the old
    workers (and so every request they routed) are gone. Prints UNCHANGED, WRITTEN or
    RELOADED <seconds the drain took>, then the host's clock (epoch seconds)."""
    path = gateway_file(deploy_path)
    f = shlex.quote(path)
    d = shlex.quote(path.rsplit("/", 1)[0])
    workers = shlex.quote(WORKERS)
    return "\n".join([
        "set -eu",
        # the folder and the file readable by nginx (root without DAC_OVERRIDE in the
        # gateway) whatever the login umask (host.harden sets 027): modes set explicitly
        f"mkdir -p {d} && chmod 0755 {d}",
        f"cat > {f}.new",
        f'if cmp -s {f}.new {f}; then rm -f {f}.new; echo "UNCHANGED $(date +%s)"; exit 0; fi',
        f"if [ -f {f} ]; then cp -p {f} {f}.prev; else rm -f {f}.prev; fi",
        f"chmod 0644 {f}.new && mv -f {f}.new {f}",
        f"gw=$({gateway_id(core_project)} | head -n 1)",
        'if [ -z "$gw" ]; then echo "WRITTEN $(date +%s)"; exit 0; fi',
        f'old=$(docker exec "$gw" sh -c {workers} | tr "\\n" " ")',
        'if ! err=$(docker exec "$gw" nginx -t 2>&1); then',
        f"  if [ -f {f}.prev ]; then mv -f {f}.prev {f}; else rm -f {f}; fi",
        '  echo "nginx -t rejected the new upstreams (previous file kept): $err" >&2',
        "  exit 1",
        "fi",
        'docker exec "$gw" nginx -s reload',
        "start=$(date +%s)",
        "while :; do",
        f'  now=" $(docker exec "$gw" sh -c {workers} | tr "\\n" " ") "',
        "  left=''",
        '  for p in $old; do case "$now" in *" $p "*) left="$left $p";; esac; done',
        '  [ -z "$left" ] && break',
        f"  if [ $(( $(date +%s) - start )) -ge {drain_seconds} ]; then",
        f'    echo "old nginx workers ($left) still serving after {drain_seconds}s" >&2',
        "    exit 1",
        "  fi",
        "  sleep 0.2",
        "done",
        'echo "RELOADED $(( $(date +%s) - start )) $(date +%s)"',
    ])
