"""Push a 20 MB bundle to 8 SSH hosts: ModelDeck vs Ansible vs bare parallel transfers, in one run.

Run: ``python benchmarks/bench_ssh_push.py [--hosts 8] [--mb 20] [--skip-ansible] [--skip-modeldeck]``.

Starts ``--hosts`` real OpenSSH servers on 127.0.0.N (as tests/fixtures/sshd.py does: own host key,
own deploy root), writes a hand-made ONNX MLP bundle whose weights total ``--mb`` MB (random
float32: incompressible, like real weights), then measures, all with 8-way parallelism:

1. ModelDeck (``deploy_many`` over SSH targets, forks=8): the runtime install once (separately),
   a first deploy (transfer + verify + switch + health gate), and a no-change redeploy.
2. ``ansible-playbook`` (forks=8) doing the same copy + restart (kill the old runtime, start the
   new one with nohup from the same Python, ``wait_for`` its port) with Ansible's defaults, and
   tuned (pipelining on, compression off, ControlPersist). Host keys are checked against a
   generated known_hosts file (StrictHostKeyChecking=yes), never disabled.
3. Bare transfers of the same bytes: ``scp -r`` x8 in parallel, and paramiko SFTP x8 in parallel
   (255 KiB pipelined writes, AES-GCM).

Prints every figure and the ratios. Loopback only; every subprocess has a timeout; all sshd and
runtime processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paramiko  # noqa: E402

from benchmarks.bench_ssh_cpu import CpuByRole, HostsCgroup  # noqa: E402
from tests.fixtures.runtime import _write_xy_bundle  # noqa: E402
from tests.fixtures.sshd import SshHost, _free_port, keygen  # noqa: E402

HOSTS_CGROUP = HostsCgroup()  # every "host"'s processes (exited ones included) for the CPU accounting
PYTHON = sys.executable  # the runtime Python Ansible starts (ModelDeck installs its own venv on the host)
SFTP_CHUNK = 255 * 1024  # 256 KiB makes OpenSSH's sftp-server drop the connection
GCM = "aes128-gcm@openssh.com"
ANSIBLE_PORT = 18080
STEP_TIMEOUT_S = 300


# -- fixtures: hosts and bundle -------------------------------------------------------------------
def make_big_bundle(out: Path, megabytes: float, seed: int = 0) -> Path:
    """An X[N,4] -> Y[N,1] MLP whose second weight matrix makes the bundle ``megabytes`` large."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hidden = 2048
    width = max(1, int(megabytes * 1e6 / 4 / hidden))
    w1 = numpy_helper.from_array((rng.normal(size=(4, hidden)) / 2).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.normal(size=(hidden, width)) / np.sqrt(hidden)).astype(np.float32), "w2")
    w3 = numpy_helper.from_array((rng.normal(size=(width, 1)) / np.sqrt(width)).astype(np.float32), "w3")
    nodes = [
        helper.make_node("MatMul", ["X", "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "w3"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "big_mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        [w1, w2, w3],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _write_xy_bundle(out, model, "big-mlp", example_rows=2, task="regression")


def bundle_bytes(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


@contextlib.contextmanager
def ssh_hosts(base: Path, count: int) -> Iterator[tuple[list[SshHost], Path]]:
    """``count`` sshd hosts on 127.0.0.N plus a known_hosts file naming exactly their keys."""
    client_key = keygen(base / "id_ed25519")
    hosts: list[SshHost] = []
    try:
        for i in range(count):
            workdir = base / f"host{i + 1}"
            workdir.mkdir()
            ip = f"127.0.0.{50 + i}"
            host = SshHost(
                ip=ip,
                port=_free_port(ip),
                user=getpass.getuser(),
                client_key=client_key,
                deploy_root=workdir / "deploy",
                host_key=keygen(workdir / "ssh_host_ed25519_key"),
                workdir=workdir,
            )
            host.deploy_root.mkdir()
            (workdir / "authorized_keys").write_text(Path(str(client_key) + ".pub").read_text())
            host.start()
            if host.proc is not None:
                HOSTS_CGROUP.add(host.proc.pid)
            hosts.append(host)
        known = base / "known_hosts"
        known.write_text("".join(h.known_hosts_line + "\n" for h in hosts))
        yield hosts, known
    finally:
        for host in hosts:
            host.stop()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def busy_cpu_s() -> float:
    """CPU seconds this machine has been busy (all processes, all cores: neighbours' work included)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def runtime_phases(hosts: list[SshHost], name: str) -> str:
    """Median start-up phases of the serving runtimes (seconds since each runtime process started)."""
    import statistics

    marks: dict[str, list[float]] = {}
    for h in hosts:
        for ready in (h.deploy_root / "deployments" / name / "run").glob("*.ready.json"):
            if ready.name.startswith("spare."):  # the idle spare is no release
                continue
            with contextlib.suppress(OSError, ValueError):
                for phase, t in (json.loads(ready.read_text()).get("phases_s") or {}).items():
                    marks.setdefault(phase, []).append(float(t))
    return ", ".join(f"{phase} {statistics.median(ts):.2f}" for phase, ts in marks.items())


def wait_for_spares(hosts: list[SshHost], name: str, timeout_s: float = 120.0) -> float:
    """Wait until every host's warm spare has imported its stack; seconds waited.

    A real host's spare starts on that host's own CPU after a deploy; here 8 "hosts" share 2 cores, so timing
    the next deploy while the spares still import would charge their start-up to it.
    """
    t0 = time.perf_counter()
    pending = list(hosts)
    while pending and time.perf_counter() - t0 < timeout_s:
        pending = [
            h for h in pending if not (h.deploy_root / "deployments" / name / "run" / "spare.ready.json").is_file()
        ]
        if pending:
            time.sleep(0.02)
    if pending:
        raise RuntimeError(f"{len(pending)} host(s) had no ready warm spare after {timeout_s:g} s")
    return time.perf_counter() - t0


def stop_spares(hosts: list[SshHost], name: str) -> None:
    """SIGTERM every host's idle spare and wait for it, so a timed deploy without spares does not pay for that."""
    pids = []
    for h in hosts:
        with contextlib.suppress(OSError, ValueError):
            pid = int((h.deploy_root / "deployments" / name / "run" / "spare.pid").read_text())
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)
        time.sleep(0.02)


def spare_rss_mib(hosts: list[SshHost], name: str) -> float | None:
    """Median resident memory (MiB) of one idle spare: its supervisor plus its runtime."""
    import statistics

    sizes = []
    for h in hosts:
        try:
            sup = int((h.deploy_root / "deployments" / name / "run" / "spare.pid").read_text())
            pids = [sup, *(int(c) for c in Path(f"/proc/{sup}/task/{sup}/children").read_text().split())]
            rss = 0
            for pid in pids:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            sizes.append(rss / 1024)
        except (OSError, ValueError):
            continue
    return statistics.median(sizes) if sizes else None


# -- bare transfers -------------------------------------------------------------------------------
def ssh_options(known: Path) -> list[str]:
    return ["-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]


def scp_all(hosts: list[SshHost], known: Path, bundle: Path, tag: str) -> float:
    """``scp -r`` the bundle to every host at once; wall time until the last one finishes."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                "scp",
                "-q",
                "-r",
                *ssh_options(known),
                "-i",
                str(h.client_key),
                "-P",
                str(h.port),
                str(bundle),
                f"{h.user}@{h.ip}:{h.deploy_root}/{tag}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for h in hosts
    ]
    for p in procs:
        _, err = p.communicate(timeout=STEP_TIMEOUT_S)
        if p.returncode != 0:
            raise RuntimeError(f"scp failed: {err.decode(errors='replace')}")
    return time.perf_counter() - t0


def sftp_push(host: SshHost, known: Path, bundle: Path, tag: str, cipher: str | None = GCM) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host.ip,
        port=host.port,
        username=host.user,
        key_filename=str(host.client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
        disabled_algorithms={"ciphers": [c for c in paramiko.Transport._preferred_ciphers if c != cipher]}
        if cipher
        else None,
    )
    try:
        sftp = client.open_sftp()
        chan = sftp.get_channel()
        assert chan is not None
        chan.settimeout(60)
        dest = f"{host.deploy_root}/{tag}"
        sftp.mkdir(dest)
        for path in sorted(bundle.rglob("*")):
            rel = path.relative_to(bundle).as_posix()
            if path.is_dir():
                sftp.mkdir(f"{dest}/{rel}")
                continue
            with path.open("rb") as src, sftp.open(f"{dest}/{rel}", "wb") as fh:
                fh.set_pipelined(True)
                while chunk := src.read(SFTP_CHUNK):
                    fh.write(chunk)
        sftp.close()
    finally:
        client.close()


def paramiko_all(hosts: list[SshHost], known: Path, bundle: Path, tag: str, cipher: str | None = GCM) -> float:
    errors: list[BaseException] = []

    def one(h: SshHost) -> None:
        try:
            sftp_push(h, known, bundle, tag, cipher)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(STEP_TIMEOUT_S)
    if errors:
        raise RuntimeError(f"paramiko push failed: {errors[0]!r}") from errors[0]
    return time.perf_counter() - t0


# -- Ansible --------------------------------------------------------------------------------------
PLAYBOOK = """\
- hosts: fleet
  gather_facts: false
  tasks:
    - name: copy the bundle into a new release
      ansible.builtin.copy:
        src: "{{ bundle_dir }}/"
        dest: "{{ deploy_root }}/ansible/releases/{{ release_id }}/"
        mode: preserve
    - name: stop the old runtime
      ansible.builtin.shell: |
        pidfile={{ deploy_root }}/ansible/runtime.pid
        [ -f "$pidfile" ] || exit 0
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || exit 0
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null; exit 0
    - name: start the new release
      ansible.builtin.shell: |
        cd {{ deploy_root }}/ansible
        setsid nohup {{ runtime_python }} -m modeldeck.core.runtime serve --host {{ ansible_host }} \\
          --port {{ serve_port }} releases/{{ release_id }} </dev/null >runtime.log 2>&1 &
        echo $! > runtime.pid
    - name: wait until it listens
      ansible.builtin.wait_for:
        host: "{{ ansible_host }}"
        port: "{{ serve_port }}"
        timeout: 120
"""


def write_ansible(base: Path, hosts: list[SshHost], known: Path, bundle: Path, *, tuned: bool) -> Path:
    name = "tuned" if tuned else "default"
    d = base / f"ansible-{name}"
    d.mkdir(exist_ok=True)
    lines = ["[fleet]"]
    for i, h in enumerate(hosts, 1):
        lines.append(
            f"h{i} ansible_host={h.ip} ansible_port={h.port} ansible_user={h.user} "
            f"ansible_ssh_private_key_file={h.client_key} deploy_root={h.deploy_root}"
        )
    lines += [
        "",
        "[fleet:vars]",
        "ansible_python_interpreter=/usr/bin/python3",
        # appended to ssh_args, so the defaults below stay Ansible's own
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'",
        f"bundle_dir={bundle}",
        f"runtime_python={PYTHON}",
        f"serve_port={ANSIBLE_PORT}",
        "",
    ]
    (d / "inventory.ini").write_text("\n".join(lines))
    (d / "playbook.yml").write_text(PLAYBOOK)
    cfg = [
        "[defaults]",
        "forks = 8",
        "host_key_checking = True",
        "retry_files_enabled = False",
        "interpreter_python = /usr/bin/python3",
        f"local_tmp = {d / 'tmp'}",
        "",
        "[ssh_connection]",
        f"control_path_dir = {d / 'cp'}",
    ]
    if tuned:
        cfg += [
            "pipelining = True",
            # Ansible's default ssh_args are "-C -o ControlMaster=auto -o ControlPersist=60s": drop -C
            f"ssh_args = -o Compression=no -c {GCM} -o ControlMaster=auto -o ControlPersist=60s",
        ]
    (d / "ansible.cfg").write_text("\n".join(cfg) + "\n")
    return d


def run_ansible(d: Path, release_id: str) -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(d / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    cmd = [
        "ansible-playbook",
        "-i",
        str(d / "inventory.ini"),
        str(d / "playbook.yml"),
        "-e",
        f"release_id={release_id}",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, cwd=d)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(
            f"ansible-playbook failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        )
    return elapsed


def stop_ansible_runtimes(hosts: list[SshHost]) -> None:
    for h in hosts:
        pidfile = h.deploy_root / "ansible" / "runtime.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)


def stop_control_masters(base: Path) -> None:
    """Ask each ControlPersist master Ansible left behind to exit (by its socket, nothing broader)."""
    for sock in base.glob("ansible-*/cp/*"):
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "placeholder"],
            capture_output=True,
            timeout=10,
            check=False,
        )


# -- ModelDeck ------------------------------------------------------------------------------------
@dataclass
class ModelDeckFigures:
    install_s: float | None = None
    first_s: float | None = None
    redeploy_s: float | None = None
    first_outcomes: str = ""
    redeploy_outcomes: str = ""
    bytes_first: int | None = None
    bytes_redeploy: int | None = None
    first_steps: str = ""
    redeploy_steps: str = ""
    known_s: float | None = None  # a new 20 MB bundle to the same hosts: facts cached, one agent command each
    known_outcomes: str = ""
    known_steps: str = ""
    known_cpu_s: float | None = None  # machine-wide busy CPU seconds during the known-hosts deploy
    known_phases: str = ""
    known_cpu_table: str = ""  # CPU seconds per process role (--cpu-table)
    spare_waits: list[float] = field(default_factory=list)  # seconds the benchmark waited for the hosts' spares
    spare_rss_mib: float | None = None
    ab_rows: list[str] = field(default_factory=list)  # --ab: one line per round
    note: str = ""


def open_ssh_targets(hosts: list[SshHost], known: Path, base: Path) -> tuple[dict[str, Any], Callable[[], None]]:
    """SSH targets trusting exactly the generated known_hosts, and a function installing the runtime on all."""
    from modeldeck.core.inventory.known_hosts import KnownHosts
    from modeldeck.core.targets.base import no_progress
    from modeldeck.core.targets.runtime_dist import runtime_version
    from modeldeck.core.targets.ssh.connection import SshEndpoint
    from modeldeck.core.targets.ssh.target import SshTarget

    from tests.fixtures.ssh_target import wheelhouse_dir

    trust = KnownHosts(base / "pins", [known])
    # The runtime's version is a hash of its source files; pin it for the run, so an edit to the shared
    # working tree between the install and the deploys does not trigger a second install mid-benchmark.
    version = runtime_version()
    targets = {
        f"h{i}": SshTarget(
            SshEndpoint(h.ip, h.port, h.user, identity_files=(h.client_key,), allow_agent=False),
            str(h.deploy_root),
            known_hosts=trust,
            runtime_source="wheelhouse",
            wheelhouse_dir=wheelhouse_dir(),
            bind_host=h.ip,
            cache_dir=base / "ssh-cache",
            systemd=False,
        )
        for i, h in enumerate(hosts, 1)
    }
    for target in targets.values():
        target._runtime_version = lambda: version  # type: ignore[method-assign]

    def install() -> None:
        def one(target: Any) -> None:
            with target.connect() as conn:  # the deploy would do this on first contact; timed apart here
                target._ensure_runtime(conn, target.facts(conn), no_progress, None)

        errors: list[BaseException] = []

        def guarded(target: Any) -> None:
            try:
                one(target)
            except BaseException as exc:  # reported after the join
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(t,)) for t in targets.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
        if errors:
            raise RuntimeError(f"runtime install failed: {errors[0]!r}")

    return targets, install


class SentBytes:
    """Bytes each host reported sending (the SSH target's "sent N KiB" lines) and when each step began."""

    def __init__(self) -> None:
        self.kib: dict[str, int] = {}
        self.t0 = time.perf_counter()
        self.marks: dict[str, list[tuple[str, float]]] = {}

    def __call__(self, event: Any) -> None:
        host = str(event.host)
        marks = self.marks.setdefault(host, [])
        if not marks or marks[-1][0] != event.step:
            marks.append((event.step, time.perf_counter() - self.t0))
        if event.step == "transfer" and event.message.startswith("sent "):
            self.kib[host] = int(event.message.split()[1])

    def total(self) -> int:
        return sum(self.kib.values()) * 1024

    def breakdown(self) -> str:
        """Median seconds spent in each step (from its first event to the next step's), over the hosts."""
        import statistics

        spans: dict[str, list[float]] = {}
        order: list[str] = []
        for marks in self.marks.values():
            for (step, t), (_, t_next) in itertools.pairwise(marks):
                spans.setdefault(step, []).append(t_next - t)
                if step not in order:
                    order.append(step)
        return ", ".join(f"{step} {statistics.median(spans[step]):.2f}" for step in order)


def _cached_runtime() -> Path | None:
    from modeldeck.core.targets.runtime_dist import runtime_version

    from tests.fixtures.ssh_target import CACHE

    seed = CACHE / "ssh-runtime" / runtime_version()
    return seed if (seed / "runtime" / runtime_version() / "installed.json").is_file() else None


def modeldeck_push(
    hosts: list[SshHost],
    known: Path,
    bundle: Path,
    base: Path,
    *,
    reuse_runtime: bool = False,
    second: Path | None = None,
    cpu_table: bool = False,
    warm_spare: bool = True,
    ab_rounds: int = 0,
    fresh_bundle: Callable[[], Path] | None = None,
    ab_mode: str = "spare",
) -> ModelDeckFigures:
    """Install the runtime (timed once), then deploy the bundle to all hosts twice (first contact, no-change),
    then ``second`` (other weights) to the now known hosts."""
    from modeldeck.core.targets.base import DeployOptions, HealthGate
    from modeldeck.core.targets.fleet import deploy_many

    figures = ModelDeckFigures()
    targets, install = open_ssh_targets(hosts, known, base)
    try:
        seed = _cached_runtime() if reuse_runtime else None
        if seed is not None:
            for h in hosts:  # a hard-linked copy of the tests' runtime install: "already installed"
                subprocess.run(
                    ["cp", "-al", str(seed / "runtime"), str(h.deploy_root / "runtime")], check=True, timeout=60
                )
        else:
            figures.install_s, _ = timed(install)
        options = DeployOptions(name="bench", health=HealthGate(start_period_s=120), extra={"warm_spare": warm_spare})
        sent = SentBytes()
        figures.first_s, first = timed(lambda: deploy_many(targets, bundle, options, forks=8, progress=sent))
        figures.first_outcomes = _outcomes(first)
        figures.bytes_first = sent.total()
        figures.first_steps = sent.breakdown()
        if warm_spare:
            figures.spare_waits.append(wait_for_spares(hosts, "bench"))
            figures.spare_rss_mib = spare_rss_mib(hosts, "bench")
        if all(t.resident_agent for t in targets.values()):
            wait_for_resident(hosts, next(iter(targets.values()))._runtime_version())
        sent = SentBytes()
        figures.redeploy_s, again = timed(lambda: deploy_many(targets, bundle, options, forks=8, progress=sent))
        figures.redeploy_outcomes = _outcomes(again)
        figures.bytes_redeploy = sent.total()
        figures.redeploy_steps = sent.breakdown()
        if second is not None:
            sent = SentBytes()
            cpu0 = busy_cpu_s()
            with CpuByRole() if cpu_table else contextlib.nullcontext() as by_role:
                figures.known_s, known_result = timed(
                    lambda: deploy_many(targets, second, options, forks=8, progress=sent)
                )
            figures.known_cpu_s = busy_cpu_s() - cpu0
            if by_role is not None:
                figures.known_cpu_table = by_role.text(len(hosts))
            figures.known_outcomes = f"{_outcomes(known_result)}; bytes sent {sent.total()}"
            figures.known_steps = sent.breakdown()
            figures.known_phases = runtime_phases(hosts, "bench")
            if warm_spare:
                figures.spare_waits.append(wait_for_spares(hosts, "bench"))
        if ab_mode in AB_VARIANTS:
            assert fresh_bundle is not None
            for r in range(ab_rounds):
                figures.ab_rows.extend(resident_round(ab_mode, r, hosts, known, bundle, targets, options, fresh_bundle))
                print("\n".join(figures.ab_rows[-3:]), flush=True)
            ab_rounds = 0
        for r in range(ab_rounds):
            assert fresh_bundle is not None
            # Each timed deploy sends new 20 MB weights; "off" runs today's path (and leaves no spare), the untimed
            # deploy in between starts the spares again, and the benchmark waits for them before the "on" deploy.
            off = replace(options, extra={"warm_spare": False})
            b_off, b_between, b_on = fresh_bundle(), fresh_bundle(), fresh_bundle()  # written before any timing
            stop_spares(hosts, "bench")
            with CpuByRole() as cpu_off:
                t_off, res_off = timed(lambda b=b_off, o=off: deploy_many(targets, b, o, forks=8))
            deploy_many(targets, b_between, options, forks=8)
            waited = wait_for_spares(hosts, "bench")
            load = os.getloadavg()[0]
            hosts0 = HOSTS_CGROUP.cpu_s()
            with CpuByRole() as cpu_on:
                t_on, res_on = timed(lambda b=b_on: deploy_many(targets, b, options, forks=8))
            hosts1 = HOSTS_CGROUP.cpu_s()
            waited_after = wait_for_spares(hosts, "bench")
            bare = paramiko_all(hosts, known, bundle, f"ab{r}")
            figures.ab_rows.append(
                f"round {r + 1}: spare {t_on:.2f} s ({_outcomes(res_on)}), "
                f"no spare {t_off:.2f} s ({_outcomes(res_off)}), "
                f"bare paramiko x{len(hosts)} {bare:.2f} s -> {t_on / bare:.2f}x / {t_off / bare:.2f}x; spares ready "
                f"{waited:.2f} s after the deploy that started them ({waited_after:.2f} s after the timed one); "
                f"load {load:.2f}"
            )
            if cpu_table:
                n = len(hosts)
                figures.ab_rows.append(
                    "  CPU per host (role: spare / no spare): "
                    + ", ".join(
                        f"{role.split(' ')[0]} {cpu_on.table().get(role, (0.0, 0))[0] / n:.3f} / "
                        f"{cpu_off.table().get(role, (0.0, 0))[0] / n:.3f}"
                        for role in sorted(set(cpu_on.table()) | set(cpu_off.table()))
                    )
                    + f"; total {sum(v[0] for v in cpu_on.table().values()) / n:.3f} / "
                    f"{sum(v[0] for v in cpu_off.table().values()) / n:.3f}"
                )
            print("\n".join(figures.ab_rows[-2 if cpu_table else -1 :]), flush=True)
            if cpu_table:
                print(f"  round {r + 1}, with the spare, CPU by role and machine-wide:\n{cpu_on.text(len(hosts))}")
                if hosts0 is not None and hosts1 is not None:
                    user, system = hosts1[0] - hosts0[0], hosts1[1] - hosts0[1]
                    sampled = sum(v[0] for k, v in cpu_on.table().items() if not k.startswith("client"))
                    print(
                        f"    hosts' cgroup (all their processes, exited ones included): user {user:.2f} + system "
                        f"{system:.2f} = {user + system:.2f} CPU-s ({(user + system) / len(hosts):.3f} per host); "
                        f"the sampler saw {sampled:.2f} of it"
                    )
                bare0 = HOSTS_CGROUP.cpu_s()
                self_cpu0 = time.process_time()
                bare_again = paramiko_all(hosts, known, bundle, f"ab{r}-cpu")
                bare1 = HOSTS_CGROUP.cpu_s()
                if bare0 is not None and bare1 is not None:
                    hs = bare1[0] + bare1[1] - bare0[0] - bare0[1]
                    print(
                        f"    bare paramiko x{len(hosts)} ({bare_again:.2f} s): hosts' cgroup {hs:.2f} CPU-s, client "
                        f"{time.process_time() - self_cpu0:.2f} CPU-s"
                    )
    finally:  # also after a failure: no runtime, supervisor or spare outlives the benchmark
        for target in targets.values():
            with contextlib.suppress(Exception):
                target.undeploy("bench")
        from tests.fixtures.ssh_target import kill_runtimes

        for h in hosts:
            kill_runtimes(h.deploy_root)
    return figures


def wait_for_resident(hosts: list[SshHost], version: str, timeout_s: float = 30.0) -> float:
    """Wait until every host's resident agent listens (started after a push; on a real host, on its own CPU)."""
    t0 = time.perf_counter()
    pending = list(hosts)
    while pending and time.perf_counter() - t0 < timeout_s:
        pending = [h for h in pending if not (h.deploy_root / "runtime" / version / "agent.sock").exists()]
        if pending:
            time.sleep(0.02)
    if pending:
        raise RuntimeError(f"{len(pending)} host(s) had no resident agent after {timeout_s:g} s")
    return time.perf_counter() - t0


def resident_round(
    mode: str,
    r: int,
    hosts: list[SshHost],
    known: Path,
    bundle: Path,
    targets: dict[str, Any],
    options: Any,
    fresh_bundle: Callable[[], Path],
) -> list[str]:
    """One interleaved round of ``AB_VARIANTS[mode]``, all with warm spares. Each variant: an untimed deploy
    (leaves spares), wait for the spares (and the resident agents), then the timed deploy of new weights; the bare
    transfer last. The order alternates between rounds."""
    from modeldeck.core.targets.fleet import deploy_many

    version = next(iter(targets.values()))._runtime_version()
    variants = list(AB_VARIANTS[mode])
    if r % 2:
        variants.reverse()
    rows: list[str] = []
    times: dict[str, float] = {}
    for label, settings in variants:
        for t in targets.values():
            for key, value in settings.items():
                setattr(t, key, value)
        warm, timed_bundle = fresh_bundle(), fresh_bundle()
        deploy_many(targets, warm, options, forks=8)
        wait_for_spares(hosts, "bench")
        if settings["resident_agent"]:
            wait_for_resident(hosts, version)
        time.sleep(1.0)  # let the old releases' drains and the spares' last imports finish
        load = os.getloadavg()[0]
        hosts0 = HOSTS_CGROUP.cpu_s()
        busy0 = busy_cpu_s()
        with CpuByRole() as cpu:
            elapsed, res = timed(lambda b=timed_bundle: deploy_many(targets, b, options, forks=8))
        hosts1 = HOSTS_CGROUP.cpu_s()
        busy = busy_cpu_s() - busy0
        times[label] = elapsed
        n = len(hosts)
        hosts_cpu = (hosts1[0] + hosts1[1] - hosts0[0] - hosts0[1]) if hosts0 and hosts1 else float("nan")
        rows.append(
            f"round {r + 1} {label}: {elapsed:.2f} s ({_outcomes(res)}), load {load:.2f}; CPU-s per host: hosts' "
            f"cgroup {hosts_cpu / n:.3f}, client {cpu.client_s / n:.3f}; machine busy {busy:.2f} s; by role: "
            + ", ".join(
                f"{role.split(' ')[0]}{' (new)' if 'started in' in role else ''} {v[0] / n:.3f}"
                for role, v in sorted(cpu.table().items())
            )
        )
        wait_for_spares(hosts, "bench")
    hosts0 = HOSTS_CGROUP.cpu_s()
    busy0 = busy_cpu_s()
    cpu0 = time.process_time()
    bare = paramiko_all(hosts, known, bundle, f"ab{r}")
    hosts1 = HOSTS_CGROUP.cpu_s()
    hosts_cpu = (hosts1[0] + hosts1[1] - hosts0[0] - hosts0[1]) if hosts0 and hosts1 else float("nan")
    rows.append(
        f"round {r + 1} bare paramiko x{len(hosts)}: {bare:.2f} s; CPU-s per host: hosts' cgroup "
        f"{hosts_cpu / len(hosts):.3f}, client {(time.process_time() - cpu0) / len(hosts):.3f}; machine busy "
        f"{busy_cpu_s() - busy0:.2f} s -> " + ", ".join(f"{k} {v / bare:.2f}x" for k, v in times.items())
    )
    return rows


# --ab-mode: what the interleaved rounds compare (all with warm spares). "resident": this session's path (resident
# agent, files through its channel) vs the one before it (an exec'd agent per command, files by SFTP); "stream":
# files through the agent's channel vs SFTP, both with the resident agent.
AB_VARIANTS: dict[str, tuple[tuple[str, dict[str, bool]], ...]] = {
    "resident": (
        ("resident+stream", {"resident_agent": True, "stream_upload": True}),
        ("exec+sftp", {"resident_agent": False, "stream_upload": False}),
    ),
    "stream": (
        ("stream", {"resident_agent": True, "stream_upload": True}),
        ("sftp", {"resident_agent": True, "stream_upload": False}),
    ),
}


def _outcomes(result: Any) -> str:
    from collections import Counter

    counts = Counter(h.outcome for h in result.hosts)
    text = ", ".join(f"{n}x {o}" for o, n in counts.items())
    failed = [f"{h.host}: {h.message}" for h in result.hosts if not h.ok][:2]
    return text + (f" ({'; '.join(failed)})" if failed else "")


# -- main -----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--skip-ansible", action="store_true")
    parser.add_argument("--skip-modeldeck", action="store_true")
    parser.add_argument(
        "--reuse-runtime",
        action="store_true",
        help="copy the tests' cached runtime install onto the hosts instead of installing (and timing) it",
    )
    parser.add_argument(
        "--cpu-table", action="store_true", help="CPU seconds per process role during the known-hosts deploy"
    )
    parser.add_argument(
        "--no-warm-spare", action="store_true", help="deploy without the hosts' warm spare runtimes (today's path)"
    )
    parser.add_argument(
        "--ab", type=int, default=0, metavar="N", help="then N interleaved rounds: new weights with / without the spare"
    )
    parser.add_argument(
        "--ab-mode",
        choices=("spare", "resident", "stream"),
        default="spare",
        help="what --ab compares: warm spare on/off; (spares on) resident agent + streamed files vs an exec'd agent "
        "+ SFTP; streamed files vs SFTP (resident agent on)",
    )
    args = parser.parse_args()

    load_before = os.getloadavg()
    print(
        f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} ({os.cpu_count()} cpus)"
    )
    base = Path(tempfile.mkdtemp(prefix="bench-ssh-push-"))
    figures: dict[str, float] = {}
    md = ModelDeckFigures(note="skipped")
    try:
        bundle = make_big_bundle(base / "bundle", args.mb)
        size = bundle_bytes(bundle)
        print(f"bundle: {size / 1e6:.1f} MB in {len(list(bundle.iterdir()))} files; {args.hosts} hosts")
        with ssh_hosts(base, args.hosts) as (hosts, known):
            print(f"sshd hosts: {', '.join(f'{h.ip}:{h.port}' for h in hosts)}")

            if not args.skip_modeldeck:
                second = make_big_bundle(base / "bundle-2", args.mb, seed=1)
                seeds = itertools.count(100)

                def fresh_bundle() -> Path:
                    seed = next(seeds)
                    shutil.rmtree(base / f"bundle-ab-{seed - 3}", ignore_errors=True)  # keep the disk use bounded
                    return make_big_bundle(base / f"bundle-ab-{seed}", args.mb, seed=seed)

                md = modeldeck_push(
                    hosts,
                    known,
                    bundle,
                    base,
                    reuse_runtime=args.reuse_runtime,
                    second=second,
                    cpu_table=args.cpu_table,
                    warm_spare=not args.no_warm_spare,
                    ab_rounds=args.ab,
                    fresh_bundle=fresh_bundle,
                    ab_mode=args.ab_mode,
                )
                if md.first_s is not None:
                    figures["modeldeck"] = md.first_s
                    figures["modeldeck-redeploy"] = md.redeploy_s or 0.0
                if md.known_s is not None:
                    figures["modeldeck-known"] = md.known_s

            figures["scp"] = scp_all(hosts, known, bundle, "scp")
            cpu0 = busy_cpu_s()
            figures["paramiko"] = paramiko_all(hosts, known, bundle, "paramiko")
            paramiko_cpu_s = busy_cpu_s() - cpu0
            figures["paramiko-default-cipher"] = paramiko_all(hosts, known, bundle, "paramiko-ctr", cipher=None)

            if not args.skip_ansible:
                try:
                    for tuned in (False, True):
                        d = write_ansible(base, hosts, known, bundle, tuned=tuned)
                        key = "ansible-tuned" if tuned else "ansible-default"
                        figures[key] = run_ansible(d, release_id=f"r-{key}")
                finally:
                    stop_ansible_runtimes(hosts)
                    stop_control_masters(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        HOSTS_CGROUP.close()

    load_after = os.getloadavg()
    total_mb = size * args.hosts / 1e6
    print()
    print(f"{'what':<44} {'seconds':>8} {'MB/s':>8}")
    if md.install_s is not None:
        print(f"{'ModelDeck runtime install (once, 8 hosts)':<44} {md.install_s:8.2f}")
    rows = [
        ("modeldeck", "ModelDeck deploy (transfer+verify+switch+health)"),
        ("modeldeck-known", "ModelDeck deploy of new weights, known hosts"),
        ("modeldeck-redeploy", "ModelDeck no-change redeploy"),
        ("ansible-default", "Ansible, defaults (copy + restart + wait_for)"),
        ("ansible-tuned", "Ansible, tuned (pipelining, no compression)"),
        ("scp", "bare scp -r x8 in parallel"),
        ("paramiko", f"bare paramiko SFTP x8 ({GCM})"),
        ("paramiko-default-cipher", "bare paramiko SFTP x8 (paramiko's default cipher)"),
    ]
    for key, label in rows:
        if key in figures:
            rate = f"{total_mb / figures[key]:8.1f}" if key != "modeldeck-redeploy" else ""
            print(f"{label:<44} {figures[key]:8.2f} {rate}")
    if md.first_outcomes:
        print(f"ModelDeck first deploy: {md.first_outcomes}; bytes sent {md.bytes_first}")
        print(f"ModelDeck redeploy: {md.redeploy_outcomes}; bytes sent {md.bytes_redeploy}")
        print(f"first deploy, median s per step: {md.first_steps}")
        print(f"redeploy, median s per step:     {md.redeploy_steps}")
        if md.known_s is not None:
            print(f"known hosts, new weights: {md.known_outcomes}")
            print(f"known hosts, median s per step:  {md.known_steps}")
            print(f"known hosts, runtime start-up (median s since each runtime process began): {md.known_phases}")
            if md.known_cpu_table:
                print(f"known hosts, CPU per process role:\n{md.known_cpu_table}")
            print(
                f"machine-wide busy CPU: known-hosts deploy {md.known_cpu_s:.1f} s, bare paramiko x8 "
                f"{paramiko_cpu_s:.1f} s (2 cores: wall >= CPU / 2; neighbours' work included)"
            )
        if md.redeploy_s is not None:
            print(f"no-change redeploy per host (8 in parallel): {md.redeploy_s:.2f} s wall")
        if md.spare_waits:
            rss = f"{md.spare_rss_mib:.0f} MiB" if md.spare_rss_mib is not None else "?"
            print(
                "warm spares: the benchmark waited for every host's spare before the next timed deploy: "
                f"{', '.join(f'{w:.2f}' for w in md.spare_waits)} s after each deploy that started them; "
                f"idle spare (supervisor + runtime) RSS median {rss} per host"
            )
        else:
            print("warm spares: off (--no-warm-spare)")
        for row in md.ab_rows:
            print(row)
    elif md.note:
        print(f"ModelDeck: {md.note}")
    print()
    bare = min(v for k, v in figures.items() if k in ("scp", "paramiko"))
    if "modeldeck" in figures:
        m = figures["modeldeck"]
        if "ansible-default" in figures:
            print(f"ModelDeck vs Ansible defaults: {figures['ansible-default'] / m:.2f}x faster (target >= 5x)")
        if "ansible-tuned" in figures:
            print(f"ModelDeck vs Ansible tuned:    {figures['ansible-tuned'] / m:.2f}x faster (target >= 3x)")
        print(f"ModelDeck / best bare transfer: {m / bare:.2f}x the time (target <= 1.5x)")
    if "modeldeck-known" in figures:
        k = figures["modeldeck-known"]
        if "ansible-default" in figures:
            print(f"known hosts vs Ansible defaults: {figures['ansible-default'] / k:.2f}x faster (target >= 5x)")
        if "ansible-tuned" in figures:
            print(f"known hosts vs Ansible tuned:    {figures['ansible-tuned'] / k:.2f}x faster (target >= 3x)")
        print(f"known hosts / best bare transfer: {k / bare:.2f}x the time (target <= 1.5x)")
    if "ansible-default" in figures:
        print(f"Ansible defaults / best bare transfer: {figures['ansible-default'] / bare:.2f}x")
        print(f"Ansible tuned / best bare transfer:    {figures['ansible-tuned'] / bare:.2f}x")
    print(f"paramiko / scp: {figures['paramiko'] / figures['scp']:.2f}x")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(json.dumps({"figures": figures, "load_before": load_before, "load_after": load_after}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
