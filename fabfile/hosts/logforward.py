"""Auth and audit events off the host: rsyslog forwards them to the environment's collector
(`host.log_forward`) over TLS, the collector's certificate checked against its CA and name.

rsyslog keeps a disk-assisted queue, so events written while the collector is unreachable are
sent when it is back (bounded, kept across a restart). On hosts with their own kernel, auditd's
syslog plugin hands the audit records to rsyslog too.
"""

from __future__ import annotations

from fabfile.config import LogForward

CONF = "/etc/rsyslog.d/60-jafar-forward.conf"
CA = "/etc/ssl/jafar/log-forward-ca.crt"
AUDIT_PLUGIN = "/etc/audit/plugins.d/syslog.conf"
PACKAGES = ["rsyslog", "rsyslog-gnutls"]
AUDIT_PACKAGES = ["audispd-plugins"]


def rsyslog_conf(forward: LogForward) -> str:
    """The rsyslog drop-in: auth, authpriv and audit events to the collector, TLS only."""
    return f"""# jafar: auth, authpriv and audit events to the central log collector over TLS
# (host.log_forward). Installed by `inv host.harden` as {CONF}.
global(DefaultNetstreamDriverCAFile="{CA}")
if ($syslogfacility-text == "auth" or $syslogfacility-text == "authpriv"
    or $programname startswith "audisp" or $programname == "audit") then {{
  action(type="omfwd" target="{forward.address}" port="{forward.port}" protocol="tcp"
         template="RSYSLOG_SyslogProtocol23Format"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="{forward.name}"
         queue.type="LinkedList" queue.filename="jafar-forward" queue.maxDiskSpace="256m"
         queue.saveOnShutdown="on" action.resumeRetryCount="-1" action.resumeInterval="10")
}}
"""


AUDIT_PLUGIN_CONF = """# jafar: audit records to syslog, forwarded from there (inv host.harden).
active = yes
direction = out
path = /sbin/audisp-syslog
type = always
args = LOG_INFO
format = string
"""
