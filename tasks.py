"""Invoke entry point: `inv --list`. The tasks live in fabfile/ (also loadable by `fab`)."""

from fabfile.tasks import ns

__all__ = ["ns"]
