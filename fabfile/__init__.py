"""jafar deploy suite: Invoke tasks that compose small Fabric operations.

`tasks.py` at the project root and `fab` both load the namespace built in `fabfile.tasks`.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from fabfile.tasks import ns  # noqa: E402  (ROOT must exist first: the modules import it)

__all__ = ["ROOT", "ns"]
