"""Hosts: prepare and harden an instance (setup), the CIS baseline controls (baseline),
the read-only audit (check) and host keys (trust)."""

from fabfile import ROOT

HARDENING = ROOT / "config" / "hardening"
