"""Put files on a host: the stack bundle (files.sync) and the secrets (env.sync).

Both read the remote state of every file in one round trip (sha256, mode, owner) and upload
only what differs, so a second run says "nothing to do". Uploads travel on the SSH channel's
stdin, never on a command line, and land atomically with their final mode.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fabfile import ROOT, envfile
from fabfile.commands import files as cmd
from fabfile.config import Environment, Host
from fabfile.errors import BadInput
from fabfile.flow import Outcome, Step
from fabfile.remote import Remote, become

BUNDLE_DIRS = ("compose", "scripts", "config/nginx", "config/prometheus", "config/postgres")


@dataclass(frozen=True)
class Item:
    """One file to place: where it comes from, where it goes, with which mode."""

    local: Path
    remote: str
    mode: str          # octal, as `stat -c %a` prints it
    secret: bool

    def digest(self) -> str:
        return hashlib.sha256(self.local.read_bytes()).hexdigest()


def wire(host: Host, command: str) -> str:
    return become(command) if host.become else command


def owner(host: Host) -> str:
    return "root" if host.become else host.ssh.user


def bundle_items(env: Environment) -> list[Item]:
    """Compose files, scripts and service configs, as in the repo (scripts stay executable)."""
    items = []
    for d in BUNDLE_DIRS:
        for path in sorted((ROOT / d).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                rel = path.relative_to(ROOT).as_posix()
                mode = "755" if path.stat().st_mode & stat.S_IXUSR else "644"
                items.append(Item(path, f"{env.deploy_path}/{rel}", mode, secret=False))
    return items


def secret_items(env: Environment) -> list[Item]:
    """The env file and, when configured, the gateway's TLS pair."""
    items = [Item(env.env_file, f"{env.deploy_path}/.env.ec2", "600", secret=True)]
    if env.tls_dir is not None:
        items.append(Item(env.tls_dir / "tls.crt", f"{env.deploy_path}/certs/tls.crt", "644",
                          secret=False))
        items.append(Item(env.tls_dir / "tls.key", f"{env.deploy_path}/certs/tls.key", "600",
                          secret=True))
    return items


def stale(items: list[Item], state_output: str, user: str) -> list[Item]:
    """Items whose remote copy is missing or differs in content, mode or owner."""
    remote: dict[str, tuple[str, str, str]] = {}
    for line in state_output.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4:
            remote[parts[3]] = (parts[0], parts[1], parts[2])
    return [i for i in items if remote.get(i.remote) != (i.digest(), i.mode, user)]


def tarball(items: list[Item], deploy_path: str) -> bytes:
    """A gzip tar of the items, paths relative to the deploy path, modes as wanted."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for item in items:
            data = item.local.read_bytes()
            info = tarfile.TarInfo(item.remote[len(deploy_path) + 1:])
            info.size = len(data)
            info.mode = int(item.mode, 8)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- files.sync ---------------------------------------------------------------------------

def plan_files(env: Environment, host: Host) -> list[str]:
    items = bundle_items(env)
    return [
        f"$ {wire(host, cmd.state([i.remote for i in items]))}",
        f"upload {len(items)} files ({', '.join(BUNDLE_DIRS)}) that differ, as one tar.gz "
        f"on stdin, owner {owner(host)}, via:",
        f"$ {wire(host, cmd.extract_bundle(env.deploy_path))}",
    ]


def differing(items: list[Item], host: Host, remote: Remote) -> list[Item]:
    """One round trip: which of the items the host does not have as wanted."""
    return stale(items, remote.run(cmd.state([i.remote for i in items])).stdout, owner(host))


def apply_files(env: Environment, host: Host, remote: Remote) -> Outcome:
    items = bundle_items(env)
    changed = differing(items, host, remote)
    if not changed:
        return Outcome(False, f"nothing to do: {len(items)} files already up to date "
                              f"in {env.deploy_path}")
    remote.run_with_input(cmd.extract_bundle(env.deploy_path), tarball(changed, env.deploy_path))
    names = [i.remote[len(env.deploy_path) + 1:] for i in changed]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return Outcome(True, f"updated {len(changed)} of {len(items)} files: {shown}")


FILES_SYNC = Step("files.sync", ("data", "core"),
                  "compose files, scripts and service configs to the deploy path",
                  plan_files, apply_files)


# --- env.sync -----------------------------------------------------------------------------

def plan_env(env: Environment, host: Host) -> list[str]:
    items = secret_items(env)
    lines = [f"$ {wire(host, cmd.state([i.remote for i in items]))}"]
    for i in items:
        content = "content not shown" if i.secret else "public certificate"
        lines.append(f"upload {i.local} -> {i.remote} (mode 0{i.mode}, owner {owner(host)}; "
                     f"{content}) if it differs, on stdin, via:")
        lines.append(f"$ {wire(host, cmd.write_stdin(i.remote, i.mode))}")
    return lines


def check_local_secrets(env: Environment) -> None:
    """Before connecting: the env file is complete and private, the TLS pair exists."""
    envfile.require_valid(env.env_file)
    for item in secret_items(env)[1:]:
        if not item.local.is_file():
            raise BadInput(f"TLS file {item.local} does not exist; put the gateway's "
                           f"tls.crt and tls.key in {env.tls_dir}")


def apply_env(env: Environment, host: Host, remote: Remote) -> Outcome:
    items = secret_items(env)
    changed = differing(items, host, remote)
    if not changed:
        return Outcome(False, f"nothing to do: {', '.join(shlex.quote(i.remote) for i in items)}"
                              " unchanged (same sha256, mode and owner)")
    for item in changed:
        remote.run_with_input(cmd.write_stdin(item.remote, item.mode), item.local.read_bytes())
    return Outcome(True, "uploaded " + ", ".join(f"{i.remote} (0{i.mode})" for i in changed))


ENV_SYNC = Step("env.sync", ("data", "core"),
                ".env.ec2 (mode 0600) and the gateway's TLS pair to the deploy path",
                plan_env, apply_env)
