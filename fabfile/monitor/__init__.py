"""Monitoring: what Prometheus sees (monitor.status) and where Alertmanager sends it
(alerting)."""
