"""Test set-up: quiet TensorFlow, two logical CPU devices for MirroredStrategy tests, fixed seeds, clean gin."""

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import gin  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

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
