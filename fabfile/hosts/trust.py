"""host.trust: record a host's SSH key in known_hosts, only after a person or a fingerprint
says it is the right one. Nothing in the suite ever accepts an unknown key by itself."""

from __future__ import annotations

from collections.abc import Callable

import paramiko

from fabfile.config import Endpoint, Environment
from fabfile.errors import BadInput, StepFailed
from fabfile.remote import Printer, fingerprint, known_hosts_name, read_host_key


def endpoints(env: Environment) -> list[tuple[str, Endpoint]]:
    """Bastion first: the hosts behind it are reached through it."""
    named = [("bastion", env.bastion)] if env.bastion else []
    return named + [(h.name, h.ssh) for h in env.hosts]


def recorded(env: Environment, ep: Endpoint) -> list[paramiko.PKey]:
    if not env.known_hosts.is_file():
        return []
    keys = paramiko.HostKeys(str(env.known_hosts)).lookup(known_hosts_name(ep))
    return list(keys.values()) if keys else []


def known_hosts_line(ep: Endpoint, key: paramiko.PKey) -> str:
    return f"{known_hosts_name(ep)} {key.get_name()} {key.get_base64()}\n"


def trust(env: Environment, printer: Printer, accepted: set[str],
          ask: Callable[[str], bool]) -> int:
    """Returns how many keys were recorded. A changed key is never replaced here."""
    added = 0
    for name, ep in endpoints(env):
        key = read_host_key(env, ep)
        fp = fingerprint(key)
        known = recorded(env, ep)
        if any(k.asbytes() == key.asbytes() for k in known):
            printer.line(name, f"nothing to do: {known_hosts_name(ep)} {fp} already trusted")
            continue
        if known:  # a changed key, or one of a new type: the same warning, never a prompt
            kinds = ", ".join(sorted({k.get_name() for k in known}))
            what = "CHANGED to" if any(k.get_name() == key.get_name() for k in known) else \
                f"is trusted with {kinds} but now presents a {key.get_name()} key,"
            raise StepFailed(f"{name}: host key of {known_hosts_name(ep)} {what} {fp}; "
                             f"not recording it. If the host was rebuilt, delete its lines in "
                             f"{env.known_hosts} by hand, then run host.trust again")
        printer.line(name, f"{known_hosts_name(ep)} presents {key.get_name()} {fp}")
        if accepted:
            if fp not in accepted:
                raise StepFailed(f"{name}: fingerprint {fp} is not one of --fingerprint; "
                                 "refusing to record it")
        elif not ask(f"Trust {fp} for {name} ({known_hosts_name(ep)})? Type yes: "):
            printer.line(name, "not recorded")
            continue
        env.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with env.known_hosts.open("a") as f:
            f.write(known_hosts_line(ep, key))
        printer.line(name, f"recorded in {env.known_hosts}")
        added += 1
    return added


def parse_fingerprints(value: str | None) -> set[str]:
    if not value:
        return set()
    fps = {v.strip() for v in value.split(",") if v.strip()}
    for fp in fps:
        if not fp.startswith("SHA256:") or len(fp) != 50:
            raise BadInput(f"--fingerprint {fp!r} is not an OpenSSH SHA256 fingerprint "
                           "(SHA256: and 43 characters, as ssh-keygen -lf prints)")
    return fps
