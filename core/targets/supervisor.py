"""A tiny process supervisor for one runtime: restart on crash, drain on SIGTERM, log to a bounded file.

Run as ``python -m modeldeck.core.targets.supervisor [options] -- COMMAND ...``. Stdlib
only (plus its sibling :mod:`.reuseport`), so it can run on any target that has Python. It

* writes its pid to ``--pidfile`` (atomically) and removes it on exit; with ``--daemon`` it
  first forks into a new session, so it outlives whoever started it and is nobody's zombie;
* runs COMMAND with stdout/stderr appended to ``--log``, rotated at ``--log-max-bytes``
  (one ``.1`` backup), so ``logs`` can read the tail;
* restarts COMMAND when it exits on its own, at most ``--max-restarts`` times within
  ``--restart-window`` seconds, with exponential backoff -- then gives up (exit 1);
* forwards SIGTERM/SIGINT to COMMAND (the runtime drains gracefully), and SIGKILLs it
  after ``--stop-timeout`` seconds;
* deletes ``--clear-file`` (the runtime's ready file) before every start, so a stale
  file never claims readiness;
* on SIGUSR1 pins new connections on ``--public-port`` to its runtime (writing ``--pin-file``),
  on SIGUSR2 hands them to the newer runtime (writing ``--handover-file``), waits for its accept
  queue to empty, then drains and stops (see :mod:`modeldeck.core.targets.reuseport`);
* with ``--probation-fd FD``, reads the deployer's commit pipe: ``commit`` makes the
  release permanent; end-of-file without it (the deployer crashed or gave up) stops
  everything, unless ``--state-file`` already names ``--release`` as active. A deploy
  cut off half-way therefore never leaves a candidate release serving beside the old one;
* with ``--spare-socket PATH`` it is a *warm spare*: its runtime (``runtime spare``) has imported
  its serving stack and waits; the first deployer that connects to PATH and sends a claim with the
  right ``--spare-key`` turns it into that release's supervisor (pid file, ready file, pin and
  handover files, release and command all come from the claim) and the connection becomes the
  probation channel, exactly like ``--probation-fd``. A wrong key (another interpreter, runtime or
  port) or a dead runtime refuses the claim and ends the spare; so does its deployment's state file
  disappearing or saying ``stopped``. An unclaimed spare never restarts its runtime.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from modeldeck.core.targets.reuseport import SharedPort

SPARE_CHECK_S = 1.0  # how often an unclaimed spare looks whether its deployment is still there and running
CLAIM_MAX_BYTES = 1 << 20


@contextlib.contextmanager
def unix_address(path: Path) -> Any:
    """An address for ``path`` that fits ``sun_path`` (108 bytes): the path itself, or ``/proc/self/fd/N/NAME``
    through a descriptor of its folder while the context is open (deploy roots can be long)."""
    text = str(path)
    if len(text.encode()) < 100:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class _Log:
    """Append-only log with one rotation step; lines from the child are timestamp-free (the runtime stamps)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh: IO[bytes] = path.open("ab")
        self.rotates = self.fh.seekable()  # not for a pipe such as /dev/stdout (a container's log)

    def write(self, data: bytes) -> None:
        with self.lock:
            self.fh.write(data)
            self.fh.flush()
            if self.rotates and self.fh.tell() > self.max_bytes:
                self.fh.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self.fh = self.path.open("ab")

    def note(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.write(f"{stamp} supervisor[{os.getpid()}]: {message}\n".encode())

    def close(self) -> None:
        with self.lock:
            self.fh.close()


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.command: list[str] = args.command
        self.log = _Log(Path(args.log), args.log_max_bytes)
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.child_lock = threading.RLock()  # also taken by the signal handler
        self.committed = args.probation_fd is None and not args.spare_socket
        self.claimed = not args.spare_socket  # a spare serves nobody until a deployer claims it
        self.child_stdin: IO[bytes] | None = None
        self.wake = threading.Event()  # ends a spare's --start-delay early (a claim, or a stop)

    # -- signals -------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if self.stopping.is_set():
            return
        self.log.note(f"stopping ({reason})")
        self.stopping.set()
        self.wake.set()
        with self.child_lock:
            if self.child is not None and self.child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.child.send_signal(signal.SIGTERM)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.request_stop(signal.Signals(signum).name)

    # -- port steering (see modeldeck.core.targets.reuseport) ---------------------------------------
    def _on_pin(self, _signum: int, _frame: object) -> None:
        threading.Thread(target=self._pin, daemon=True).start()

    def _on_handover(self, _signum: int, _frame: object) -> None:
        threading.Thread(target=self._handover, daemon=True).start()

    def _steer(self, index: int) -> SharedPort | None:
        """Point the public port's reuseport group at member ``index``, through our runtime's socket.

        Done here rather than by the deployer because a parent may take its child's socket
        (``pidfd_getfd``) even where ptrace of unrelated processes is restricted (Yama).
        """
        with self.child_lock:
            child = self.child
        if child is None or child.poll() is not None or self.args.public_port is None:
            return None
        shared = SharedPort.borrow(child.pid, self.args.public_port)
        if shared is not None and not shared.steer(index):
            shared.close()
            return None
        return shared

    def _pin(self) -> None:
        """SIGUSR1: keep every new public connection on this (the oldest) release while a new one starts."""
        shared = self._steer(0)
        if shared is None:
            self.log.note("cannot steer the public port; a switch will share it by hash")
            return
        shared.close()
        self.log.note(f"new connections on port {self.args.public_port} stay with this release")
        if self.args.pin_file:
            tmp = Path(self.args.pin_file + ".tmp")
            tmp.write_text(f"{os.getpid()}\n")
            tmp.replace(self.args.pin_file)

    def _handover(self) -> None:
        """SIGUSR2: send new connections to the new release, let our accept queue empty, then drain and stop."""
        shared = self._steer(1)
        if shared is not None:
            if self.args.handover_file:  # the deployer returns now; the drain below is not its business
                tmp = Path(self.args.handover_file + ".tmp")
                tmp.write_text(f"{os.getpid()}\n")
                tmp.replace(self.args.handover_file)
            shared.wait_until_drained()
            shared.close()
            self.log.note(f"handed port {self.args.public_port} over to the new release")
        self.request_stop("handover")

    # -- probation -----------------------------------------------------------------------------
    def _watch_probation(self, fd: int) -> None:
        """Wait for ``commit`` on the deployer's pipe or socket; end-of-file first stops the release."""
        data = b""
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(64):
                data += chunk
                if b"commit" in data:
                    self.committed = True
                    self.log.note("release committed")
                    return
        if self._named_active():
            self.committed = True
            self.log.note("deployer went away after recording this release as active; staying up")
            return
        self.request_stop("the deployer went away before committing this release")

    # -- warm spare ------------------------------------------------------------------------------
    def _deployment_running(self) -> bool:
        """False once the deployment's state file is gone or says ``stopped`` (an unreadable one counts as running:
        it is being replaced right now)."""
        path = Path(self.args.state_file) if self.args.state_file else None
        if path is None:
            return True
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return True
        return not (isinstance(state, dict) and state.get("desired") == "stopped")

    def _serve_spare(self, listener: socket.socket) -> None:
        """Accept claims until one succeeds; meanwhile leave when the deployment no longer needs a spare."""
        listener.settimeout(SPARE_CHECK_S)
        try:
            while not self.stopping.is_set() and not self.claimed:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if not self._deployment_running():
                        self.request_stop("the deployment is gone or stopped; the spare is not needed")
                    continue
                except OSError:
                    break
                self._claim(conn, listener)
        finally:
            listener.close()
            if not self.claimed:
                with contextlib.suppress(OSError):
                    os.unlink(self.args.spare_socket)

    def _claim(self, conn: socket.socket, listener: socket.socket) -> None:
        """Handle one claim: refuse it (and end the spare) or become the claimer's release on probation."""

        def answer(obj: dict[str, Any]) -> None:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(obj).encode() + b"\n")

        try:
            conn.settimeout(10.0)
            data = b""
            while b"\n" not in data and len(data) < CLAIM_MAX_BYTES:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            claim = json.loads(data.split(b"\n", 1)[0])["claim"]
            command = [str(c) for c in claim["command"]]
            argv = [str(a) for a in claim["argv"]]
            release = str(claim["release"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            answer({"refused": f"malformed claim: {exc}"})
            conn.close()
            return
        if claim.get("key") != self.args.spare_key:
            answer({"refused": "stale spare (another interpreter, runtime version, address or environment)"})
            conn.close()
            self.request_stop("a claim found this spare stale")
            return
        with self.child_lock:
            child, stdin = self.child, self.child_stdin
            if child is None and not self.stopping.is_set():
                # Claimed during --start-delay: no runtime yet, so start the claimed release's directly (as a
                # fresh launch would); the claimer still gets its probation channel.
                listener.close()
                with contextlib.suppress(OSError):
                    os.unlink(self.args.spare_socket)
                self.claimed = True
                self._take_over(claim, release, command)
                self.wake.set()
                answer({"claimed": True, "pid": os.getpid(), "runtime_pid": None})
                conn.settimeout(None)
                threading.Thread(target=self._watch_probation, args=(conn.detach(),), daemon=True).start()
                return
            if child is None or child.poll() is not None or stdin is None or self.stopping.is_set():
                answer({"refused": "the spare's runtime is not running"})
                conn.close()
                self.request_stop("claimed, but the spare's runtime is not running")
                return
            # No second claim from here on: the socket's name is free for the next spare.
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self.args.spare_socket)
            self.claimed = True
            self._take_over(claim, release, command)
            try:
                stdin.write(json.dumps({"argv": argv}).encode() + b"\n")
                stdin.close()
            except OSError as exc:
                answer({"refused": f"the spare's runtime did not take the claim: {exc}"})
                conn.close()
                self.request_stop("the spare's runtime did not take the claim")
                return
            self.child_stdin = None
        self.log.note(f"claimed as release {release} (runtime pid {child.pid})")
        answer({"claimed": True, "pid": os.getpid(), "runtime_pid": child.pid})
        conn.settimeout(None)  # blocking again: the connection is now the probation channel
        threading.Thread(target=self._watch_probation, args=(conn.detach(),), daemon=True).start()

    def _take_over(self, claim: dict[str, Any], release: str, command: list[str]) -> None:
        """Become the claimed release's supervisor: its files, its command (for restarts once committed)."""
        old_pidfile, old_clear = self.args.pidfile, self.args.clear_file
        self.args.release = release
        self.args.pidfile = str(claim.get("pidfile") or old_pidfile)
        self.args.clear_file = claim.get("clear_file") or old_clear
        self.args.pin_file = claim.get("pin_file") or self.args.pin_file
        self.args.handover_file = claim.get("handover_file") or self.args.handover_file
        self.command = command
        _write_pidfile(Path(self.args.pidfile))
        if old_pidfile != self.args.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(old_pidfile)
        if old_clear and old_clear != self.args.clear_file:
            with contextlib.suppress(OSError):
                os.unlink(old_clear)

    def _named_active(self) -> bool:
        if not self.args.state_file or not self.args.release:
            return False
        try:
            state = json.loads(Path(self.args.state_file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(state, dict) and state.get("active_release") == self.args.release

    # -- main loop -----------------------------------------------------------------------------
    def _pump(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.log.write(line)
        stream.close()

    def _start_child(self) -> subprocess.Popen[bytes]:
        if self.args.clear_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.args.clear_file)
        spare = not self.claimed  # the spare's runtime waits on stdin for its claim
        child = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if spare else subprocess.DEVNULL,
        )
        self.child_stdin = child.stdin
        assert child.stdout is not None
        threading.Thread(target=self._pump, args=(child.stdout,), daemon=True).start()
        self.log.note(f"started runtime pid {child.pid}")
        return child

    def _wait_child(self, child: subprocess.Popen[bytes]) -> int:
        while True:
            try:
                return child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if self.stopping.is_set():
                    try:
                        return child.wait(timeout=self.args.stop_timeout)
                    except subprocess.TimeoutExpired:
                        self.log.note(f"runtime did not stop within {self.args.stop_timeout:g} s; killing it")
                        child.kill()
                        return child.wait(timeout=10)

    def run(self) -> int:
        restarts: list[float] = []
        backoff = self.args.backoff
        code = 0
        if self.args.start_delay and not self.claimed:
            self.wake.wait(self.args.start_delay)
        while not self.stopping.is_set():
            with self.child_lock:
                self.child = self._start_child()
            started = time.monotonic()
            code = self._wait_child(self.child)
            if self.stopping.is_set():
                self.log.note(f"runtime exited with {code}")
                break
            self.log.note(f"runtime exited unexpectedly with {code}")
            if not self.claimed:
                self.log.note("the spare's runtime is gone; not restarting a spare")
                return 1
            if not self.committed:
                # A candidate release that cannot start is not retried: the deployer rolls back at once.
                self.log.note("not restarting a release that is still on probation")
                return 1
            now = time.monotonic()
            if now - started > self.args.restart_window:
                backoff = self.args.backoff  # it ran fine for a while: start over
            restarts = [t for t in restarts if now - t < self.args.restart_window] + [now]
            if len(restarts) > self.args.max_restarts:
                self.log.note(f"giving up after {self.args.max_restarts} restarts in {self.args.restart_window:g} s")
                return 1
            self.log.note(f"restarting in {backoff:.1f} s")
            if self.stopping.wait(backoff):
                break
            backoff = min(backoff * 2, 30.0)
        return 0 if self.stopping.is_set() else code


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="modeldeck-supervisor", description=__doc__.splitlines()[0])
    p.add_argument("--pidfile", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--log-max-bytes", type=int, default=5 * 1024 * 1024)
    p.add_argument("--max-restarts", type=int, default=5)
    p.add_argument("--restart-window", type=float, default=60.0)
    p.add_argument("--backoff", type=float, default=0.5)
    p.add_argument("--stop-timeout", type=float, default=30.0)
    p.add_argument("--clear-file")
    p.add_argument("--probation-fd", type=int)
    p.add_argument("--state-file")
    p.add_argument("--release")
    p.add_argument("--daemon", action="store_true", help="fork into the background (a new session) at once")
    p.add_argument("--public-port", type=int, help="the shared public port (SIGUSR1 pins it, SIGUSR2 hands it over)")
    p.add_argument("--pin-file", help="written once SIGUSR1 has pinned the public port to this release")
    p.add_argument("--handover-file", help="written once SIGUSR2 has sent new connections to the newer release")
    p.add_argument("--spare-socket", help="be a warm spare: wait for a claim on this unix socket (see above)")
    p.add_argument("--spare-key", help="what a claim must present (the deployer's interpreter, runtime, address)")
    p.add_argument("--start-delay", type=float, default=0.0, help="a spare waits this long before starting its runtime")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        p.error("no command to supervise")
    return args


def _write_pidfile(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


def _spare_listener(path: Path) -> socket.socket:
    """The spare's claim socket, reachable only by this user (mode 0600: a claim names a command to run)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        with unix_address(path) as address:
            listener.bind(address)
    finally:
        os.umask(old)
    listener.listen(4)
    return listener


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    pidfile = Path(args.pidfile)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = pidfile.with_name(pidfile.name + ".tmp")
    listener = _spare_listener(Path(args.spare_socket)) if args.spare_socket else None
    if args.daemon:
        # Double fork: the launcher reaps the parent at once, so the supervisor is nobody's child
        # (no zombies) and outlives the CLI or GUI that started it.
        pid = os.fork()
        if pid:
            tmp.write_text(f"{pid}\n")
            tmp.replace(pidfile)
            os._exit(0)
        os.setsid()
    else:
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(pidfile)
    sup = Supervisor(args)
    signal.signal(signal.SIGTERM, sup._on_signal)
    signal.signal(signal.SIGINT, sup._on_signal)
    signal.signal(signal.SIGUSR1, sup._on_pin)
    signal.signal(signal.SIGUSR2, sup._on_handover)
    if args.probation_fd is not None:
        threading.Thread(target=sup._watch_probation, args=(args.probation_fd,), daemon=True).start()
    if listener is not None:
        threading.Thread(target=sup._serve_spare, args=(listener,), daemon=True).start()
    try:
        return sup.run()
    finally:
        pidfile = Path(sup.args.pidfile)  # a claimed spare has moved to its release's pid file
        with contextlib.suppress(OSError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()
        if not sup.claimed:
            with sup.child_lock:
                sup.claimed = True  # no claim can start now
            for leftover in (args.spare_socket, args.clear_file):
                with contextlib.suppress(OSError, TypeError):
                    os.unlink(leftover)
        sup.log.note("exit")
        sup.log.close()


if __name__ == "__main__":
    sys.exit(main())
