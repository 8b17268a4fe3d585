"""hit.train.checkpoints: which checkpoints a run has, what a damaged one says, and the leftovers of a save that
never finished; and the trainer's resume from a damaged checkpoint or another configuration (hit.train.run_config)."""

import os

import gin
import keras
import pytest
import tensorflow as tf

from hit.configs import parse_gin
from hit.tasks.gan import GANTask
from hit.train import checkpoints, run_config
from hit.train.trainer import Trainer


def saved_run(model_dir, steps=(1, 2, 3)):
    """Checkpoints ckpt-<step> of two variables, saved by a CheckpointManager as the trainer saves."""
    variables = {"big": tf.Variable(tf.range(3000, dtype=tf.float32)), "small": tf.Variable([1.0, 2.0])}
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(**variables), str(model_dir), max_to_keep=None)
    for step in steps:
        variables["small"].assign([step, step])
        manager.save(checkpoint_number=step)
    return variables


def test_checkpoints_are_listed_from_the_directory_not_the_state_file(tmp_path):
    saved_run(tmp_path)
    assert checkpoints.checkpoints_in(str(tmp_path)) == [str(tmp_path / f"ckpt-{s}") for s in (1, 2, 3)]
    for name in os.listdir(tmp_path):  # moved away by hand: the state file still names it as the latest
        if name.startswith("ckpt-3."):
            os.rename(tmp_path / name, tmp_path / f"moved-{name}")
    assert tf.train.latest_checkpoint(str(tmp_path)) is None  # TensorFlow's answer would start the run over
    assert checkpoints.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-2")
    assert checkpoints.latest_checkpoint(str(tmp_path / "nothing")) is None


@pytest.mark.parametrize("harm", ["truncated", "missing", "flipped", "index"])
def test_a_damaged_checkpoint_names_its_file_and_the_newest_intact_one(tmp_path, harm):
    variables = saved_run(tmp_path)
    data, index = tmp_path / "ckpt-3.data-00000-of-00001", tmp_path / "ckpt-3.index"
    if harm == "truncated":
        data.write_bytes(data.read_bytes()[:100])
    elif harm == "missing":
        data.unlink()
    elif harm == "flipped":
        raw = bytearray(data.read_bytes())
        raw[200] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:
        index.write_bytes(index.read_bytes()[:10])
    (tmp_path / "ckpt-2.data-00000-of-00001").write_bytes(b"")  # ckpt-2 is damaged too: ckpt-1 is the intact one
    with pytest.raises(checkpoints.DamagedCheckpointError) as info:
        checkpoints.restore(tf.train.Checkpoint(**variables), str(tmp_path / "ckpt-3"))
    message = str(info.value)
    what = {"truncated": f"{data} is damaged (Read less bytes than requested",
            "missing": f"{data} is missing", "flipped": f"{data} is damaged (",
            "index": f"{index} cannot be read ("}[harm]
    assert message.startswith(f"checkpoint {tmp_path / 'ckpt-3'} is damaged: {what}"), message
    assert f"the newest intact checkpoint is {tmp_path / 'ckpt-1'}: to resume from it, move the damaged one away" \
        in message
    assert "\n" not in message
    assert checkpoints.damage(str(tmp_path / "ckpt-1")) is None


def test_a_failed_restore_of_an_intact_checkpoint_keeps_its_own_error(tmp_path):
    saved_run(tmp_path)
    with pytest.raises(ValueError, match="incompatible"):  # a shape mismatch is no damage
        checkpoints.restore(tf.train.Checkpoint(small=tf.Variable([1.0, 2.0, 3.0])), str(tmp_path / "ckpt-1"))


class ScaleMadeInInit(keras.layers.Layer):
    """A layer whose weight is made in __init__: its path is "<layer>/scale", without the model's name."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale = self.add_weight(name="scale", shape=())


class TwoScales(keras.Model):
    def __init__(self):
        super().__init__(name="two_scales")
        self.first, self.second = ScaleMadeInInit(name="first"), ScaleMadeInInit(name="second")


def test_variables_that_would_share_a_checkpoint_key_are_an_error():
    # Before, one of them was silently left out of every checkpoint (GAT's D kept one LayerScale of four).
    with pytest.raises(ValueError, match="two_scales: variables first/scale and second/scale would share the "
                                         "checkpoint key 'scale': create every variable in build"):
        checkpoints.variables_by_path(TwoScales())


def test_leftovers_of_unfinished_saves_are_removed(tmp_path):
    saved_run(tmp_path, steps=(1,))
    (tmp_path / "ckpt-2_temp").mkdir()
    (tmp_path / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 1000)
    assert checkpoints.remove_leftovers(str(tmp_path)) == ["ckpt-2_temp"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]


# ---- the trainer's resume ---------------------------------------------------------------------------------

TINY = "gin/demo/tiny_random.gin"
FAST = ["Trainer.jit_compile = False", "Trainer.sample_every = 0", "Trainer.steps_per_loop = 1",
        "Trainer.checkpoint_every = 1"]
LAYER_NORM = ["GANTask.generator_overrides = {'norm_type': 'layer'}", "GANTask.bn_group_size = None"]


def train(model_dir, steps, *params):
    gin.clear_config()
    parse_gin([TINY], [*FAST, f"Trainer.train_steps = {steps}", *params])
    return Trainer(model_dir=str(model_dir)).train()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny GAN run of 2 steps (ckpt-1, ckpt-2) with its config.gin; tests copy it before changing it."""
    model_dir = tmp_path_factory.mktemp("run")
    train(model_dir, 2)
    return model_dir


def copy_run(source, target):
    tf.io.gfile.makedirs(str(target))
    for name in os.listdir(source):
        tf.io.gfile.copy(os.path.join(source, name), str(target / name))
    return target


@pytest.mark.slow
def test_resuming_from_a_damaged_checkpoint_says_how_and_the_older_one_resumes(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    data = run / "ckpt-2.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:5000])
    with pytest.raises(checkpoints.DamagedCheckpointError, match=(
            f"checkpoint {run / 'ckpt-2'} is damaged: {data} is damaged .*the newest intact checkpoint is "
            f"{run / 'ckpt-1'}: to resume from it")):
        train(run, 3)
    (run / "damaged").mkdir()  # what the message says to do
    for name in os.listdir(run):
        if name.startswith("ckpt-2."):
            os.rename(run / name, run / "damaged" / name)
    (run / "ckpt-3_temp").mkdir()  # a save killed half-way: removed at start-up (it can be a checkpoint's size)
    (run / "ckpt-3_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 1000)
    train(run, 3)
    assert checkpoints.latest_checkpoint(str(run)) == str(run / "ckpt-3")
    assert not (run / "ckpt-3_temp").exists()


@pytest.mark.slow
def test_samples_are_written_before_their_checkpoint(tmp_path, monkeypatch):
    # A run killed between the two then redoes those steps, grid included; before, the grid of a checkpointed step
    # was lost for good.
    seen = []
    save = Trainer._save

    def checked_save(self, step):
        seen.append((step, (tmp_path / "samples" / f"step_{step:08d}.png").exists()))
        return save(self, step)

    monkeypatch.setattr(Trainer, "_save", checked_save)
    train(tmp_path, 2, "Trainer.sample_every = 1", "Trainer.num_samples = 2")
    assert seen == [(1, True), (2, True)]


@pytest.mark.slow
def test_another_configuration_is_refused_before_anything_is_restored_or_written(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    config = (run / "config.gin").read_text()
    # LayerNorm instead of BatchNorm: its variables are a subset of the checkpoint's, so it used to resume silently.
    with pytest.raises(ValueError) as info:
        train(run, 3, *LAYER_NORM, "GANTask.r1_weight = 1.0")
    message = str(info.value)
    assert message.startswith(f"{run} holds a run of another configuration (GANTask.bn_group_size = 2 there, None "
                              "now; GANTask.generator_overrides = None there, {'norm_type': 'layer'} now; "
                              "GANTask.r1_weight = 10.0 there, 1.0 now)"), message
    assert "\n" not in message
    assert (run / "config.gin").read_text() == config and not (run / "ckpt-3.index").exists()
    # An already-trained run is checked too (its next steps would describe the other model).
    with pytest.raises(ValueError, match="holds a run of another configuration"):
        train(run, 2, "DataSource.resolution = 64")
    # What may change: the length, the reporting, evaluation and data paths. And a deliberate change.
    train(run, 3, "Trainer.log_every = 1", "Evaluator.num_samples = 10", "DataSource.data_dir = '/elsewhere'")
    train(run, 4, "GANTask.r1_weight = 1.0", "Trainer.check_resumed_config = False")
    assert checkpoints.latest_checkpoint(str(run)) == str(run / "ckpt-4")


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_one_line_without_a_config_to_compare(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    os.remove(run / "config.gin")
    with pytest.raises(ValueError) as info:
        train(run, 3, *LAYER_NORM)
    assert f"{run / 'ckpt-2'} holds" in str(info.value) and "the checkpoint was saved from another model" in \
        str(info.value)


def test_bindings_compare_with_defaults_references_and_scopes():
    saved = "Trainer.task = @GANTask()\nGANTask.r1_weight = 10.0\nGANTask.beta1 = 0.0\nTrainer.train_steps = 4\n"
    same = "Trainer.task = @hit.tasks.GANTask()\nTrainer.train_steps = 9\n"  # unbound: the defaults
    assert run_config.differences(saved, same) == []
    other = "Trainer.task = @GATTask()\nGANTask.beta1 = 0.5\n"
    assert [k for k, _, _ in run_config.differences(saved, other)] == ["GANTask.beta1", "Trainer.task"]
    assert GANTask  # registered: its defaults are read from its signature
