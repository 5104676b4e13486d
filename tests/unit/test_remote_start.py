"""A host that freezes between opening a channel and accepting the command: paramiko waits for
the reply to `exec` without a limit, so the suite bounds it (Remote._start). A fake channel
that never answers stands for the frozen host; the real paramiko Channel's close() is what
releases the wait (its _set_closed sets the event exec_command waits on)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import paramiko
import pytest

from fabfile.errors import StepFailed
from fabfile.remote import Masker, Printer, Remote
from tests.conftest import shipped


class FrozenChannel:
    """exec_command blocks until the channel is closed, then fails as paramiko's does."""

    def __init__(self, answers: bool = False) -> None:
        self.closed = False
        self.answers = answers
        self._closed = threading.Event()

    def settimeout(self, seconds: float) -> None:
        pass

    def exec_command(self, command: str) -> None:
        if self.answers:
            return
        self._closed.wait(30)  # bounded: a test never hangs
        raise paramiko.SSHException("Channel closed.")

    def close(self) -> None:
        self.closed = True
        self._closed.set()


def remote(connect_timeout: int = 1) -> Remote:
    env = shipped("sandbox")
    env = replace(env, connect_timeout=connect_timeout)
    return Remote(env, env.hosts[0], Printer(Masker()))


def test_a_command_the_host_never_accepts_fails_within_connect_timeout():
    chan = FrozenChannel()
    began = time.monotonic()
    with pytest.raises(StepFailed, match="the host stopped answering \\(it did not start the "
                                         "command within 1s\\): docker compose ps"):
        remote()._start(chan, "docker compose ps", "docker compose ps")
    assert chan.closed and time.monotonic() - began < 5


def test_a_command_the_host_accepts_is_not_touched():
    chan = FrozenChannel(answers=True)
    remote()._start(chan, "true", "true")
    time.sleep(1.3)  # past the watchdog's time: it was cancelled
    assert not chan.closed


def test_a_quick_command_whose_channel_the_host_already_closed_is_started():
    """`true` may end, and the host close its channel, before exec_command returns here:
    that is a command that ran, not a frozen host."""
    chan = FrozenChannel(answers=True)
    chan.closed = True  # the host's CLOSE arrived first
    remote()._start(chan, "true", "true")
