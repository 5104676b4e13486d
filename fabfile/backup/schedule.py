"""backup.schedule: a systemd timer on the data host runs scripts/backup.sh daily (and, once a
week, the verify of the set it took), without the operator's machine, and the metrics file it
reports through is made writable for it.

The units are made from the environment (deploy user, deploy path, project, `backup_at`); a
second run finds them as they should be and says "nothing to do".
"""

from __future__ import annotations

import shlex

from fabfile.backup.commands import keep
from fabfile.commands.host import ensure_file, ensure_service
from fabfile.config import Environment
from fabfile.hosts.baseline import TEXTFILE_DIR
from fabfile.services import compose_project

SERVICE = "jafar-backup.service"
TIMER = "jafar-backup.timer"
UNIT_DIR = "/etc/systemd/system"
TEXTFILE = f"{TEXTFILE_DIR}/jafar_backup.prom"
RANDOM_DELAY = "30min"
VERIFY_EVERY = 7  # days: the timer's backup proves itself by a scratch restore once a week


def service_unit(env: Environment) -> str:
    script = shlex.join([f"{env.deploy_path}/scripts/backup.sh", "--project",
                         compose_project(env, "data"), "--keep", keep(env), "--max-bytes",
                         str(env.backup_max_bytes), "--verify-every", str(VERIFY_EVERY)])
    return f"""\
# jafar: one backup set of the data stores (scripts/backup.sh). Installed by
# `inv backup.schedule`; run it now with: systemctl start {SERVICE}
[Unit]
Description=jafar backup of the data stores
Requires=docker.service
After=docker.service

[Service]
Type=oneshot
User={env.host_setup.deploy_user}
WorkingDirectory={env.deploy_path}
ExecStart={script}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
"""


def timer_unit(env: Environment) -> str:
    return f"""\
# jafar: the daily backup at {env.backup_at} UTC (backup_at in config/environments.yml), a
# random delay of up to {RANDOM_DELAY} so that hosts do not all start at once; a run missed
# while the host was off starts at boot (Persistent). Installed by `inv backup.schedule`.
[Unit]
Description=daily jafar backup of the data stores

[Timer]
OnCalendar=*-*-* {env.backup_at}:00 UTC
RandomizedDelaySec={RANDOM_DELAY}
Persistent=true

[Install]
WantedBy=timers.target
"""


def install(env: Environment) -> str:
    """Check-then-act (as root): the units, the metrics file owned by the deploy user (the
    folder stays root's), the timer enabled; `CHANGED ...` for each thing done."""
    user = shlex.quote(env.host_setup.deploy_user)
    reload = "systemctl daemon-reload"
    textfile = shlex.quote(TEXTFILE)
    return "\n".join([
        "set -e",
        ensure_file(f"{UNIT_DIR}/{SERVICE}", service_unit(env), on_change=reload),
        ensure_file(f"{UNIT_DIR}/{TIMER}", timer_unit(env),
                    on_change=f"{reload} && systemctl restart {TIMER}"),
        f"if [ \"$(stat -c '%U %a' {textfile} 2>/dev/null)\" != \"{env.host_setup.deploy_user}"
        " 644\" ]; then",
        f"  install -d -m 0755 {shlex.quote(TEXTFILE_DIR)}",
        f"  [ -e {textfile} ] || : > {textfile}",
        f"  chown {user}: {textfile} && chmod 0644 {textfile}",
        f"  echo {shlex.quote('CHANGED ' + TEXTFILE + ' writable by the backup')}",
        "fi",
        ensure_service(TIMER),
    ])


def describe(env: Environment) -> str:
    return (f"{TIMER}: daily at {env.backup_at} UTC (+ up to {RANDOM_DELAY}), runs "
            f"{env.deploy_path}/scripts/backup.sh as {env.host_setup.deploy_user}, and its "
            f"set's verify every {VERIFY_EVERY} days")
