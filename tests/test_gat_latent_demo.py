"""The latent-space GAT demo's whole path at tiny size, each step through its command line as the README gives it:
tools/train_demo_vae.py -> tools/extract_latents.py -> hit.main (gin/demo/gat_latent_fashion_mnist.gin: train,
then eval against Fashion-MNIST's test images) -> tools/sample.py and tools/export.py, decoded by the demo
autoencoder. Fashion-MNIST is replaced by tiny IDX files the test writes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from hit.eval.classifier_distance import DemoClassifier
from hit.models.weights.sd_vae_torch import load_sd_vae
from tests.idx_files import write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VAE = dict(channels=8, channel_multipliers=[1, 2, 2], groups=4)  # 32 x 32 x 1 -> 8 x 8 x 4, as the demo's
TINY_GAT = ["GATTask.generator_overrides = {'width': 16, 'depth': 4, 'heads': 2}",
            "GATTask.discriminator_overrides = {'width': 16, 'depth': 4, 'heads': 2, 'projection_dim': 16}"]


def run(args, **kwargs):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                            capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, (args, result.stderr[-3000:])
    return result.stdout


@pytest.mark.slow
def test_autoencoder_latents_gat_evaluation_samples_and_export(tmp_path):
    data = tmp_path / "fashion_mnist"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 96), ("test", 40)):
        write_idx(data, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).tolist(), split)
    vae_path = str(tmp_path / "demo_vae.safetensors")
    run(["tools/train_demo_vae.py", f"--output={vae_path}", "--steps=2", "--batch_size=8",
         f"--config={json.dumps(TINY_VAE)}", f"--data_dir={data}"])
    latent_dir = tmp_path / "latents"
    run(["tools/extract_latents.py", "--source=fashion_mnist", f"--data_dir={data}", f"--vae_weights={vae_path}",
         f"--output_dir={latent_dir}", "--batch_size=32", "--shard_size=48"])
    metadata = json.loads((latent_dir / "latents.json").read_text())
    vae = load_sd_vae(vae_path)
    assert metadata["scale_factor"] == vae.scale_factor and metadata["fields"]["moments"]["shape"] == [8, 8, 8]

    classifier = str(tmp_path / "classifier.weights.h5")
    DemoClassifier(channels=1).save(classifier)  # untrained: enough to run the evaluation
    model_dir = tmp_path / "run"
    settings = [f"DataSource.data_dir = '{latent_dir}'", f"GATTask.vae_weights = '{vae_path}'",
                f"reference/DataSource.data_dir = '{data}'", f"Evaluator.weights_path = '{classifier}'",
                "Evaluator.num_samples = 40", "Evaluator.batch_size = 20", "Evaluator.inception_split = 20",
                "Evaluator.kid_samples = 20", "Trainer.train_steps = 2", "Trainer.global_batch_size = 4",
                "Trainer.steps_per_loop = 1", "Trainer.checkpoint_every = 2", "Trainer.sample_every = 2",
                "Trainer.num_samples = 10", "Trainer.jit_compile = False", *TINY_GAT]
    run(["-m", "hit.main", "--gin_file=gin/demo/gat_latent_fashion_mnist.gin", f"--model_dir={model_dir}",
         "--mode=train_and_eval", "--eval_timeout=0", *[f"--gin_param={s}" for s in settings]])
    rows = [json.loads(line) for line in (model_dir / "eval" / "results.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and np.isfinite(rows[-1]["fid"])
    assert (rows[-1]["decoder"], rows[-1]["quantized"]) == ("demo_vae.safetensors", True)

    grid = tmp_path / "grid.png"
    run(["tools/sample.py", f"--model_dir={model_dir}", f"--output={grid}", "--num_samples=20"])
    assert tf.io.decode_png(tf.io.read_file(str(grid))).shape[-1] in (1, 3)  # 32 x 32 images, decoded
    export_dir = tmp_path / "export"
    run(["tools/export.py", f"--model_dir={model_dir}", f"--export_dir={export_dir}"])
    served = tf.saved_model.load(str(export_dir / "2"))
    images = served.signatures["generate"](seed=tf.constant([0, 1], tf.int64), label=tf.constant([3, 4], tf.int32))
    assert images["images"].dtype == tf.uint8 and images["images"].shape[:3] == (2, 32, 32)  # through the decoder
