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

import getpass
import os
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

from tests.fixtures.deploy import make_iris_bundle  # noqa: E402
from tests.fixtures.ssh_target import kill_runtimes, seed_runtime  # noqa: E402
from tests.fixtures.sshd import SshHost, _free_port, keygen  # noqa: E402

MIB = 1024 * 1024


def runtime_phases(deploy_root: Path, name: str, release_id: str | None) -> dict[str, float] | None:
    """The serving runtime's start-up phases from its ready file (seconds since its process started)."""
    import json

    ready = deploy_root / "deployments" / name / "run" / f"{release_id}.ready.json"
    try:
        return json.loads(ready.read_text()).get("phases_s")
    except (OSError, ValueError):
        return None


def main() -> int:
    seeds = sorted(
        (ROOT / ".cache" / "ssh-runtime").glob("*/runtime/*/installed.json"), key=lambda p: p.stat().st_mtime
    )
    if not seeds:
        print("no cached runtime in .cache/ssh-runtime: run `pytest tests/test_ssh_target.py` once", file=sys.stderr)
        return 2
    seed = seeds[-1].parents[2]  # the newest; its version is pinned below (the sources may have moved on)
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
    for version in ("1", "2"):
        out = work / f"bundle-{version}"
        out.mkdir()
        (out / "weights.bin").write_bytes(weights)
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

        def timed(label: str, bundle: Path) -> float:
            start = time.perf_counter()
            result = target.deploy(bundle, opts)
            elapsed = time.perf_counter() - start
            print(f"{label:<44} {elapsed:6.2f} s  ({result.outcome})")
            assert result.ok, result.message
            phases = runtime_phases(host.deploy_root, result.name, result.status.release_id if result.status else None)
            if phases:
                print(f"{'':<44} runtime start-up (s since its process began): {phases}")
            return elapsed

        first = timed("first deploy, 20 MiB bundle", bundles[0])
        again = timed("same bundle again", bundles[0])
        relabel = timed("new version, unchanged weights", bundles[1])
        with SshConnection.open(endpoint, known) as conn:
            sftp = conn.sftp()
            start = time.perf_counter()
            with (bundles[0] / "weights.bin").open("rb") as src, sftp.open(str(work / "bare.bin"), "wb") as dst:
                dst.set_pipelined(True)
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            bare = time.perf_counter() - start
            cipher = conn.client.get_transport().local_cipher  # type: ignore[union-attr]
            start = time.perf_counter()
            for _ in range(5):
                conn.run("true", timeout=60)
            round_trip = (time.perf_counter() - start) / 5
        print(f"{'bare SFTP upload of the 20 MiB (' + cipher + ')':<44} {bare:6.2f} s  ({20 / bare:.0f} MiB/s)")
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
