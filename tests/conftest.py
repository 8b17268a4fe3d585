"""Test set-up: quiet TensorFlow, two logical CPU devices for MirroredStrategy tests, fixed seeds, clean gin, and
the fast tier's time limit: in a run with -m "not slow", a test without @pytest.mark.slow that takes over SLOW_S
seconds fails."""

import math
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import gin  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

pytest_plugins = ("pytester",)  # test_slow_limit.py runs pytest on a temporary test file

# Setup (a module fixture counts against the first test using it) plus call, per test. Unmarked tests should stay
# well under it (about half): CI machines may be slower than the 2 cores these times were measured on. Only the
# fast tier is timed: in the whole suite the slow tests' subprocesses and XLA compilations take cores from the rest.
SLOW_S = 5.0


class SlowLimit:
    """Fails a passing test without the `slow` marker whose setup plus call took over `limit_s` seconds."""

    def __init__(self, limit_s):
        self.limit_s = limit_s
        self.setup_s = pytest.StashKey[float]()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        if call.when == "setup":
            item.stash[self.setup_s] = call.duration
        if call.when != "call" or not report.passed or item.get_closest_marker("slow"):
            return
        setup_s = item.stash.get(self.setup_s, 0.0)
        if setup_s + call.duration > self.limit_s:
            report.outcome = "failed"
            report.longrepr = (f"{item.nodeid} took {setup_s + call.duration:.1f} s (setup {setup_s:.1f} s + call "
                               f"{call.duration:.1f} s), over the {self.limit_s} s limit for tests without the slow "
                               "marker: mark it @pytest.mark.slow or make it faster")


# What machine_seconds() measured on the 2 AMD EPYC cores where SLOW_S was drawn (2026-12-02, two processes at
# once, as the two xdist workers run: 0.025-0.028 s).
REFERENCE_S = 0.026


def machine_seconds():
    """Seconds for a fixed run of small eager TensorFlow ops (their Python overhead dominates, as in model builds
    and eager steps), the median of 5."""
    x = tf.ones([64, 64])
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(200):
            x = tf.nn.relu(tf.matmul(x, x) * 1e-3)
        times.append(time.perf_counter() - start)
    return sorted(times)[2]


def pytest_configure(config):
    """SLOW_S stretched by how much slower this machine is than the reference (never shrunk), so that the fast
    tier's limit means the same work on a slower CI machine."""
    limit = math.inf
    if "not slow" in config.option.markexpr:
        machine_seconds()  # the first ops pay TensorFlow's start-up
        limit = round(SLOW_S * max(1.0, machine_seconds() / REFERENCE_S), 1)
    config.pluginmanager.register(SlowLimit(limit), "slow_limit")


# Must happen before TensorFlow initialises its devices, i.e. before any test runs an op.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
# Bit-identical reruns (resume tests compare weights exactly).
tf.config.experimental.enable_op_determinism()


@pytest.fixture(autouse=True)
def _seed_and_clean_gin():
    keras.utils.set_random_seed(1234)
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def two_replicas():
    """One MirroredStrategy over the 2 logical CPUs for the whole test process, as a training process has one.
    Each new strategy numbers its collectives from the same start, and after one that all-reduced in replica
    context (BatchNorm statistics, code counts) a second one failed with "Shape mismatch in the collective
    instance 100" (seen with test_vqhit_task.py, then test_gan_step.py, in one process)."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture
def stopped_run():
    """stopped_run(model_dir, step, new_dir): new_dir holding model_dir's step-`step` checkpoint (and its gin file)
    alone, as a run preempted right after saving it leaves its directory. A resume test then trains ONE run
    straight through and resumes a copy of its middle checkpoint, instead of training a third time."""
    def copy(model_dir, step, new_dir):
        os.makedirs(new_dir)
        names = [n for n in os.listdir(model_dir) if n.startswith(f"ckpt-{step}.") or n == "config.gin"]
        assert any(n.startswith(f"ckpt-{step}.") for n in names), f"no step-{step} checkpoint in {model_dir}"
        for name in names:
            shutil.copy(os.path.join(model_dir, name), os.path.join(new_dir, name))
        with open(os.path.join(new_dir, "checkpoint"), "w") as f:
            f.write(f'model_checkpoint_path: "ckpt-{step}"\nall_model_checkpoint_paths: "ckpt-{step}"\n')
        return new_dir
    return copy
