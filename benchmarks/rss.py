"""Peak resident memory of this process over a block, sampled by a thread (shared by the SP benchmarks)."""

from __future__ import annotations

import os
import threading
import time


def rss() -> int:
    """This process's resident memory now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """`with PeakRss() as m: ...` -> m.peak = the highest resident memory inside the block minus at its start."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s

    def __enter__(self):
        self.base, self.peak, self.stop = rss(), 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, rss())
            time.sleep(self.interval_s)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, rss()) - self.base
