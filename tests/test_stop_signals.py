"""Ctrl-C / SIGTERM handling (hit.core.stop_signals), in this process with real signals and a stubbed os._exit."""

import os
import signal

import pytest

import hit  # noqa: F401
from hit.core import stop_signals


class Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch):
    def fake_exit(code):
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", fake_exit)


@pytest.fixture
def installed(tmp_path, exits):
    requests = []
    previous = stop_signals.install(lambda: requests.append(1), str(tmp_path))
    try:
        yield requests
    finally:
        stop_signals.restore(previous)


def test_the_first_signal_requests_a_stop_and_the_second_exits_at_once(installed, capfd):
    signal.raise_signal(signal.SIGTERM)  # the handler runs before raise_signal returns
    assert installed == [1]
    with pytest.raises(Exited) as exited:
        signal.raise_signal(signal.SIGINT)
    assert exited.value.args == (128 + signal.SIGINT,)
    assert installed == [1]  # no second stop request
    assert "Stopped at once by a second SIGINT without saving; latest checkpoint: None" in capfd.readouterr().err


def test_a_second_signal_while_the_first_is_still_logging_exits(installed, monkeypatch, capfd):
    # The race CI once hit: the user (or a test) sees the first handler's line and signals again before that
    # handler has returned. The second handler then runs nested inside the first, in the middle of its logging.
    warning = stop_signals.logging.warning

    def warning_then_second_signal(*args):
        warning(*args)
        monkeypatch.setattr(stop_signals.logging, "warning", warning)  # only once
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(stop_signals.logging, "warning", warning_then_second_signal)
    with pytest.raises(Exited) as exited:
        signal.raise_signal(signal.SIGINT)
    assert exited.value.args == (128 + signal.SIGINT,)
    assert installed == [1]
    assert "Stopped at once by a second SIGINT" in capfd.readouterr().err


def test_restore_puts_back_the_previous_handlers(tmp_path):
    before = {s: signal.getsignal(s) for s in stop_signals.HANDLED}
    stop_signals.restore(stop_signals.install(lambda: None, str(tmp_path)))
    assert {s: signal.getsignal(s) for s in stop_signals.HANDLED} == before
