"""hit.core.progress: count, rate and ETA lines for long host loops, at most one per interval."""

from absl import logging

from hit.core.progress import Progress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_logs_count_rate_and_eta_once_per_interval(monkeypatch):
    lines = []
    monkeypatch.setattr(logging, "info", lambda fmt, *args: lines.append(fmt % args))
    clock = FakeClock()
    progress = Progress("sampling", 1000, interval=10.0, clock=clock)
    clock.now += 5.0
    progress.update(100)  # 5 s: before the first interval, silent
    assert lines == []
    clock.now += 5.0
    progress.update(100)  # 10 s, 200 images: 20 images/s, 800 left -> 40 s
    assert lines == ["sampling: 200/1000 (20%) | 20.0 images/s | ETA 0:00:40"]
    clock.now += 1.0
    progress.update(100)  # within the next interval: silent
    assert len(lines) == 1
    clock.now += 39.0
    progress.update(700)  # the end: done() says it, update() does not
    assert len(lines) == 1
    progress.done()
    assert lines[-1] == "sampling: 1000 images in 0:00:50"


def test_an_unknown_total_logs_count_and_rate_only(monkeypatch):
    lines = []
    monkeypatch.setattr(logging, "info", lambda fmt, *args: lines.append(fmt % args))
    clock = FakeClock()
    progress = Progress("reading", None, interval=10.0, clock=clock)
    clock.now += 10.0
    progress.update(50)
    clock.now += 10.0
    progress.update(50)
    assert lines == ["reading: 50 | 5.0 images/s", "reading: 100 | 5.0 images/s"]
