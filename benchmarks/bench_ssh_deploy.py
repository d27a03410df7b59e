"""One SSH host, one run: how long ModelDeck's full deploy of a ~20 MB bundle takes, and its no-change cases.

Starts a real sshd on 127.0.0.240 (as the tests do), gives it the cached runtime venv from the
test suite's ``.cache/ssh-runtime`` (run ``pytest tests/test_ssh_target.py`` once first), and
measures, each with the SSH connection, facts, checks and the agent included:

1. first deploy of a bundle with 20 MiB of weights (upload + remote sha256 + health-gated start);
2. the same bundle again (``already-installed``: nothing sent, no restart);
3. a new model version whose weights are unchanged (only the manifest is sent; full switch);
4. a bare pipelined SFTP upload of the same 20 MiB on one connection, as the transfer floor.

Prints seconds and ratios. Bounded: four deploys, one upload. Run:
``.venv/bin/python benchmarks/bench_ssh_deploy.py``
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeldeck.core.inventory.known_hosts import KnownHosts  # noqa: E402
from modeldeck.core.targets.base import DeployOptions  # noqa: E402
from modeldeck.core.targets.local import free_port  # noqa: E402
from modeldeck.core.targets.ssh.connection import SshConnection, SshEndpoint  # noqa: E402
from modeldeck.core.targets.ssh.target import CHUNK, SshTarget  # noqa: E402

from tests.fixtures.deploy import make_iris_bundle, runtime_pids  # noqa: E402
from tests.fixtures.ssh_target import kill_runtimes, resident_agent_pids, seed_runtime  # noqa: E402
from tests.fixtures.sshd import SshHost, _free_port, keygen  # noqa: E402

MIB = 1024 * 1024


def cpu_seconds(deploy_root: Path, sshd_pid: int) -> float:
    """CPU seconds used so far by this process, its reaped descendants, the runtimes serving from ``deploy_root``
    and the sshd (with its finished sessions, which include the agent).

    The benchmark is the child subreaper (see main), so the daemonised supervisors and runtimes count too: the
    whole deploy's CPU on both ends of the connection, apart from neighbours' work.
    """
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:  # reap exited orphans so their CPU lands in RUSAGE_CHILDREN
            pass
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in runtime_pids(deploy_root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    for pid in [sshd_pid, *resident_agent_pids(deploy_root)]:  # the resident agent reaps the children it forks
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
    return total


def runtime_phases(deploy_root: Path, name: str, release_id: str | None) -> dict[str, float] | None:
    """The serving runtime's start-up phases from its ready file (seconds since its process started)."""
    import json

    ready = deploy_root / "deployments" / name / "run" / f"{release_id}.ready.json"
    try:
        return json.loads(ready.read_text()).get("phases_s")
    except (OSError, ValueError):
        return None


def wait_for_spare(deploy_root: Path, name: str, timeout_s: float = 60.0) -> float:
    """Seconds until the deployment's warm spare has imported its stack (0 if it has none to wait for)."""
    run = deploy_root / "deployments" / name / "run"
    if not (run / "spare.pid").is_file():
        return 0.0
    start = time.perf_counter()
    while not (run / "spare.ready.json").is_file() and time.perf_counter() - start < timeout_s:
        time.sleep(0.05)
    return time.perf_counter() - start


class Timeline:
    """Progress events as they reach the client, in seconds since the deploy began (the remote phases' arrival)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.marks: list[tuple[float, str]] = []

    def __call__(self, event: object) -> None:
        step, message = getattr(event, "step", "?"), str(getattr(event, "message", ""))
        if self.marks and self.marks[-1][1].startswith(f"{step}:") and step == "transfer" and "sent" not in message:
            return  # one line per phase, not per upload chunk
        self.marks.append((time.perf_counter() - self.start, f"{step}: {message[:70]}"))

    def text(self) -> str:
        return "\n".join(f"{'':<6}{t:6.3f} s  {m}" for t, m in self.marks)


def agent_profiles(folder: Path, top: int) -> str:
    """Each agent's CPU (interpreter start before main, total) and its cProfile's top cumulative entries."""
    import json
    import pstats

    lines = []
    for marks in sorted(folder.glob("agent-*.json"), key=lambda p: p.stat().st_mtime):
        data = json.loads(marks.read_text())
        lines.append(
            f"      agent {' '.join(data['argv'][:1])}: CPU {data['cpu_total_s']:.3f} s, of which before main "
            f"(interpreter start + imports of the module) {data['cpu_before_main_s']:.3f} s"
        )
        prof = marks.with_suffix(".prof")
        if top and prof.is_file():
            import io

            buf = io.StringIO()
            pstats.Stats(str(prof), stream=buf).sort_stats("cumulative").print_stats(top)
            lines += ["        " + line for line in buf.getvalue().splitlines() if line.strip()][4:]
        marks.unlink()
        prof.unlink(missing_ok=True)
    return "\n".join(lines)


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeline", action="store_true", help="print each deploy's phases as the client saw them")
    parser.add_argument(
        "--profile-agent", type=int, default=0, metavar="N", help="cProfile the host's agent; print its top N entries"
    )
    parser.add_argument("--repeat", type=int, default=1, help="replace the serving release with new weights N times")
    parser.add_argument(
        "--runtime-version", help="the host's runtime: this cached seed (e.g. an older version, for an A/B run)"
    )
    cli = parser.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: daemonised supervisors stay our descendants (CPU counted)
    seeds = sorted(
        (ROOT / ".cache" / "ssh-runtime").glob("*/runtime/*/installed.json"), key=lambda p: p.stat().st_mtime
    )
    if not seeds:
        print("no cached runtime in .cache/ssh-runtime: run `pytest tests/test_ssh_target.py` once", file=sys.stderr)
        return 2
    from modeldeck.core.targets.runtime_dist import runtime_version

    # This code's own runtime if the tests built it, else the newest (pinned below: the sources may have moved on).
    mine = [p for p in seeds if p.parent.name == (cli.runtime_version or runtime_version())]
    seed = (mine or seeds)[-1].parents[2]
    print(f"host runtime: {seed.name}{'' if mine else ' (NOT this working tree: run the SSH tests first)'}")
    work = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    ip = "127.0.0.240"
    key = keygen(work / "client")
    host = SshHost(
        ip=ip,
        port=_free_port(ip),
        user=getpass.getuser(),
        client_key=key,
        deploy_root=work / "deploy",
        host_key=keygen(work / "host_key"),
        workdir=work,
    )
    host.deploy_root.mkdir()
    (work / "authorized_keys").write_text(Path(str(key) + ".pub").read_text())
    seed_runtime(host, seed)
    weights = os.urandom(20 * MIB)
    bundles = []
    for version in ("1", "2", "3"):
        out = work / f"bundle-{version}"
        out.mkdir()
        (out / "weights.bin").write_bytes(weights if version != "3" else os.urandom(20 * MIB))
        bundles.append(make_iris_bundle(out, version=version))
    host.start()
    try:
        (work / "known_hosts").write_text(host.known_hosts_line + "\n")
        known = KnownHosts(work / "pins", [work / "known_hosts"])
        endpoint = SshEndpoint(ip, host.port, host.user, identity_files=(key,), allow_agent=False)
        target = SshTarget(
            endpoint,
            str(host.deploy_root),
            known_hosts=known,
            bind_host=ip,
            cache_dir=work / "c",
            runtime_version=seed.name,
        )
        opts = DeployOptions(host=ip, port=free_port(ip))

        profiles = work / "agent-profiles"
        if cli.profile_agent:
            from modeldeck.core.targets.agent import PROFILE_ENV

            target.agent_env = {PROFILE_ENV: str(profiles)}

        def timed(label: str, bundle: Path) -> float:
            waited = wait_for_spare(host.deploy_root, "iris")  # a real host's spare starts on its own CPU
            cpu = cpu_seconds(host.deploy_root, host.proc.pid)
            timeline = Timeline()
            start = time.perf_counter()
            result = target.deploy(bundle, opts, progress=timeline)
            elapsed = time.perf_counter() - start
            time.sleep(1.0)  # let a replaced release finish draining, so its CPU is counted with this deploy
            spent = cpu_seconds(host.deploy_root, host.proc.pid) - cpu
            spare = f"; waited {waited:.1f} s for the warm spare" if waited else ""
            print(f"{label:<44} {elapsed:6.2f} s  ({result.outcome}); CPU, all processes: {spent:.2f} s{spare}")
            if cli.timeline:
                print(timeline.text())
            if cli.profile_agent:
                print(agent_profiles(profiles, cli.profile_agent))
            assert result.ok, result.message
            phases = runtime_phases(host.deploy_root, result.name, result.status.release_id if result.status else None)
            if phases:
                print(f"{'':<44} runtime start-up (s since its process began): {phases}")
            return elapsed

        first = timed("first deploy, 20 MiB bundle", bundles[0])
        again = timed("same bundle again", bundles[0])
        relabel = timed("new version, unchanged weights", bundles[1])
        timed("new 20 MiB weights replacing the serving release", bundles[2])
        for i in range(cli.repeat - 1):
            out = work / f"bundle-r{i}"
            out.mkdir()
            (out / "weights.bin").write_bytes(os.urandom(20 * MIB))
            timed(f"again new 20 MiB weights ({i + 2})", make_iris_bundle(out, version=str(10 + i)))
            shutil.rmtree(out, ignore_errors=True)
        bare_cpu = cpu_seconds(host.deploy_root, host.proc.pid)
        with SshConnection.open(endpoint, known) as conn:  # its own connection, so sshd's share is counted at its end
            sftp = conn.sftp()
            start = time.perf_counter()
            with (bundles[0] / "weights.bin").open("rb") as src, sftp.open(str(work / "bare.bin"), "wb") as dst:
                dst.set_pipelined(True)
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            bare = time.perf_counter() - start
            cipher = conn.client.get_transport().local_cipher  # type: ignore[union-attr]
        time.sleep(0.5)
        bare_cpu = cpu_seconds(host.deploy_root, host.proc.pid) - bare_cpu
        with SshConnection.open(endpoint, known) as conn:
            start = time.perf_counter()
            for _ in range(5):
                conn.run("true", timeout=60)
            round_trip = (time.perf_counter() - start) / 5
        print(
            f"{'bare SFTP upload of the 20 MiB (' + cipher + ')':<44} {bare:6.2f} s  ({20 / bare:.0f} MiB/s); "
            f"CPU, all processes (incl. the SSH handshake): {bare_cpu:.2f} s"
        )
        print(f"{'one remote command (`true`, login shell incl.)':<44} {round_trip:6.2f} s")
        print(f"first deploy / bare upload: {first / bare:.1f}x; no-change redeploy: {again * 1000:.0f} ms")
        print(f"version switch with unchanged weights: {relabel:.2f} s; load average: {os.getloadavg()[0]:.1f}")
    finally:
        kill_runtimes(host.deploy_root)
        host.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
