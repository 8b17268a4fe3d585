"""Ctrl-C (SIGINT) and SIGTERM during training: the first asks for a clean stop, a second ends the process at once.

The first signal calls `request_stop` (the trainer checkpoints after its current host call and returns); a second
one ends the process with status 128 + signum without saving. The checkpoints on disk are complete: they are
written atomically, so the latest stays the last good one.

Which signal is the first is decided before anything else is done, by one call of an atomic counter. Python runs a
signal handler between bytecodes of the main thread, so a second signal that arrives while the first handler is
still writing its log line runs nested inside it; with the decision taken first, that nested one is the second
and ends the process, instead of seeing no stop requested yet and asking for a clean stop again.
"""

import itertools
import os
import signal
import sys

from absl import logging

import tensorflow as tf

HANDLED = (signal.SIGINT, signal.SIGTERM)


def stop_handler(request_stop, model_dir):
    """A signal handler: the first call requests a stop, any later one exits at once (see the module doc)."""
    count = itertools.count()

    def handle(signum, frame):
        del frame
        first = next(count) == 0
        name = signal.Signals(signum).name
        if first:
            request_stop()
            logging.warning("%s: checkpointing and stopping after the current host call (press Ctrl-C again to "
                            "stop at once without saving)", name)
            return
        latest = tf.train.latest_checkpoint(model_dir)
        sys.stderr.write(f"Stopped at once by a second {name} without saving; latest checkpoint: {latest}\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    return handle


def install(request_stop, model_dir):
    """Handle SIGINT and SIGTERM with stop_handler (main thread only); returns the previous handlers."""
    handle = stop_handler(request_stop, model_dir)
    return {signum: signal.signal(signum, handle) for signum in HANDLED}


def restore(previous):
    """Put back the handlers install() replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)
