"""Images -> a latent data set for GAT (REPA's preprocessing, as official GAT's README prescribes): SD-VAE posterior
moments, labels and, optionally, DINOv2 features of every image (and of its mirror image), in sharded TFRecords
(format: hit/data/latents.py).

    python tools/extract_latents.py --source=imagenet2012 --data_dir=~/tensorflow_datasets \\
        --vae_weights=sd-vae-ft-mse/diffusion_pytorch_model.safetensors \\
        --dinov2_weights=dinov2-base/model.safetensors --flipped --output_dir=latents/imagenet256
    python tools/extract_latents.py --source=fashion_mnist --crop=center --vae_weights=runs/demo_vae.safetensors \
        --output_dir=latents/fashion_mnist32   # the demo VAE (tools/train_demo_vae.py): 32 x 32 -> 8 x 8 x 4

Images come from any data source of hit.data (imagenet2012, celeb_a_hq, ffhq, folder, fashion_mnist, random) in
the split's own order, are cut to --resolution with ADM's centre crop (--crop=adm, GAT's recipe; --crop=center
is our pipelines' crop), encoded in batches under a tf.distribute strategy (--strategy=tpu / mirrored), and
written in shards of --shard_size source positions. Resumable: rerun the same command after an interruption
(hit/inference/latent_extraction.py says how). --num_tasks / --task_index split the shards between processes.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import hit  # noqa: E402,F401  (before TensorFlow: it sets TensorFlow's environment, see hit/__init__.py)
import tensorflow as tf  # noqa: E402
from hit.core.console import keep_project_lines  # noqa: E402
from hit.core.errors import one_line  # noqa: E402
from hit.data import latents  # noqa: E402
from hit.data.pipeline import IMAGE_SOURCES, DataSource  # noqa: E402
from hit.inference.latent_extraction import CROPS, Encoder, extract  # noqa: E402
from hit.models.weights.dinov2_hf import load_dinov2  # noqa: E402
from hit.models.weights.sd_vae_torch import load_sd_vae  # noqa: E402
from hit.train.strategy import STRATEGIES, make_strategy  # noqa: E402
LABELLED = ("imagenet2012", "fashion_mnist")  # sources whose images carry class labels

_SOURCE = flags.DEFINE_enum("source", None, IMAGE_SOURCES, "Where the images come from (hit.data sources).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "The source's data_dir (TFDS dir, image folder, FFHQ records).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "TFDS manual downloads (ImageNet tars), if not prepared.")
_SPLIT = flags.DEFINE_enum("split", "train", ("train", "eval"), "Which split of the source.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Image side fed to the VAE (SD: latents are 1/8 of it); "
                                   "default: the size the VAE file records (save_sd_vae's), else 256.")
_CROP = flags.DEFINE_enum("crop", "adm", CROPS, "adm: ADM's centre crop (GAT); center: our pipelines' crop.")
_VAE = flags.DEFINE_string("vae_weights", None, "SD-VAE .safetensors (ldm or diffusers naming), e.g. sd-vae-ft-mse, "
                           "or a VAE of one's own (tools/train_demo_vae.py), whose file records its options.")
_VAE_CONFIG = flags.DEFINE_string("vae_config", "{}", "JSON of SDVAE options overriding the file's (SD's: none).")
_DINOV2 = flags.DEFINE_string("dinov2_weights", None, "DINOv2 ViT-B/14 .safetensors (Hugging Face naming): also "
                              "store its class and patch features (REPA targets).")
_DINOV2_CONFIG = flags.DEFINE_string("dinov2_config", "{}", "JSON of DINOv2 options for another ViT.")
_FLIPPED = flags.DEFINE_bool("flipped", False, "Also store the moments and features of the mirrored image.")
_FEATURE_DTYPE = flags.DEFINE_enum("feature_dtype", "float16", latents.FEATURE_DTYPES,
                                   "Storage dtype of the DINOv2 features (about 0.4 MB per image in float16).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where latents.json and the shards go.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 1024, "Source images per shard.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step, all replicas together.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", None, "Only the first N images of the split (random: required).")
_STRATEGY = flags.DEFINE_enum("strategy", "default", [s for s in STRATEGIES if s != "multi_worker"],
                              "tpu, mirrored (GPUs) or default (one device); several hosts: --num_tasks.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu ('local' on a TPU VM).")
_TASK_INDEX = flags.DEFINE_integer("task_index", 0, "This process's index when --num_tasks processes share shards.")
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 1, "Processes sharing the shards (shard k: task k mod num_tasks).")


def json_flag(flag):
    try:
        value = json.loads(flag.value)
    except json.JSONDecodeError as e:
        raise ValueError(f"--{flag.name} is not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--{flag.name} must be a JSON object of options, got {flag.value}")
    return value


def main(argv):
    keep_project_lines()
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    missing = [f"--{f.name}" for f in (_SOURCE, _VAE, _OUTPUT_DIR) if not f.value]
    if missing:
        sys.exit(f"error: {', '.join(missing)} required")
    try:
        strategy = make_strategy(_STRATEGY.value, tpu=_TPU.value)
        with strategy.scope():
            vae = load_sd_vae(_VAE.value, _RESOLUTION.value, **json_flag(_VAE_CONFIG))
            dinov2 = _DINOV2.value and load_dinov2(_DINOV2.value, **json_flag(_DINOV2_CONFIG))
        resolution = vae.resolution  # --resolution, else the file's
        source = DataSource(_SOURCE.value, resolution=resolution, data_dir=_DATA_DIR.value,
                            manual_dir=_MANUAL_DIR.value, with_labels=_SOURCE.value in LABELLED)
        encoder = Encoder(vae, dinov2 or None, _FLIPPED.value, strategy, _BATCH_SIZE.value)
        weights = {"vae": os.path.basename(_VAE.value), "dinov2": _DINOV2.value and os.path.basename(_DINOV2.value)}
        print(extract(source, _OUTPUT_DIR.value, encoder, split=_SPLIT.value, resolution=resolution,
                      crop=_CROP.value, shard_size=_SHARD_SIZE.value, num_images=_NUM_IMAGES.value,
                      feature_dtype=_FEATURE_DTYPE.value, task_index=_TASK_INDEX.value, num_tasks=_NUM_TASKS.value,
                      weights=weights))
    except (ValueError, OSError, tf.errors.OpError) as e:
        sys.exit(f"error: {one_line(e)}")


if __name__ == "__main__":
    app.run(main)
