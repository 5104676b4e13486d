"""Shell for host.prepare and host.harden: each piece checks first and acts only if needed.

Every `ensure_*` returns a POSIX sh snippet that prints `CHANGED <what>` when it changed the
host and nothing otherwise, and fails (non-zero) when it cannot reach the wanted state. A step
joins its snippets with `set -eu` into one script: one round trip, idempotent by construction.
"""

from __future__ import annotations

import base64
import shlex

APT_ENV = "DEBIAN_FRONTEND=noninteractive"


def script(*parts: str) -> str:
    return "\n".join(["set -eu", *parts])


def ensure_packages(packages: list[str]) -> str:
    """apt-get install only what is missing (one apt-get update, only then)."""
    names = " ".join(shlex.quote(p) for p in packages)
    return "\n".join([
        "missing=''",
        f"for p in {names}; do",
        "  dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q '^install ok installed$' "
        "|| missing=\"$missing $p\"",
        "done",
        'if [ -n "$missing" ]; then',
        f"  {APT_ENV} apt-get update -q >/dev/null",
        f"  {APT_ENV} apt-get install -y -q --no-install-recommends $missing >/dev/null",
        '  echo "CHANGED installed$missing"',
        "fi",
    ])


def ensure_file(path: str, content: str, mode: str = "0644", owner: str = "root",
                on_change: str = "", target: str | None = None, validate: str = "") -> str:
    """Write PATH when its content, mode or owner differ; then run `on_change`.
    `target` is the path as a shell expression when it is only known on the host; `validate`
    is a command the new file must pass (given its temporary path) before it replaces PATH."""
    data = base64.b64encode(content.encode()).decode()
    q = target or shlex.quote(path)
    want = shlex.quote(f"{int(mode, 8):o} {owner}")
    lines = [
        f"want=$(printf %s {data} | base64 -d | sha256sum | cut -d' ' -f1)",
        f"have=$( [ -f {q} ] && sha256sum < {q} | cut -d' ' -f1 || echo none)",
        f"meta=$( [ -f {q} ] && stat -c '%a %U' {q} || echo none)",
        f"if [ \"$want\" != \"$have\" ] || [ \"$meta\" != {want} ]; then",
        f"  mkdir -p \"$(dirname {q})\"",
        f"  printf %s {data} | base64 -d > {q}.jafar-tmp",
        f"  chmod {mode} {q}.jafar-tmp && chown {shlex.quote(owner)}: {q}.jafar-tmp",
        *([f"  {validate} {q}.jafar-tmp || {{ rm -f {q}.jafar-tmp; echo "
           f"{shlex.quote(f'{path}: rejected by {validate}')} >&2; exit 1; }}"]
          if validate else []),
        f"  mv -f {q}.jafar-tmp {q}",
        f"  echo {shlex.quote('CHANGED ' + path)}",
    ]
    if on_change:
        lines.append(f"  {on_change}")
    lines.append("fi")
    return "\n".join(lines)


def ensure_service(name: str) -> str:
    """Enabled and running."""
    q = shlex.quote(name)
    return "\n".join([
        f"if ! systemctl is-enabled --quiet {q} || ! systemctl is-active --quiet {q}; then",
        f"  systemctl enable --now --quiet {q}",
        f"  echo {shlex.quote('CHANGED started ' + name)}",
        "fi",
    ])


def ensure_user(user: str, group: str, home_keys: str) -> str:
    """A system login user in GROUP whose authorized_keys are exactly HOME_KEYS."""
    q = shlex.quote(user)
    return "\n".join([
        f"if ! id -u {q} >/dev/null 2>&1; then",
        f"  useradd --create-home --shell /bin/bash {q}",
        f"  echo {shlex.quote('CHANGED created user ' + user)}",
        "fi",
        f"if ! id -nG {q} | tr ' ' '\\n' | grep -qx {shlex.quote(group)}; then",
        f"  usermod -aG {shlex.quote(group)} {q}",
        f"  echo {shlex.quote(f'CHANGED added {user} to {group}')}",
        "fi",
        f"home=$(getent passwd {q} | cut -d: -f6)",
        f"install -d -m 0700 -o {q} -g {q} \"$home/.ssh\"",
        ensure_file(f"~{user}/.ssh/authorized_keys", home_keys, "0600", user,
                    target='"$home/.ssh/authorized_keys"'),
    ])


def ensure_system_user(user: str) -> str:
    """A system user with no home and no login (a daemon's identity, such as the remap user)."""
    q = shlex.quote(user)
    return "\n".join([
        f"if ! id -u {q} >/dev/null 2>&1; then",
        f"  useradd --system --no-create-home --shell /usr/sbin/nologin {q}",
        f"  echo {shlex.quote('CHANGED created user ' + user)}",
        "fi",
    ])


def ensure_subordinate_range(path: str, user: str, base: int, size: int) -> str:
    """USER owns exactly the ids BASE..BASE+SIZE-1 in PATH (/etc/subuid or /etc/subgid): what
    userns-remap maps a container's ids onto. A range another user holds is refused, never
    shared (that user's containers could then reach ours)."""
    q, entry = shlex.quote(path), f"{user}:{base}:{size}"
    overlap = f"$1 != u && $2 < {base + size} && $2 + $3 > {base} {{ print $1; exit }}"
    return "\n".join([
        f"touch {q}",
        f"if ! grep -qx {shlex.quote(entry)} {q}; then",
        f"  other=$(awk -F: -v u={shlex.quote(user)} {shlex.quote(overlap)} {q})",
        f'  if [ -n "$other" ]; then echo "{path}: the ids {base}-{base + size - 1} overlap '
        '$other\'s range; free them or use another host" >&2; exit 1; fi',
        f"  sed -i {shlex.quote(f'/^{user}:/d')} {q}",
        f"  echo {shlex.quote(entry)} >> {q}",
        f"  echo {shlex.quote(f'CHANGED {path}: {entry}')}",
        "fi",
    ])


def docker_storage_probe() -> str:
    """Read-only, for the userns-remap guard: is remapping on in daemon.json, and how many
    volumes and containers are in any of the daemon's storage roots (counted on disk, so a
    stopped daemon's data counts too)."""
    roots = "/var/lib/docker /var/lib/docker/[0-9]*.[0-9]*"
    return "\n".join([
        "if grep -q '\"userns-remap\"' /etc/docker/daemon.json 2>/dev/null; then echo remap=1; "
        "else echo remap=0; fi",
        "n() { for r in " + roots + "; do [ -d \"$r/$1\" ] && find \"$r/$1\" -mindepth 1 "
        "-maxdepth 1 -type d; done | wc -l; }",
        'echo "volumes=$(n volumes)"',
        'echo "containers=$(n containers)"',
    ])


def install_gzipped(path: str, mode: str) -> str:
    """Install PATH from gzip data on stdin; a broken stream leaves no file behind."""
    return (f'tmp=$(mktemp) && gunzip -c > "$tmp" && install -D -m {mode} "$tmp" '
            f'{shlex.quote(path)}; rc=$?; rm -f "$tmp"; exit $rc')


def ensure_dir(path: str, owner: str, mode: str = "0750") -> str:
    """The folder itself with this owner and mode; never recursive (what is inside is not the
    suite's to change: `deploy_path: /etc` would otherwise have given /etc away)."""
    q = shlex.quote(path)
    want = shlex.quote(f"{int(mode, 8):o} {owner}")
    return "\n".join([
        f"if [ \"$(stat -c '%a %U' {q} 2>/dev/null || echo none)\" != {want} ]; then",
        f"  install -d -m {mode} -o {shlex.quote(owner)} -g {shlex.quote(owner)} {q}",
        f"  echo {shlex.quote(f'CHANGED {path} owned by {owner}')}",
        "fi",
    ])


def ensure_setting(path: str, key: str, value: str, separator: str = " ") -> str:
    """KEY set to VALUE in a `KEY VALUE` (or `KEY=VALUE`) file such as /etc/login.defs: every
    active line naming KEY becomes `KEY VALUE` (the last one would win); without one, the line
    is added. Comments are left alone."""
    q = shlex.quote(path)
    line = f"{key}{separator}{value}"
    active = f"^[[:space:]]*{key}[[:space:]]*{'=' if separator.strip() == '=' else '[[:space:]]'}"
    return "\n".join([
        f"have=$(sed -n -E {shlex.quote(f's/{active}[[:space:]]*//p')} {q} "
        "| sed -E 's/[[:space:]]+$//' | sort -u)",
        f"if [ \"$have\" != {shlex.quote(value)} ]; then",
        f"  if [ -n \"$have\" ]; then sed -i -E {shlex.quote(f's/{active}.*/{line}/')} {q}",
        f"  else printf '%s\\n' {shlex.quote(line)} >> {q}; fi",
        f"  echo {shlex.quote(f'CHANGED {path}: {line}')}",
        "fi",
    ])


def ufw_rules(wanted: list[str]) -> str:
    """Make ufw's rules exactly `wanted` (as `ufw show added` prints them, the SSH rule first)
    without a moment in which SSH is not allowed: the wanted rules are added first, then the
    others deleted; if anything fails half way, the SSH rule is put back (or, if even that
    fails, ufw is disabled) before the script exits: a broken rule set never locks us out."""
    rules = "\n".join(wanted)
    return "\n".join([
        f"wanted=$(cat <<'RULES'\n{rules}\nRULES\n)",
        "have=$(ufw show added | sed -n 's/^ufw //p' || true)",
        "sorted_have=$(printf '%s\\n' \"$have\" | sort)",
        'if [ "$sorted_have" != "$(printf \'%s\\n\' "$wanted" | sort)" ]; then',
        f"  keep_ssh() {{ ufw {wanted[0]} >/dev/null 2>&1 || "
        "ufw --force disable >/dev/null 2>&1; }",
        "  trap 'rc=$?; [ $rc -eq 0 ] || keep_ssh; exit $rc' EXIT",
        '  printf \'%s\\n\' "$wanted" | while read -r rule; do eval "ufw $rule" >/dev/null; done',
        '  printf \'%s\\n\' "$have" | while read -r rule; do',
        '    [ -n "$rule" ] || continue',
        '    printf \'%s\\n\' "$wanted" | grep -qxF -- "$rule" || '
        'eval "ufw --force delete $rule" >/dev/null',
        "  done",
        "  trap - EXIT",
        "  echo 'CHANGED ufw rules'",
        "fi",
    ])
