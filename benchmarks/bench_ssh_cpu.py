"""CPU seconds per process role during an SSH deploy (agent, supervisor, runtime, sshd, sftp-server, client).

Used by ``bench_ssh_push.py --cpu-table``: a sampler thread reads ``/proc/*/stat`` of this user's processes
every 20 ms and keeps each process's last utime + stime; a process that exits between two samples loses at
most one interval of its tail (a few ms). The client (this process, paramiko included) is counted with
``RUSAGE_SELF`` minus the sampler thread's own CPU. Only processes whose command line matches a role are
counted, so neighbours' work is left out.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from pathlib import Path

ROLES = (
    ("agent", b"modeldeck.core.targets.agent"),
    ("supervisor", b"modeldeck.core.targets.supervisor"),
    ("runtime", b"modeldeck.core.runtime"),
    ("sftp-server", b"sftp-server"),
    ("sshd", b"sshd"),
    ("login shell", b"sh\0-c"),
)
TICK = os.sysconf("SC_CLK_TCK")


def _role(pid: int) -> str | None:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    for role, marker in ROLES:
        if marker in cmdline:
            return role
    return None


def _cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, ValueError, IndexError):
        return None


class CpuByRole:
    """Context manager: CPU seconds spent by each role while it was open (processes alive before count by delta)."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.uid = os.getuid()
        self.base: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.self0 = 0.0
        self.client_s = 0.0
        self.sampler_s = 0.0

    def _pids(self) -> list[int]:
        out = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == self.uid:
                        out.append(int(entry.name))
        return out

    def _sample(self, *, baseline: bool = False) -> None:
        for pid in self._pids():
            if pid == os.getpid():
                continue
            cpu = _cpu(pid)
            if cpu is None:
                continue
            if baseline:
                self.base[pid] = cpu
                continue
            known = self.last.get(pid)
            role = known[0] if known else _role(pid)
            if role is not None:
                self.last[pid] = (role, cpu)

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self._sample()
        self.sampler_s = time.thread_time()  # this thread's own CPU, taken out of the client's figure

    def __enter__(self) -> CpuByRole:
        self._sample(baseline=True)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.self0 = usage.ru_utime + usage.ru_stime
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._sample()
        self.stop.set()
        self.thread.join(5)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.client_s = usage.ru_utime + usage.ru_stime - self.self0 - self.sampler_s

    def table(self) -> dict[str, tuple[float, int]]:
        """role -> (CPU seconds, processes)."""
        out: dict[str, tuple[float, int]] = {"client (paramiko, this process)": (self.client_s, 1)}
        for pid, (role, cpu) in self.last.items():
            spent = cpu - self.base.get(pid, 0.0)
            total, count = out.get(role, (0.0, 0))
            out[role] = (total + spent, count + 1)
        return out

    def text(self, hosts: int) -> str:
        rows = sorted(self.table().items(), key=lambda kv: -kv[1][0])
        total = sum(v[0] for v in self.table().values())
        lines = [f"    {'role':<34} {'CPU s':>7} {'per host':>9} {'procs':>6}"]
        for role, (cpu, count) in rows:
            lines.append(f"    {role:<34} {cpu:7.2f} {cpu / hosts:9.3f} {count:6d}")
        lines.append(f"    {'total':<34} {total:7.2f} {total / hosts:9.3f}")
        return "\n".join(lines)
