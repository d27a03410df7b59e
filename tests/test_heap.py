"""The heap trimmer (core/heap.py) gives fragmented free memory back, in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from modeldeck.core.heap import HeapTrimmer, trim_heap

pytestmark = pytest.mark.skipif(not HeapTrimmer().supported, reason="needs glibc's malloc_trim (Linux)")

FRAGMENT_THEN_TRIM = textwrap.dedent(
    """
    import json, time
    from modeldeck.core.heap import HeapTrimmer

    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    keep, churn = [], []
    for i in range(150_000):  # 1 KiB chunks: malloc's heap, not pymalloc's arenas
        (keep if i % 50 == 0 else churn).append(bytes(1000 + i % 7))
    del churn  # freed, but every 50th chunk pins its page: the heap cannot shrink from the top
    fragmented = rss_mb()
    trimmer = HeapTrimmer(interval_s=0.05)
    assert trimmer.start()
    deadline = time.monotonic() + 10
    while trimmer.trims < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    trimmer.stop()
    print(json.dumps({"fragmented": fragmented, "trimmed": rss_mb(), "trims": trimmer.trims, "kept": len(keep)}))
    """
)


def test_a_fragmented_heap_shrinks_once_the_trimmer_has_run() -> None:
    out = subprocess.run([sys.executable, "-c", FRAGMENT_THEN_TRIM], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["trims"] >= 2
    # ~145 MB of freed 1 KiB chunks sit between the kept ones; a trim returns nearly all of it.
    assert figures["fragmented"] - figures["trimmed"] > 80, figures


def test_trimmer_stops_and_rejects_a_nonsense_interval() -> None:
    trimmer = HeapTrimmer(interval_s=30)
    assert trimmer.start()
    trimmer.stop(timeout=5)
    assert trimmer._thread is None
    assert trim_heap() is True
    with pytest.raises(ValueError, match="interval_s"):
        HeapTrimmer(interval_s=0)
