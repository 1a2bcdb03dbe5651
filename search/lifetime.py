"""Processes that die with the process that started them, however it ends.

clipsearch starts decoder processes, web workers and (``--ray local``) a Ray cluster.
None of them may outlive their starter by more than a few seconds, whether it ends
normally, by SIGKILL, by the kernel's OOM killer or by a segfault. Two tools:

* :func:`die_with_parent`, called first thing in a child we start ourselves (a
  decoder process, a gunicorn worker): on Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``
  makes the kernel kill the child the moment its parent goes. The kernel ties this to
  the parent *thread* that forked the child, so children must be started from a thread
  that lives as long as they are used (the decoder pool is started and shut down by the
  thread that runs the job; gunicorn forks from its main thread). The parent may already
  have died before the ``prctl``: the parent's pid is compared right after. Everywhere
  (other POSIX systems too) a daemon thread also polls ``getppid()`` twice a second.
* :class:`Reaper`, for processes started on our behalf by someone else: Ray's local
  cluster starts agents as children of its raylet, and when the raylet dies they are
  re-parented to init and linger for a minute. The reaper is a small watchdog process
  (this file run as a script, standard library only) that reads the pids to watch on a
  pipe from its starter; when the pipe closes -- the starter exited or was killed --
  it terminates every watched process still alive (SIGTERM, then SIGKILL after a grace),
  with their descendants. The pipe's end is not inherited by other children (Python
  makes descriptors non-inheritable), so only the starter's death closes it.

:func:`descendants` lists a process's descendants from ``/proc`` (or ``ps`` elsewhere);
tests use it to prove that nothing survives a kill.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL = 0.5  # seconds between getppid() checks of the fallback watcher
REAP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when the reaper cleans up
FOLLOW_INTERVAL = 2.0  # seconds between looks for new descendants of followed processes


# -- in a child: follow the parent ----------------------------------------------
def _prctl_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def killed_with_starter() -> None:
    """``preexec_fn`` for :class:`subprocess.Popen`: the child gets SIGKILL when the thread
    that started it ends (Linux; elsewhere nothing). For children that run our own CLI
    commands and are not expected to outlive their starter (benchmarks, tests)."""
    _prctl_pdeathsig(signal.SIGKILL)


def die_with_parent(parent_pid: int | None = None, *, sig: int = signal.SIGKILL) -> None:
    """Make this process end when its parent does (see the module doc).

    ``parent_pid``: the pid the parent had when it started us (default: the current
    parent); if it is already gone, this process exits at once."""
    expected = parent_pid if parent_pid is not None else os.getppid()
    _prctl_pdeathsig(sig)
    if os.getppid() != expected:  # the parent died before the prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCH_INTERVAL)
            if os.getppid() != expected:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


# -- process table ---------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, str]]:
    """``{pid: (ppid, start stamp)}`` of every process; the stamp tells a reused pid apart."""
    table: dict[int, tuple[int, str]] = {}
    if os.path.isdir("/proc/self"):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            fields = raw.rsplit(b")", 1)[-1].split()
            table[int(name)] = (int(fields[1]), fields[19].decode())  # ppid, starttime
        return table
    try:  # pragma: no cover - non-Linux POSIX
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,lstart="], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return table
    for line in out.splitlines():  # pragma: no cover - non-Linux POSIX
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit():
            table[int(parts[0])] = (int(parts[1]), parts[2].strip())
    return table


def descendants(pid: int, table: dict[int, tuple[int, str]] | None = None) -> list[int]:
    """Pids of every live descendant of ``pid`` (children first)."""
    table = table if table is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for child, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(child)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), ()):
            out.append(child)
            todo.append(child)
    return out


def children(pid: int) -> list[int]:
    """Pids of the live children of ``pid``."""
    return [child for child, (ppid, _) in _proc_table().items() if ppid == pid]


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" when gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def start_stamp(pid: int) -> str | None:
    """The start stamp of ``pid`` (None when it is gone)."""
    if not os.path.isdir("/proc/self"):  # pragma: no cover - non-Linux POSIX
        entry = _proc_table().get(pid)
        return entry[1] if entry is not None else None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[19].decode()
    except (OSError, IndexError):
        return None


def alive(pids) -> list[int]:
    """Those of ``pids`` that still exist and are not zombies."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[-1].split()[0]
            if state not in (b"Z", b"X"):
                out.append(pid)
        except OSError:
            if not os.path.isdir("/proc/self"):  # pragma: no cover - non-Linux POSIX
                try:
                    os.kill(pid, 0)
                    out.append(pid)
                except OSError:
                    pass
    return out


# -- the reaper --------------------------------------------------------------------
class Reaper:
    """A watchdog process that terminates the processes it is told about when we end.

    ``watch(pids)`` adds processes; ``close()`` (or our death, whatever the cause) makes
    the watchdog terminate those still alive, with their descendants, and exit."""

    def __init__(self):
        self._proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.watched: set[int] = set()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def watch(self, pids) -> None:
        """Terminate ``pids`` (and their descendants) when this process ends."""
        lines = []
        with self._lock:
            for pid in pids:
                if pid in self.watched or pid == os.getpid():
                    continue
                stamp = start_stamp(pid)
                if stamp is not None:
                    self.watched.add(pid)
                    lines.append(f"{pid} {stamp}\n")
            if lines and self._proc.stdin is not None:
                try:
                    self._proc.stdin.write("".join(lines).encode())
                    self._proc.stdin.flush()
                except (BrokenPipeError, ValueError):
                    log.warning("the reaper process is gone; %d processes unwatched", len(lines))

    def follow(self, roots) -> None:
        """Watch ``roots`` and, until :meth:`close`, every descendant they start (looked for
        every :data:`FOLLOW_INTERVAL` seconds, and once now)."""
        roots = list(roots)

        def look() -> None:
            table = _proc_table()
            found = [r for r in roots if r in table]
            for r in list(found):
                found += descendants(r, table)
            self.watch(found)

        def loop() -> None:
            while not self._closed.wait(FOLLOW_INTERVAL):
                look()

        look()
        threading.Thread(target=loop, name="reaper-follow", daemon=True).start()

    def close(self, timeout: float = 10.0) -> None:
        """Terminate what is still watched now and wait for the watchdog to finish."""
        self._closed.set()
        with self._lock:
            if self._proc.stdin is not None and not self._proc.stdin.closed:
                try:
                    self._proc.stdin.close()
                except BrokenPipeError:
                    pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the reaper process did not finish in %.0f s", timeout)


def _reap(watched: dict[int, str]) -> None:
    table = _proc_table()
    targets = [pid for pid, stamp in watched.items()
               if pid in table and table[pid][1] == stamp]
    for pid in list(targets):
        targets.extend(p for p in descendants(pid, table) if p not in targets)
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + REAP_GRACE
    while alive(targets) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive(targets):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _reaper_main(starter: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the watchdog must outlive it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watched: dict[int, str] = {}
    done = threading.Event()

    def read() -> None:
        for line in sys.stdin.buffer:
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                watched[int(parts[0])] = parts[1].decode()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    # The pipe closes when the starter ends; its pid is watched too, in case a descriptor
    # of the pipe leaked into another process and keeps it open.
    while not done.wait(WATCH_INTERVAL) and os.getppid() == starter:
        pass
    _reap(dict(watched))


if __name__ == "__main__":
    _reaper_main(int(sys.argv[1]))
