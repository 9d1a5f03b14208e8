"""Leader of one ansible-playbook run's process group: adopts, stops and reaps every descendant.

Run as `python -I -S ansible_reaper.py COMMAND [ARGS...]` (standard library only). It makes itself
a child subreaper, starts COMMAND, and exits with COMMAND's status only once no descendant is
left: ssh's ControlPersist masters (which leave the group with setsid) and orphans included.
Without it an orphan dies as a zombie of PID 1, which in a container often never reaps it, and
the process group would outlive the run. SIGTERM stops the whole tree (SIGKILL after a grace).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 3.0


class _Stop(Exception):
    """Raised by the SIGTERM handler to leave the wait for the command."""


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def _descendants(me: int) -> list[int]:
    """Live processes that are our children (adopted orphans included) or in our group."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        # After the command name in parentheses (which may hold spaces): state ppid pgrp ...
        state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z" and me in (int(ppid), int(pgrp)):
            found.append(int(name))
    return found


def _reap_all(me: int) -> None:
    """Signal every descendant until none is left: SIGTERM, then SIGKILL after the grace."""
    deadline = time.monotonic() + GRACE_SECONDS
    while True:
        sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
        for pid in _descendants(me):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # no child left; as subreaper, that means no descendant either
        time.sleep(0.01)


def _start(argv: list[str]) -> int:
    """Fork and exec the command; the child gets default signal handling back through exec."""
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)  # noqa: S606 (argv is our own command line)
        finally:
            os._exit(127)
    return child


def main(argv: list[str]) -> int:
    """Run the command as described above; its exit status (128+N if killed by signal N)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("ansible_reaper: cannot become a child subreaper", file=sys.stderr)
        return 127
    me = os.getpid()
    signal.signal(signal.SIGTERM, _stop)
    status = 128 + signal.SIGTERM
    try:
        command = _start(argv)
        while True:
            pid, wait_status = os.wait()
            if pid == command:
                code = os.waitstatus_to_exitcode(wait_status)
                status = code if code >= 0 else 128 - code
                break
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _reap_all(me)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
