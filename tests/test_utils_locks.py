"""The advisory lock helper: one writer per target, pid in the message, nothing stale."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from geneinfer.errors import GeneinferError
from geneinfer.utils.locks import LockError, LockHeldError, exclusive_lock, lock_path

# A child that takes the lock, says so, then sleeps until it is killed (bounded: 60 s).
_HOLDER = """
import sys, time
from geneinfer.utils.locks import exclusive_lock
with exclusive_lock(sys.argv[1], what="converting"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _start_holder(target: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "locked"
    return child


def test_second_thread_cannot_take_the_lock_and_the_message_names_the_pid(tmp_path):
    target = tmp_path / "out.h5"
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with exclusive_lock(target, what="writing"):
            taken.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert taken.wait(10)
        with pytest.raises(LockHeldError) as err:
            with exclusive_lock(target):
                pass
        msg = str(err.value)
        assert isinstance(err.value, GeneinferError) and "\n" not in msg
        assert f"(pid {os.getpid()})" in msg and str(target) in msg
        assert msg.endswith("wait for it or stop it") and err.value.holder_pid == os.getpid()
    finally:
        done.set()
        thread.join(10)
    with exclusive_lock(target):  # released once the holder's block ended
        pass


def test_second_process_fails_fast_naming_the_holder_then_gets_it_after_exit(tmp_path):
    target = tmp_path / "model"
    child = _start_holder(target)
    try:
        assert lock_path(target).read_text().split()[0] == str(child.pid)
        msg = rf"\(pid {child.pid}\) is converting {re.escape(str(target))};"
        with pytest.raises(LockHeldError, match=msg):
            with exclusive_lock(target):
                pass
    finally:
        child.terminate()  # SIGTERM: Python dies without running the with-block's exit
        child.wait(10)
    with exclusive_lock(target) as sidecar:
        assert sidecar.read_text().split()[0] == str(os.getpid())


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    target = tmp_path / "GSE1_family.soft.gz"
    child = _start_holder(target)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    stale = lock_path(target)
    assert stale.read_text().split()[0] == str(child.pid)  # the file stays behind ...
    with exclusive_lock(target, what="downloading") as sidecar:  # ... and does not block
        assert sidecar == stale
        assert stale.read_text().split()[0] == str(os.getpid())
    assert not stale.exists()  # removed on a clean release


def test_released_on_exception_and_not_reentrant(tmp_path):
    target = tmp_path / "pred.tsv"
    with pytest.raises(RuntimeError):
        with exclusive_lock(target):
            raise RuntimeError("boom")
    assert not lock_path(target).exists()
    with exclusive_lock(target):
        with pytest.raises(LockHeldError):  # a second take in the same process also fails
            with exclusive_lock(target):
                pass


def test_unusable_lock_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(LockError, match=r"^cannot create lock file .*missing.*out\.lock: "):
        with exclusive_lock(tmp_path / "missing" / "out"):
            pass
