"""Every gin file parses, builds its trainer and task, and the paper runs carry the paper's hyperparameters."""

import glob
import os

import gin
import pytest

from hit.configs import REPO_ROOT, parse_gin
from hit.models.presets import CONVNET_PRESETS, DISCRIMINATOR_PRESETS, GENERATOR_PRESETS, VQHIT_PRESETS
from hit.models.presets import GAT_DISCRIMINATOR_PRESETS, GAT_GENERATOR_PRESETS
from hit.tasks.gat import GATTask
from hit.tasks.vqhit import VQHiTTask
from hit.train.trainer import Trainer

# file: (generator, discriminator, learning rate, bCR weight, global batch, steps, data set, resolution)
PAPER_RUNS = {
    "imagenet_128.gin": ("hit_imagenet_128", "stylegan_d_128", 1e-4, 0.0, 256, 1_000_000, "imagenet2012", 128),
    # Table 1's ConvNet-R1: the same run with SAGAN's ResNet generator
    "imagenet_128_convnet_r1.gin": ("convnet_128", "stylegan_d_128", 1e-4, 0.0, 256, 1_000_000, "imagenet2012", 128),
    "ffhq_256_hit_s.gin": ("hit_s_256", "stylegan_d_256", 5e-5, 10.0, 256, 500_000, "ffhq", 256),
    "ffhq_256_hit_b.gin": ("hit_b_256", "stylegan_d_256", 5e-5, 10.0, 256, 500_000, "ffhq", 256),
    "ffhq_256_hit_l.gin": ("hit_l_256", "stylegan_d_256", 5e-5, 10.0, 256, 500_000, "ffhq", 256),
    "celebahq_256_hit_b.gin": ("hit_b_256", "stylegan_d_256", 5e-5, 10.0, 256, 250_000, "celeb_a_hq", 256),
    "celebahq_256_hit_b_500k.gin": ("hit_b_256", "stylegan_d_256", 5e-5, 10.0, 256, 500_000, "celeb_a_hq", 256),
    "ffhq_1024_hit_b.gin": ("hit_b_1024", "stylegan_d_1024", 1e-4, 0.0, 32, 500_000, "ffhq", 1024),
    "celebahq_1024_hit_b.gin": ("hit_b_1024", "stylegan_d_1024", 1e-4, 0.0, 32, 500_000, "celeb_a_hq", 1024),
}
ALL_FILES = sorted(os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "gin", "*", "*.gin"))
                   if "/common/" not in p)


def test_the_vqhit_run_carries_the_papers_settings():
    """Sec. 4.3 and A.5: the f16 VQGAN encoder with 1024 codes, HiT-B decoder, lambda1 5e-5, lambda2 0.1, R1 10,
    Adam(0, 0.99) with lr 1e-4 for both, batch 256, 500k iterations, ImageNet 256 centre crops."""
    parse_gin(["gin/vqhit/imagenet_256.gin"], [])
    q = gin.query_parameter
    assert q("hit.tasks.VQHiTTask.model_preset") == "vqhit_imagenet_256"
    assert q("hit.tasks.VQHiTTask.discriminator_preset") == "stylegan_d_256"
    assert q("hit.tasks.VQHiTTask.autoencoder_lr") == q("hit.tasks.VQHiTTask.discriminator_lr") == 1e-4
    assert (q("hit.tasks.VQHiTTask.beta1"), q("hit.tasks.VQHiTTask.beta2")) == (0.0, 0.99)
    assert (q("hit.tasks.VQHiTTask.perceptual_weight"), q("hit.tasks.VQHiTTask.adversarial_weight")) == (5e-5, 0.1)
    assert q("hit.tasks.VQHiTTask.r1_weight") == 10.0 and q("hit.tasks.VQHiTTask.loss_type") == "non_saturating"
    assert (q("hit.train.Trainer.global_batch_size"), q("hit.train.Trainer.train_steps")) == (256, 500_000)
    assert (q("hit.data.DataSource.name"), q("hit.data.DataSource.resolution")) == ("imagenet2012", 256)
    assert q("hit.data.DataSource.crop") == "center"
    preset = VQHIT_PRESETS["vqhit_imagenet_256"]
    assert (preset["num_codes"], preset["embedding_dim"], preset["encoder_multipliers"]) == (1024, 256, (1, 1, 2, 2, 4))


def test_the_gat_runs_carry_the_official_recipe(tmp_path):
    """Official GAT train.py and scripts/train_256_B2.sh: one file per size at patch 2, batch 512, 100k steps (40
    epochs), lr 2e-4 * 768 / width, AdamW(0, 0.99, eps 1e-8, no decay), clip 1, RpGAN + 0.05 aR1 + 0.05 aR2 + REPA
    1.0, EMA 0.999, bf16."""
    widths = {"s": 384, "b": 768, "l": 1024, "xl": 1152}
    assert {os.path.basename(p) for p in ALL_FILES if p.startswith("gin/gat/")} == {
        f"imagenet_256_{s}_2.gin" for s in widths}
    for size, width in widths.items():
        gin.clear_config()
        parse_gin([f"gin/gat/imagenet_256_{size}_2.gin"], [])
        task = Trainer(model_dir=str(tmp_path)).task
        assert (task.generator_preset, task.discriminator_preset) == (f"gat_{size}_2", f"gat_{size}_2")
        assert task.generator_lr == task.discriminator_lr == pytest.approx(2e-4 * 768 / width)
        assert task.adamw == dict(beta_1=0.0, beta_2=0.99, epsilon=1e-8, weight_decay=0.0, clip_norm=1.0)
        assert (task.r1_weight, task.r2_weight, task.penalty_sigma, task.repa_weight) == (0.05, 0.05, 0.01, 1.0)
        assert (task.ema_decay, task.precision, task.flip_probability) == (0.999, "bfloat16", 0.4)
        q = gin.query_parameter
        assert (q("hit.train.Trainer.global_batch_size"), q("hit.train.Trainer.train_steps")) == (512, 100_000)
        assert q("hit.data.DataSource.name") == "latents" and q("hit.data.DataSource.with_labels")
        assert q("hit.eval.Evaluator.reference_batch").endswith("VIRTUAL_imagenet256_labeled.npz")
        assert q("hit.eval.Evaluator.precision_recall") and q("hit.eval.Evaluator.protocol") == "tfgan_inception"
    gin.clear_config()


def test_every_paper_run_has_a_file():
    assert {os.path.basename(p) for p in ALL_FILES if p.startswith("gin/hit/")} == set(PAPER_RUNS)


@pytest.mark.parametrize("path", ALL_FILES)
def test_gin_file_parses_and_builds_its_trainer(path, tmp_path):
    parse_gin([path], [])
    trainer = Trainer(model_dir=str(tmp_path))  # constructs the task, which validates presets and policies
    if isinstance(trainer.task, VQHiTTask):
        output_size = VQHIT_PRESETS[trainer.task.model_preset]["resolution"]
    elif isinstance(trainer.task, GATTask):
        output_size = GAT_GENERATOR_PRESETS[trainer.task.generator_preset]["resolution"]
    else:
        output_size = {**GENERATOR_PRESETS, **CONVNET_PRESETS}[trainer.task.generator_preset]["output_size"]
    discriminator = {**DISCRIMINATOR_PRESETS, **GAT_DISCRIMINATOR_PRESETS}[trainer.task.discriminator_preset]
    assert output_size == discriminator["resolution"] == gin.query_parameter("hit.data.DataSource.resolution")
    assert trainer.global_batch_size % 8 == 0 or "demo" in path  # splits over 8-core TPU slices


@pytest.mark.parametrize("name", sorted(PAPER_RUNS))
def test_paper_hyperparameters(name):
    parse_gin([f"gin/hit/{name}"], [])
    g, d, lr, bcr, batch, steps, data, resolution = PAPER_RUNS[name]
    q = gin.query_parameter
    assert (q("hit.tasks.GANTask.generator_preset"), q("hit.tasks.GANTask.discriminator_preset")) == (g, d)
    assert q("hit.tasks.GANTask.generator_lr") == q("hit.tasks.GANTask.discriminator_lr") == lr
    assert q("hit.tasks.GANTask.bcr_weight") == bcr
    assert (q("hit.train.Trainer.global_batch_size"), q("hit.train.Trainer.train_steps")) == (batch, steps)
    assert (q("hit.data.DataSource.name"), q("hit.data.DataSource.resolution")) == (data, resolution)
    # The shared recipe (hit-gan run.py and README): R1 10 every step, Adam(0, 0.99), non-saturating, simultaneous,
    # EMA 0.999 @ 10.
    assert (q("hit.tasks.GANTask.r1_weight"), q("hit.tasks.GANTask.r1_interval")) == (10.0, 1)
    assert (q("hit.tasks.GANTask.beta1"), q("hit.tasks.GANTask.beta2")) == (0.0, 0.99)
    assert q("hit.tasks.GANTask.loss_type") == "non_saturating" and q("hit.tasks.GANTask.update") == "simultaneous"
    assert (q("hit.tasks.GANTask.ema_decay"), q("hit.tasks.GANTask.ema_start_step")) == (0.999, 10)
    assert q("hit.train.Trainer.steps_per_loop") == 200
    assert q("hit.tasks.GANTask.bn_group_size") == 8  # the official 8 images per TPU core, on any machine


@pytest.mark.parametrize("binding, message", [
    ("Trainer.train_steps = 'ten'", "bad gin value: Trainer.train_steps = 'ten': expected an integer"),
    ("DataSource.resolution = '32'", "bad gin value: DataSource.resolution = '32': expected an integer"),
    ("Trainer.global_batch_size = 4.5", "bad gin value: Trainer.global_batch_size = 4.5: expected an integer"),
    ("GANTask.ema_decay = 'high'", "bad gin value: GANTask.ema_decay = 'high': expected a number"),
    ("DataSource.random_flip = 1", "bad gin value: DataSource.random_flip = 1: expected True or False"),
    ("DataSource.name = 3", "bad gin value: DataSource.name = 3: expected a string"),
])
def test_a_value_of_the_wrong_type_is_one_line_naming_what_was_expected(binding, message):
    # Before, these failed later with tracebacks of 18-104 lines (or "4.5 does not split over 1 replicas").
    with pytest.raises(ValueError) as info:
        parse_gin(["gin/demo/tiny_random.gin"], [binding])
    assert str(info.value) == message


def test_integers_are_numbers_and_none_or_references_are_not_checked():
    parse_gin(["gin/demo/tiny_random.gin"], ["GANTask.r1_weight = 1", "GANTask.bn_group_size = None",
                                             "Evaluator.reference_path = '/x.npz'"])
    assert gin.query_parameter("GANTask.r1_weight") == 1


def test_configurables_keep_the_names_that_runs_config_gin_files_hold():
    """config.gin of a run binds hit.tasks.GANTask, hit.train.Trainer, ...: names fixed by @gin.configurable(module=
    ...) whatever file defines the class, so moving a module must not change them (runs would no longer resume)."""
    from hit.configs import register_configurables

    register_configurables()
    names = {"hit.data.DataSource", "hit.tasks.GANTask", "hit.tasks.GATTask", "hit.tasks.VQHiTTask",
             "hit.train.Trainer", "hit.eval.Evaluator"}
    registered = {name for name in names if gin.config._REGISTRY.get_match(name) is not None}  # noqa: SLF001
    assert registered == names
    # A config.gin as an earlier layout (hit/sampling.py, hit/augment.py at the root) wrote it parses unchanged.
    gin.parse_config(["hit.tasks.GANTask.generator_preset = 'hit_tiny_32'", "Trainer.train_steps = 3",
                      "hit.data.DataSource.name = 'random'"])
    assert gin.query_parameter("GANTask.generator_preset") == "hit_tiny_32"
