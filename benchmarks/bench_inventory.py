"""Inventory benchmark: import, store, load and resolve N hosts (no network).

    .venv/bin/python benchmarks/bench_inventory.py [--hosts 1000]

Writes a generated ``~/.ssh/config`` (one Host block per host, a jump host, a ``Host *`` default
and an unsupported directive per host, so every host carries a warning) and an Ansible INI
inventory with a host range into a temporary directory, then times each step once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from modeldeck.core.inventory.ansible import import_ansible
from modeldeck.core.inventory.hosts import Inventory, resolve
from modeldeck.core.inventory.ssh_config import import_ssh_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    n = parser.parse_args().hosts
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cfg = d / "config"
        cfg.write_text(
            "".join(
                f"Host web{i}\n  HostName 10.{i // 65536}.{i // 256 % 256}.{i % 256}\n  User deploy\n"
                "  ProxyJump bastion\n  ServerAliveInterval 30\n"
                for i in range(n)
            )
            + "Host bastion\n  HostName 192.0.2.1\nHost *\n  IdentityFile ~/.ssh/id_ed25519\n"
        )
        ini = d / "hosts.ini"
        ini.write_text(f"[web]\nweb[0:{n - 1}] ansible_user=deploy\n[prod:children]\nweb\n[prod:vars]\nenv=prod\n")
        timings: list[tuple[str, float]] = []

        def step(label: str, fn):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            out = fn()
            timings.append((label, time.perf_counter() - started))
            return out

        imported = step(f"import_ssh_config ({n + 1} hosts)", lambda: import_ssh_config(cfg))
        inv = Inventory(d / "inventory.toml")
        step("add_many + atomic write", lambda: inv.add_many(imported.hosts))
        loaded = step("load inventory.toml", lambda: Inventory(d / "inventory.toml"))
        selected = step("select('all,!bastion')", lambda: loaded.select("all,!bastion"))
        step("resolve x100", lambda: [resolve(loaded, h.name, password_lookup=lambda _: None) for h in selected[:100]])
        step(f"import_ansible ({n} hosts)", lambda: import_ansible(ini))
        size = (d / "inventory.toml").stat().st_size
    for label, seconds in timings:
        print(f"{label:32s} {seconds * 1000:8.1f} ms")
    print(f"{'inventory.toml':32s} {size / 1024:8.0f} KiB")


if __name__ == "__main__":
    main()
