"""The Docker target: bundles as container images, deployed to local or remote engines.

* :mod:`.engine` -- target URLs (``docker://``, ``docker+ssh://``, ``docker+tcp://``), clients with
  timeouts, docker contexts, and the mapping of library errors to ModelDeck errors;
* :mod:`.image` -- the generated Dockerfile, live-streamed builds, push by digest;
* :mod:`.target` -- :class:`~.target.DockerTarget` (health-gated start-first replacement) and
  :func:`~.target.watch_health`.

Nothing here is imported by the runtime; images carry only the runtime wheel.
"""

from __future__ import annotations
