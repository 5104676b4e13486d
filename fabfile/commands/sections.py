"""One round trip, many facts: a script that prints each command's output under `=== name`.

The pure parser beside the builder splits the answer back; pyinfra calls these facts.
"""

from __future__ import annotations


def script(sections: dict[str, str]) -> str:
    """Each command's output under its header; a failing command does not stop the others."""
    return "\n".join(f"echo '=== {name}'; {{ {command}; }} 2>&1" for name, command in
                     sections.items())


def split(output: str, names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The text under each known header (headers of other names are content)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("=== ") and line[4:] in names:
            current = line[4:]
            found[current] = []
        elif current:
            found[current].append(line)
    return {k: "\n".join(v) for k, v in found.items()}
