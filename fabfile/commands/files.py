"""File commands: read remote state, write files atomically with the right mode."""

from __future__ import annotations

import shlex


def state(paths: list[str]) -> str:
    """For each path: `sha256 mode owner path`, or `- - - path` when it does not exist.
    One round trip tells which files differ from what we would upload."""
    script = ('for f in "$@"; do if [ -f "$f" ]; then '
              'printf "%s %s %s %s\\n" "$(sha256sum < "$f" | cut -d" " -f1)" '
              '"$(stat -c %a "$f")" "$(stat -c %U "$f")" "$f"; '
              'else printf -- "- - - %s\\n" "$f"; fi; done')
    return shlex.join(["sh", "-c", script, "state", *paths])


def write_stdin(path: str, mode: str, owner: str | None = None,
                readers: tuple[int, ...] = ()) -> str:
    """Write stdin to PATH atomically: a temp file in the same folder, created under umask 077
    (never readable by others, not even for a moment), then chmod/chown, an ACL that lets the
    `readers` uids read it (and nobody else), and rename."""
    directory = path.rsplit("/", 1)[0] or "/"
    tmp = f"{path}.jafar-tmp"
    steps = [
        "umask 077",
        shlex.join(["mkdir", "-p", directory]),
        f"cat > {shlex.quote(tmp)}",
        shlex.join(["chmod", mode, tmp]),
    ]
    if owner:
        steps.append(shlex.join(["chown", owner, tmp]))
    if readers:
        steps.append(shlex.join(["setfacl", "-m", ",".join(f"u:{u}:r" for u in readers), tmp]))
    steps.append(shlex.join(["mv", "-f", tmp, path]))
    return " && ".join(steps)


def extract_bundle(deploy_path: str) -> str:
    """Unpack the stack bundle (a tar on stdin) into the deploy path, owned by the ssh user.
    umask 022: the modes are the bundle's whatever the login umask (host.harden sets 027), so
    the containers' own users (Prometheus, nginx) can read their configuration."""
    return " && ".join([
        "umask 022",
        shlex.join(["mkdir", "-p", deploy_path]),
        shlex.join(["tar", "-xz", "--no-same-owner", "--no-overwrite-dir", "-C", deploy_path]),
    ])
