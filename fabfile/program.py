"""The `inv` and `fab` entry points of this suite: Invoke's and Fabric's own programs, except
that a command line they cannot parse (an unknown flag or task, a missing argument) exits
with code 2, like every other bad input, instead of 1, which means "a host is not in the
wanted state". pyproject.toml installs them as the `inv` and `fab` commands.
"""

from __future__ import annotations

import re

from fabric import Config, Executor
from fabric import __version__ as fabric_version
from fabric.main import Fab
from invoke import Program
from invoke import __version__ as invoke_version
from invoke.exceptions import Exit, ParseError

BAD_INPUT = 2


def bad_input(exc: ParseError) -> Exit:
    """One line, exit 2; Invoke's `<Argument: host>` shown as the flag an operator typed."""
    text = re.sub(r"<Argument: ([^>]+)>", lambda m: f"'--{m[1].replace('_', '-')}'", str(exc))
    return Exit(f"error: {text}", code=BAD_INPUT)


class ParseErrorsAreBadInput:
    """Mixin: the parser's errors leave as one line and exit code 2."""

    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)  # type: ignore[misc]
        except ParseError as exc:
            raise bad_input(exc) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()  # type: ignore[misc]
        except ParseError as exc:
            raise bad_input(exc) from None
        except ValueError as exc:  # a flag's value that is not of its type (--timeout abc)
            raise Exit(f"error: a flag's value is not a number ({str(exc)[:80]}); give one, "
                       "e.g. --timeout 20", code=BAD_INPUT) from None

    def parse_cleanup(self) -> None:
        """--help TASK and --list ROOT name what they cannot find: bad input too."""
        try:
            super().parse_cleanup()  # type: ignore[misc]
        except ParseError as exc:
            raise bad_input(exc) from None
        except Exit as exc:
            if exc.code == 1 and exc.message:
                raise Exit(f"error: {exc.message}", code=BAD_INPUT) from None
            raise

    def load_collection(self) -> None:
        """-c NAME that does not exist: bad input."""
        try:
            super().load_collection()  # type: ignore[misc]
        except Exit as exc:
            if exc.code == 1 and exc.message:
                raise Exit(f"error: {exc.message}", code=BAD_INPUT) from None
            raise


class Inv(ParseErrorsAreBadInput, Program):
    pass


class Fabric(ParseErrorsAreBadInput, Fab):
    pass


def inv() -> None:
    """`inv`: Invoke's program (tasks.py at the project root loads fabfile.tasks)."""
    Inv(name="Invoke", binary="inv[oke]", binary_names=["invoke", "inv"],
        version=invoke_version).run()


def fab() -> None:
    """`fab`: Fabric's program (it loads fabfile/)."""
    Fabric(name="Fabric", version=fabric_version, executor_class=Executor,
           config_class=Config).run()


if __name__ == "__main__":  # python -m fabfile.program inv|fab ARGS (the tests use it)
    import sys

    which = sys.argv.pop(1) if len(sys.argv) > 1 else "inv"
    (fab if which == "fab" else inv)()
