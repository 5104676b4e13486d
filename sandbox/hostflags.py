"""How to run a sandbox test host (image ``jafar-sandbox/host``) so that systemd boots in it.

The host image behaves like a fresh EC2 instance: systemd as PID 1, sshd, sudo,
an ``admin`` user with passwordless sudo (like ``ubuntu`` on an Ubuntu AMI). Nothing of what
the deploy suite does is pre-done in it.

Run-time inputs (nothing of them is baked into the image):

* ``SEED_DIR`` (``/etc/sandbox-seed``), mounted read-only from a directory on the machine, plays
  the part of EC2's instance metadata / cloud-init seed:

  - ``authorized_keys``: installed once per instance (first boot) as
    ``/home/admin/.ssh/authorized_keys`` (0600, owned by admin) by the unit
    ``sandbox-authorized-keys.service``, before sshd starts. To re-apply after changing it:
    ``docker exec HOST sandbox-authorized-keys --force``.

* sshd host keys are generated at first boot (``sandbox-ssh-hostkeys.service``), so every host
  has its own key; read it with ``docker exec HOST cat /etc/ssh/ssh_host_ed25519_key.pub``.
* ``/etc/machine-id`` is empty in the image, so systemd gives each host its own id at boot.
* The inner Docker daemon needs its own volume at ``/var/lib/docker`` (overlay2 does not nest
  on overlay).
"""

from __future__ import annotations

from pathlib import Path

HOST_IMAGE = "jafar-sandbox/host"

#: Where the seed directory is mounted in a host (read-only).
SEED_DIR = "/etc/sandbox-seed"

#: Where the inner Docker daemon keeps its state; give it a volume.
INNER_DOCKER_DIR = "/var/lib/docker"

#: ``docker run`` flags that let systemd boot as PID 1 on this kind of machine (see
#: /work/shared/SANDBOX.md: ``--privileged`` fails here because SYS_RESOURCE is outside the
#: machine's bounding set, so: every capability but that one, no seccomp/apparmor confinement,
#: all devices, the cgroup tree writable, tmpfs /run and /run/lock, and systemd's stop signal).
HOST_RUN_FLAGS: list[str] = [
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
    "--security-opt=systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm",
    "--volume=/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs=/run",
    "--tmpfs=/run/lock",
    "--stop-signal=SIGRTMIN+3",
]


def host_run_args(
    *,
    seed_dir: Path | str,
    docker_volume: str,
    name: str | None = None,
    hostname: str | None = None,
    ssh_publish: str | None = None,
    network: str | None = None,
    labels: dict[str, str] | None = None,
    image: str = f"{HOST_IMAGE}:latest",
) -> list[str]:
    """The argv after ``docker`` that starts one test host (detached).

    ``ssh_publish`` is a ``-p`` value such as ``"127.0.0.1:2222:22"`` or ``"127.0.0.1::22"``
    (always publish on loopback only). ``docker_volume`` is a volume name for the inner
    daemon's /var/lib/docker.
    """
    args = ["run", "--detach", *HOST_RUN_FLAGS]
    if name:
        args.append(f"--name={name}")
    if hostname:
        args.append(f"--hostname={hostname}")
    if network:
        args.append(f"--network={network}")
    if ssh_publish:
        args.append(f"--publish={ssh_publish}")
    for key, value in sorted((labels or {}).items()):
        args.append(f"--label={key}={value}")
    args += [
        f"--volume={Path(seed_dir).resolve()}:{SEED_DIR}:ro",
        f"--volume={docker_volume}:{INNER_DOCKER_DIR}",
        image,
    ]
    return args
