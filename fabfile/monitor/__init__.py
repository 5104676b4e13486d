"""Monitoring: what Prometheus sees (monitor.status)."""
