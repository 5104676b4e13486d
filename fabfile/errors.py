"""The two ways a task fails, and their exit codes.

BadInput (exit 2) is raised before any connection is opened: the operator typed or configured
something wrong and nothing on any host has changed. StepFailed (exit 1) is raised when a host
did not reach the wanted state.
"""


class BadInput(Exception):
    """Invalid input: one line naming what is wrong and how to fix it. Exit code 2."""

    exit_code = 2


class StepFailed(Exception):
    """A remote step did not reach the wanted state. Exit code 1."""

    exit_code = 1
