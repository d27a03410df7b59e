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


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _machine() -> dict[str, float]:
    """Machine-wide CPU seconds by kind since boot (/proc/stat's first line; all processes, all cores)."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return {n: v / TICK for n, v in zip(names, fields, strict=True)}


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
        self.machine0: dict[str, float] = {}
        self.machine1: dict[str, float] = {}
        # Processes no role matches (neighbours' work included: this machine is shared), by command name.
        self.others: dict[int, tuple[str, float]] = {}
        self.seen_cmd: set[int] = set()

    def _pids(self) -> list[int]:
        out = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == self.uid:
                        out.append(int(entry.name))
        return out

    def unattributed(self) -> dict[str, float]:
        """Busy CPU of the whole machine in the window that no role accounts for, split by where it went:
        other processes by command name (neighbours included), kernel interrupt work (loopback TCP, softirq),
        and the rest (processes that lived and died between two samples, kernel threads of other users)."""
        out: dict[str, float] = {}
        for pid, (comm, cpu) in self.others.items():
            spent = cpu - self.base.get(pid, 0.0)
            if spent > 0:
                out[f"other process: {comm}"] = out.get(f"other process: {comm}", 0.0) + spent
        if self.machine0 and self.machine1:
            d = {k: self.machine1[k] - self.machine0[k] for k in self.machine0}
            busy = sum(v for k, v in d.items() if k not in ("idle", "iowait"))
            out["machine: irq + softirq (not in any process)"] = d["irq"] + d["softirq"]
            out["machine: busy total"] = busy
            out["machine: system (kernel, in processes)"] = d["system"]
            out["machine: user"] = d["user"] + d["nice"]
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
            if known is None and pid in self.others:
                self.others[pid] = (self.others[pid][0], cpu)
                continue
            role = known[0] if known else _role(pid)
            if role is not None and known is None and role in ("runtime", "supervisor") and pid not in self.base:
                # Started inside the window: a warm spare's (its imports are no part of this deploy on a real host,
                # where they run after it on the host's own CPU) or, without spares, the new release's.
                role += " (started in the window)"
            if role is not None:
                self.last[pid] = (role, cpu)
            else:
                self.others[pid] = (_comm(pid), cpu)

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self._sample()
        self.sampler_s = time.thread_time()  # this thread's own CPU, taken out of the client's figure

    def __enter__(self) -> CpuByRole:
        self.machine0 = _machine()
        self._sample(baseline=True)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.self0 = usage.ru_utime + usage.ru_stime
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._sample()
        self.machine1 = _machine()
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
        extra = self.unattributed()
        others = sorted(((k, v) for k, v in extra.items() if k.startswith("other")), key=lambda kv: -kv[1])
        for key, cpu in others[:6]:
            lines.append(f"    {key[:34]:<34} {cpu:7.2f} {cpu / hosts:9.3f}")
        if "machine: busy total" in extra:
            busy = extra["machine: busy total"]
            rest = busy - total - sum(v for _, v in others) - extra["machine: irq + softirq (not in any process)"]
            for key in ("machine: busy total", "machine: user", "machine: system (kernel, in processes)",
                        "machine: irq + softirq (not in any process)"):  # fmt: skip
                lines.append(f"    {key[:34]:<34} {extra[key]:7.2f} {extra[key] / hosts:9.3f}")
            lines.append(f"    {'machine: not seen by the sampler':<34} {rest:7.2f} {rest / hosts:9.3f}")
        return "\n".join(lines)


class HostsCgroup:
    """A cgroup (v1 ``cpuacct``) holding the benchmark's sshd hosts and everything they start (sessions, agents,
    sftp-servers, supervisors, runtimes, spares): its CPU counter includes processes that lived and died between
    two samples of :class:`CpuByRole`, and none of the neighbours' work. ``None``-safe: where cgroups cannot be
    made (no permission, cgroup v2 only) :attr:`usable` is False and :meth:`cpu_s` returns None."""

    ROOT = Path("/sys/fs/cgroup/cpuacct")

    def __init__(self) -> None:
        self.path = self.ROOT / f"modeldeck-bench-{os.getpid()}"
        self.usable = False
        with contextlib.suppress(OSError):
            self.path.mkdir()
            self.usable = True

    def add(self, pid: int) -> None:
        if self.usable:
            with contextlib.suppress(OSError):
                (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def cpu_s(self) -> tuple[float, float] | None:
        """(user, system) CPU seconds of everything that ran in the cgroup so far."""
        if not self.usable:
            return None
        try:
            user = int((self.path / "cpuacct.usage_user").read_text()) / 1e9
            system = int((self.path / "cpuacct.usage_sys").read_text()) / 1e9
        except (OSError, ValueError):
            return None
        return user, system

    def close(self) -> None:
        """Move whatever is left to the root cgroup and remove this one (best effort)."""
        if not self.usable:
            return
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.ROOT / "cgroup.procs").write_text(f"{pid}\n")
        with contextlib.suppress(OSError):
            self.path.rmdir()
