"""``modeldeck build`` (a bundle as a container image) and ``modeldeck docker contexts|watch``.

Build output streams to stderr line by line as the engine produces it; the result (image ID,
size, and the registry digest after ``--push``) goes to stdout, or JSON with ``--json``.
``--dockerfile-only`` prints the generated Dockerfile and needs no engine.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from modeldeck.core.errors import DeployError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``build`` and ``docker`` to the top-level parser."""
    p = sub.add_parser(
        "build",
        help="build a container image of a model version or bundle",
        description="Build an image holding the serving runtime and one bundle (no MLflow, no Qt), non-root, with a "
        "HEALTHCHECK on the runtime's readiness and OCI labels naming the model.",
    )
    p.add_argument("source", metavar="MODEL_URI|BUNDLE_DIR", help="e.g. models:/iris/3 or ./bundle")
    p.add_argument("--tag", required=True, metavar="REPO:TAG", help="image name, e.g. iris:3 or registry:5000/iris:3")
    p.add_argument("--base-image", default=None, metavar="IMAGE", help="base image (default python:3.11-slim)")
    p.add_argument("--push", action="store_true", help="push the image and print its digest")
    p.add_argument("--dockerfile-only", action="store_true", help="print the Dockerfile; build nothing")
    p.add_argument("--engine", default="docker://", metavar="URL", help="docker://, docker+ssh://…, docker+tcp://…")
    p.add_argument("--tls-ca", metavar="PEM")
    p.add_argument("--tls-cert", metavar="PEM")
    p.add_argument("--tls-key", metavar="PEM")
    _ssh_engine_args(p)
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow bundling a pickled sklearn model (only models you trust)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_build)

    d = sub.add_parser("docker", help="Docker engines: contexts, health watching")
    dsub = d.add_subparsers(dest="docker_command", metavar="COMMAND", required=True)
    c = dsub.add_parser("contexts", help="list docker contexts as ModelDeck target URLs")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(handler=cmd_contexts)
    w = dsub.add_parser(
        "watch",
        help="report health changes of docker deployments and restart unhealthy ones",
        description="Docker marks containers unhealthy but never restarts them; this does, for deployments "
        "deployed with --restart-unhealthy (or all with --restart).",
    )
    w.add_argument("name", nargs="?", help="only this deployment")
    w.add_argument("--target", "-t", default="docker://", metavar="URL")
    w.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="stop after S seconds (default 3600)")
    w.add_argument("--restart", action="store_true", default=None, help="restart every unhealthy container")
    w.add_argument("--tls-ca", metavar="PEM")
    w.add_argument("--tls-cert", metavar="PEM")
    w.add_argument("--tls-key", metavar="PEM")
    _ssh_engine_args(w)
    w.set_defaults(handler=cmd_watch)


def _ssh_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("docker+ssh:// engines")
    g.add_argument("--identity", metavar="FILE", help="private key (default: ssh-agent and ~/.ssh keys)")
    g.add_argument("--accept-host-key", metavar="SHA256:…", help="trust an unknown host key with this fingerprint")


def _engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """TLS and SSH settings given on the command line (the engine URL's parser refuses ones that do not apply)."""
    keys = ("tls_ca", "tls_cert", "tls_key", "identity", "accept_host_key")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _engine(args: argparse.Namespace, url: str) -> Any:
    from modeldeck.core.targets.docker.engine import connect, parse_engine_url

    return connect(parse_engine_url(url, **_engine_kwargs(args)))


def cmd_build(args: argparse.Namespace) -> int:
    from modeldeck.core.cli.deploy import _with_cancel_on_sigint, resolve_source
    from modeldeck.core.targets.docker import image as images

    def show(message: str, fraction: float | None) -> None:
        print(message, file=sys.stderr, flush=True)

    def run(cancel: threading.Event) -> int:
        bundle = resolve_source(args.source, args, cancel)
        options = images.BuildOptions(tag=args.tag, base_image=args.base_image or images.DEFAULT_BASE_IMAGE)
        if args.dockerfile_only:
            return _print_dockerfile(bundle, options)
        client = _engine(args, args.engine)
        try:
            result = images.build_image(client, bundle, options, progress=show, cancel=cancel)
            if args.push:
                result = images.push_image(client, result, progress=show, cancel=cancel)
        finally:
            client.close()
        if args.json:
            from modeldeck.core.cli import print_json

            print_json(
                {
                    "tag": result.tag,
                    "image_id": result.image_id,
                    "repo_digest": result.repo_digest,
                    "reference": result.reference,
                    "size_bytes": result.size_bytes,
                    "seconds": round(result.seconds, 2),
                    "labels": result.labels,
                }
            )
        else:
            from modeldeck.core.formatting import format_size

            print(f"{result.tag}: {result.image_id} ({format_size(result.size_bytes)}, {result.seconds:.1f} s)")
            if result.repo_digest:
                print(f"pushed: {result.repo_digest}")
            print(f"deploy it with: modeldeck deploy {args.source} --target docker:// --image {result.reference}")
        return 0

    return int(_with_cancel_on_sigint(run))


def _print_dockerfile(bundle: Path, options: Any) -> int:
    """The Dockerfile as it would be generated (for a cold base: ``--base-image`` with no labels known)."""
    import tempfile

    from modeldeck.core.targets.docker import image as images

    with tempfile.TemporaryDirectory(prefix="modeldeck-dockerfile-") as tmp:
        from modeldeck.core.runtime.manifest import verify_bundle
        from modeldeck.core.targets.runtime_dist import runtime_version, runtime_wheel

        try:
            manifest = verify_bundle(bundle)
        except Exception as exc:
            raise DeployError(f"cannot build an image of {bundle}: {exc}") from exc
        wheel = runtime_wheel(Path(tmp))
        labels = images.image_labels(manifest, runtime_version=runtime_version(), base_image=options.base_image)
        sys.stdout.write(
            images.render_dockerfile(
                base_image=options.base_image, wheel_name=wheel.name, labels=labels, warm_python=None
            )
        )
    return 0


def cmd_contexts(args: argparse.Namespace) -> int:
    from modeldeck.core.targets.docker.engine import list_contexts

    contexts = list_contexts()
    if args.json:
        from modeldeck.core.cli import print_json

        print_json(contexts)
        return 0
    rows = [("NAME", "TARGET", "ENGINE", "DESCRIPTION")]
    rows += [(c.name + (" *" if c.current else ""), c.target_url, c.host, c.description) for c in contexts]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(col.ljust(w) for col, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from modeldeck.core.targets.base import open_target
    from modeldeck.core.targets.docker.target import watch_health

    if not args.target.startswith(("docker://", "docker+ssh://", "docker+tcp://")):
        raise DeployError(f"{args.target} is not a docker target", hint="use docker://, docker+ssh:// or docker+tcp://")
    target = open_target(args.target, **_engine_kwargs(args))

    def show(event: Any) -> None:
        extra = " (restarted)" if event.restarted else ""
        print(f"{event.deployment}: {event.container} is {event.status}{extra}", flush=True)

    def run(cancel: threading.Event) -> int:
        watch_health(
            target,  # type: ignore[arg-type]
            name=args.name,
            timeout_s=args.timeout,
            restart_unhealthy=args.restart,
            on_event=show,
            cancel=cancel,
        )
        return 0

    from modeldeck.core.cli.deploy import _with_cancel_on_sigint

    return int(_with_cancel_on_sigint(run))
