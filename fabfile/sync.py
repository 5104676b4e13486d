"""Put files on a host: the stack bundle (files.sync) and the settings and secrets (env.sync).

Both read the remote state of every file in one round trip (sha256, mode, owner) and upload
only what differs, so a second run says "nothing to do". Uploads travel on the SSH channel's
stdin, never on a command line, and land atomically with their final mode.

env.sync gives each host only what its roles' compose files read (fabfile/stackspec.py): an
.env.ec2 of addresses and names (mode 0600), and each secret as its own file under secrets/
(mode 0400, readable through an ACL only by the uids of the containers that mount it). A
secret file the host no longer needs is removed.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fabfile import ROOT, alternating, envfile, envsource
from fabfile.commands import files as cmd
from fabfile.commands.monitor import reload_config
from fabfile.config import Environment, Host
from fabfile.errors import BadInput
from fabfile.flow import Outcome, Step
from fabfile.monitor import alerting, cluster, targets
from fabfile.ops import datatls
from fabfile.remote import Remote, become
from fabfile.services import compose_project
from fabfile.stackspec import GATEWAY_TLS, TLS_FILES, host_needs

BUNDLE_DIRS = ("compose", "scripts", "config/nginx", "config/prometheus", "config/postgres",
               "config/grafana")
# the services that read a folder of the bundle, reloaded (SIGHUP) when a file there changes
RELOADED = {"prometheus": "config/prometheus/", "alertmanager": "config/alertmanager/"}
SECRETS = "secrets"
OLD_CERTS = "certs"  # where an earlier version kept the TLS pair: removed


@dataclass(frozen=True)
class Item:
    """One file to place: its content (a local file, or made in memory), where it goes, with
    which mode, and which uids besides the owner may read it (an ACL)."""

    local: Path | None
    remote: str
    mode: str          # octal, as `stat -c %a` prints it (an ACL shows as the group bits)
    secret: bool
    content: bytes | None = None
    readers: tuple[int, ...] = ()

    def data(self) -> bytes:
        return self.content if self.content is not None else self.local.read_bytes()  # type: ignore[union-attr]

    def digest(self) -> str:
        return hashlib.sha256(self.data()).hexdigest()

    def write_command(self) -> str:
        return cmd.write_stdin(self.remote, "400" if self.readers else self.mode,
                               readers=self.readers)


def wire(host: Host, command: str) -> str:
    return become(command) if host.become else command


def owner(host: Host) -> str:
    return "root" if host.become else host.ssh.user


def bundle_items(env: Environment, host: Host) -> list[Item]:
    """Compose files, scripts and service configs, as in the repo (scripts stay executable),
    Alertmanager's configuration (from the environment's alerting: block) and the hosts this
    host's Prometheus scrapes for node_exporter."""
    items = [Item(None, f"{env.deploy_path}/{alerting.PATH}", "644", secret=False,
                  content=alerting.render(env).encode()),
             Item(None, f"{env.deploy_path}/{targets.PATH}", "644", secret=False,
                  content=targets.render(env, host).encode())]
    for d in BUNDLE_DIRS:
        for path in sorted((ROOT / d).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                rel = path.relative_to(ROOT).as_posix()
                mode = "755" if path.stat().st_mode & stat.S_IXUSR else "644"
                items.append(Item(path, f"{env.deploy_path}/{rel}", mode, secret=False))
    return items


def secret_items(env: Environment, host: Host,
                 values: dict[str, str] | None = None) -> list[Item]:
    """What the host's stacks read: its .env.ec2 and its secret files (values from the env
    file or the secrets store, the gateway's TLS pair from tls_dir; both checked before any
    connection)."""
    values = envsource.load(env) if values is None else values
    needs = host_needs(env, host)
    values = {**values, **alternating.derived(values)}
    keys = [*envfile.example_keys(), *alternating.DERIVED]
    settings = "".join(f"{k}={envfile.quote(values[k])}\n" for k in keys
                       if k in needs.variables and k in values)
    bind = env.gateway_address(host) if host.has("core") else None
    if bind:  # per host (gateway_bind: private), so here rather than on the command line
        settings += f"GATEWAY_BIND={bind}\n"
    settings += cluster.host_settings(env, host)
    items = [Item(None, f"{env.deploy_path}/.env.ec2", "600", secret=True,
                  content=settings.encode())]
    for name, container_uids in needs.secrets.items():
        remote = f"{env.deploy_path}/{SECRETS}/{name}"
        uids = {env.host_setup.host_uid(u) for u in container_uids}
        if name in TLS_FILES:
            if env.tls_dir is None:
                continue  # check_local_secrets refuses an environment without one
            filename, public = TLS_FILES[name]
            local = env.tls_dir / filename
            if public:
                items.append(Item(local, remote, "444", secret=False))
                continue
            items.append(Item(local, remote, "440", secret=True, readers=tuple(sorted(uids))))
            continue
        items.append(Item(None, remote, "440", secret=True,
                          content=values[needs.key(name)].encode(), readers=tuple(sorted(uids))))
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
            data = item.data()
            info = tarfile.TarInfo(item.remote[len(deploy_path) + 1:])
            info.size = len(data)
            info.mode = int(item.mode, 8)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- files.sync ---------------------------------------------------------------------------

def plan_files(env: Environment, host: Host) -> list[str]:
    items = bundle_items(env, host)
    return [
        f"$ {wire(host, cmd.state([i.remote for i in items]))}",
        f"upload {len(items)} files ({', '.join(BUNDLE_DIRS)}, {alerting.PATH}, "
        f"{targets.PATH}) that differ, as one tar.gz on stdin, owner {owner(host)}, via:",
        f"$ {wire(host, cmd.extract_bundle(env.deploy_path))}",
        "then, if a monitoring config changed, the running Prometheus or Alertmanager reads "
        "it again (SIGHUP) via:",
        f"$ {wire(host, reload_config(compose_project(env, 'core'), tuple(RELOADED)))}",
    ]


def differing(items: list[Item], host: Host, remote: Remote) -> list[Item]:
    """One round trip: which of the items the host does not have as wanted."""
    return stale(items, remote.run(cmd.state([i.remote for i in items])).stdout, owner(host))


def apply_files(env: Environment, host: Host, remote: Remote) -> Outcome:
    items = bundle_items(env, host)
    changed = differing(items, host, remote)
    if not changed:
        return Outcome(False, f"nothing to do: {len(items)} files already up to date "
                              f"in {env.deploy_path}")
    remote.run_with_input(cmd.extract_bundle(env.deploy_path), tarball(changed, env.deploy_path))
    names = [i.remote[len(env.deploy_path) + 1:] for i in changed]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    reload = tuple(s for s, folder in RELOADED.items()
                   if any(n.startswith(folder) for n in names))
    said = ""
    if reload:  # a bind-mounted folder shows the new files, but only a reload reads them
        out = remote.run(wire(host, reload_config(compose_project(env, "core"), reload)))
        said = "".join(f"; {line}" for line in out.stdout.splitlines() if line.strip())
    return Outcome(True, f"updated {len(changed)} of {len(items)} files: {shown}{said}")


FILES_SYNC = Step("files.sync", ("data", "core"),
                  "compose files, scripts and service configs to the deploy path",
                  plan_files, apply_files)


# --- env.sync -----------------------------------------------------------------------------

def plan_env(env: Environment, host: Host) -> list[str]:
    # a dry run reads no store: the items' names and modes are all it shows
    values = envsource.peek(env) or dict.fromkeys(envfile.example_keys(), "")
    items = secret_items(env, host, values)
    lines = [f"$ {wire(host, env_state(env, items))}"]
    for i in items:
        content = "content not shown" if i.secret else "public certificate"
        readers = f"; readable by uid {', '.join(map(str, i.readers))} (ACL)" if i.readers else ""
        lines.append(f"upload -> {i.remote} (mode 0{i.mode}, owner {owner(host)}{readers}; "
                     f"{content}) if it differs, on stdin, via:")
        lines.append(f"$ {wire(host, i.write_command())}")
    lines.append(f"remove any other file in {env.deploy_path}/{SECRETS}/")
    return lines


def env_state(env: Environment, items: list[Item]) -> str:
    """The items' state, then the names in secrets/ (to remove what is no longer needed) and
    the certs/ folder an earlier version of the suite kept the TLS pair in."""
    return (f"{cmd.state([i.remote for i in items])}; echo '=== {SECRETS}'; "
            f"ls -1A {shlex.quote(f'{env.deploy_path}/{SECRETS}')} 2>/dev/null; "
            f"[ -d {shlex.quote(f'{env.deploy_path}/{OLD_CERTS}')} ] && echo {OLD_CERTS}/; "
            "true")


def check_local_secrets(env: Environment) -> None:
    """Before connecting: the env file is complete and private, the gateway's TLS pair exists,
    and the data plane's certificate exists, names the data host and has not expired."""
    envsource.load(env)
    if env.tls_dir is None:
        raise BadInput(f"environment {env.name} has no tls_dir: set it to the folder of the "
                       "gateway's tls.crt and tls.key")
    for name in GATEWAY_TLS:
        if not (env.tls_dir / TLS_FILES[name][0]).is_file():
            raise BadInput(f"TLS file {env.tls_dir / TLS_FILES[name][0]} does not exist; put "
                           f"the gateway's tls.crt and tls.key in {env.tls_dir}")
    problem = datatls.problem(env)
    if problem:
        raise BadInput(f"{problem}: run inv tls.data --host {env.name}")


def apply_env(env: Environment, host: Host, remote: Remote) -> Outcome:
    items = secret_items(env, host)
    state, _, listed = remote.run(env_state(env, items)).stdout.partition(f"=== {SECRETS}\n")
    changed = stale(items, state, owner(host))
    wanted = {i.remote.rsplit("/", 1)[1] for i in items if f"/{SECRETS}/" in i.remote}
    extra = [f"{SECRETS}/{n}" if n != f"{OLD_CERTS}/" else OLD_CERTS
             for n in sorted(set(listed.split()) - wanted)]
    for item in changed:
        remote.run_with_input(item.write_command(), item.data())
    if extra:
        remote.run(shlex.join(["rm", "-rf", *(f"{env.deploy_path}/{n}" for n in extra)]))
    if not changed and not extra:
        return Outcome(False, f"nothing to do: .env.ec2, {len(items) - 1} secret and TLS files "
                              "unchanged (same sha256, mode and owner)")
    done = [f"{i.remote.removeprefix(env.deploy_path + '/')} (0{i.mode})" for i in changed]
    done += [f"removed {n} (not used on this host)" for n in extra]
    return Outcome(True, "uploaded " + ", ".join(done))


ENV_SYNC = Step("env.sync", ("data", "core"),
                "the host's settings (.env.ec2), secret files and the gateway's TLS pair",
                plan_env, apply_env)
