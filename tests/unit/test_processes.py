"""neuronforge.processes: a recorded pid is alive only while it is still the process that was recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from neuronforge.processes import START_SLACK_S, process_start_time, process_state

linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")


@linux_only
def test_this_process_is_alive_and_started_before_now() -> None:
    started = process_start_time(os.getpid())
    assert started is not None and started <= time.time()
    assert process_state(os.getpid(), recorded_at=time.time()) == "alive"


@linux_only
def test_a_pid_recorded_before_its_process_started_is_a_reused_pid() -> None:
    # Seen as "pid N" long before this process existed: whoever has N now is someone else.
    started = process_start_time(os.getpid())
    assert process_state(os.getpid(), recorded_at=started - START_SLACK_S - 60) == "reused"


@linux_only
def test_an_exited_unreaped_child_is_a_zombie_and_a_reaped_one_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while process_state(child.pid) == "alive":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.05)
    assert process_state(child.pid) == "zombie"
    child.wait()
    assert process_state(child.pid) == "gone"


def test_no_pid_is_gone() -> None:
    assert process_state(0) == "gone" and process_state(-5) == "gone"
