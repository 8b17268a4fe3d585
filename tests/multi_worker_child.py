"""One process of tests/test_multi_worker.py: `python -m hit.main FLAGS...`, then its models' weights to an .npz.

    python tests/multi_worker_child.py OUT.npz FLAGS...

With HIT_TEST_STOP_AFTER_FIRST_CALL=1 in the environment, the trainer is asked to stop after its first host call
(as a signal to this process alone would).
"""

import os
import sys

import numpy as np
from absl import app

from hit import main
from hit.train.trainer import Trainer

jobs = []


class Job(main.Job):
    def __init__(self, *args):
        super().__init__(*args)
        jobs.append(self)


def stop_after_report(report):
    def wrapped(self, *args):
        report(self, *args)
        self.request_stop()
    return wrapped


if __name__ == "__main__":
    main.Job = Job
    if os.environ.get("HIT_TEST_STOP_AFTER_FIRST_CALL"):
        Trainer._report = stop_after_report(Trainer._report)
    try:
        app.run(main.main, argv=[sys.argv[0], *sys.argv[2:]])
    except SystemExit as e:
        if e.code:
            raise
    task = jobs[0].trainer.task
    np.savez(sys.argv[1], **{f"{name}/{v.path}": v.numpy() for name in ("generator", "discriminator")
                             for v in getattr(task, name).variables})
