"""Progress of long host-side loops (evaluation, sampling, export): count, rate and ETA in the log."""

import datetime
import time

from absl import logging


class Progress:
    """Logs "<what>: done/total (p%) | rate <unit>/s | ETA h:mm:ss" at most every `interval` seconds, and a
    last line from done(). Usage: p = Progress("sampling", 10000); p.update(64) per batch; p.done()."""

    def __init__(self, what, total, unit="images", interval=10.0, clock=time.monotonic):
        self.what, self.unit, self.interval, self.clock = what, unit, interval, clock
        self.total = None if total is None else int(total)  # None: unknown (no percentage or ETA)
        self.count = 0
        self.start = self.last = clock()

    def line(self):
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.count / elapsed
        if self.total is None:
            return f"{self.what}: {self.count} | {rate:.1f} {self.unit}/s"
        eta = datetime.timedelta(seconds=round((self.total - self.count) / rate)) if rate > 0 else "?"
        percent = 100.0 * self.count / max(self.total, 1)
        return f"{self.what}: {self.count}/{self.total} ({percent:.0f}%) | {rate:.1f} {self.unit}/s | ETA {eta}"

    def update(self, count):
        self.count += int(count)
        now = self.clock()
        if now - self.last >= self.interval and (self.total is None or self.count < self.total):
            self.last = now
            logging.info("%s", self.line())

    def done(self):
        elapsed = datetime.timedelta(seconds=round(self.clock() - self.start))
        logging.info("%s: %d %s in %s", self.what, self.count, self.unit, elapsed)
