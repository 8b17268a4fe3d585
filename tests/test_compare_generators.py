"""hit.bench.compare and tools/compare_generators.py: equal wall-clock runs measured at time marks (no quality checks:
quality belongs to the measured table in the README)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import hit  # noqa: F401
from hit.bench import compare
from hit.core.images import rgb_if_mixed
from hit.eval.classifier_distance import DemoClassifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_coverage_counts_class_shares_and_near_duplicates():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 8))
    fake = rng.normal(size=(200, 8))
    fake[100:] = fake[:100] + 1e-6  # 100 pairs of near-copies: all 200 have a near-duplicate
    logits = np.zeros((200, 10))
    logits[np.arange(200), np.repeat([0, 1, 2, 3], [100, 50, 30, 20])] = 1.0  # classes 4-9 never predicted
    real_logits = np.eye(10)[np.arange(200) % 10]  # real images of every class
    result = compare.coverage(fake, logits, real, real_logits)
    assert result["class_min"] == 0.0
    assert result["class_max"] == pytest.approx(100 * 10 / 200)
    assert result["class_shares"] == [5.0, 2.5, 1.5, 1.0] + [0.0] * 6
    assert result["duplicates"] == 1.0
    spread = compare.coverage(rng.normal(size=(200, 8)), logits, real, real_logits)["duplicates"]
    assert spread < 0.1  # independent draws of the real distribution: about the 1% the threshold is set at


def test_near_duplicates_within_a_class_show_where_the_whole_set_does_not():
    """Balanced classes, each of them a handful of images repeated: every sample has a near-copy in its class,
    while the classes lie far apart. Real images of a class are spread as the generated ones would be."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(10, 8)) * 10
    real = centers[np.arange(500) % 10] + rng.normal(size=(500, 8))
    real_logits = np.eye(10)[np.arange(500) % 10]
    fake_logits = real_logits.copy()
    varied = centers[np.arange(500) % 10] + rng.normal(size=(500, 8))
    collapsed = varied.copy()
    collapsed[250:] = varied[:250] + 1e-6  # the second half copies the first, class by class
    assert compare.coverage(varied, fake_logits, real, real_logits)["class_duplicates"] < 0.1
    result = compare.coverage(collapsed, fake_logits, real, real_logits)
    assert result["class_duplicates"] == 1.0 and result["class_duplicate_shares"] == [1.0] * 10
    # A class the classifier never predicts among the real images has no threshold: it is left out, not zero.
    missing = compare.coverage(collapsed, fake_logits, real, np.eye(10)[np.arange(500) % 9])
    assert missing["class_duplicate_shares"][9] is None and missing["class_duplicates"] == 1.0


def test_runs_and_marks_are_checked():
    assert compare.parse_run("hit=a.gin+b.gin") == compare.Run("hit", ("a.gin", "b.gin"))
    for bad in ("hit", "=a.gin", "hit=", "h i=a.gin"):
        with pytest.raises(ValueError, match="bad run"):
            compare.parse_run(bad)
    assert compare.check_marks(["60", "120"]) == [60.0, 120.0]
    for bad in ([], ["0"], ["120", "60"], ["60", "60"]):
        with pytest.raises(ValueError, match="time marks"):
            compare.check_marks(bad)


def test_the_panel_puts_runs_in_columns_and_marks_in_rows():
    cells = [np.full((4, 4, 3), 10 * (run + 1) + mark, np.uint8) for run in range(2) for mark in range(3)]
    panel = compare._panel(cells, num_runs=2)
    assert panel.shape == (3 * 4 + 2 * compare.GAP, 2 * 4 + compare.GAP, 3)
    step = 4 + compare.GAP
    for run in range(2):
        for mark in range(3):
            assert (panel[mark * step:mark * step + 4, run * step:run * step + 4] == 10 * (run + 1) + mark).all()
    assert (panel[4:step] == 255).all() and (panel[:, 4:step] == 255).all()


def test_a_gray_run_beside_an_rgb_run_is_tiled_to_rgb():
    """The GAT latent demo's samples are 1-channel, the HiT demo's 3-channel: the panel (and the evaluator's
    real|fake panel, hit.core.images.rgb_if_mixed) shows both in RGB."""
    panel = compare._panel([np.full((4, 4, 3), 7, np.uint8), np.full((4, 4, 1), 9, np.uint8)], num_runs=2)
    assert panel.shape == (4, 2 * 4 + compare.GAP, 3)
    assert (panel[:, :4] == 7).all() and (panel[:, 4 + compare.GAP:] == 9).all()
    same = [np.zeros((2, 2, 1)), np.ones((2, 2, 1))]
    assert [a.shape for a in rgb_if_mixed(same)] == [(2, 2, 1)] * 2  # all gray: left as they are


@pytest.mark.slow
def test_the_tool_trains_two_generators_and_writes_its_table_and_panel(tmp_path):
    weights = str(tmp_path / "classifier.weights.h5")
    DemoClassifier().save(weights)  # untrained: enough to run the measures
    gat = tmp_path / "gat.gin"  # a class-conditional run (the random images have no labels: G learns class 0)
    gat.write_text("Trainer.task = @GATTask()\nGATTask.generator_preset = 'gat_tiny'\nGATTask.repa_weight = 0.0\n"
                   "GATTask.generator_overrides = {'output_channels': 3, 'resolution': 32}\n"
                   "GATTask.discriminator_overrides = {'channels': 3, 'resolution': 32}\n")
    output = tmp_path / "compare"
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run(
        [sys.executable, "tools/compare_generators.py", f"--output_dir={output}", "--marks=1",
         "--run=hit=gin/demo/tiny_random.gin", f"--run=gat=gin/demo/tiny_random.gin+{gat}",
         f"--classifier={weights}", "--num_samples=64", "--coverage_samples=32", "--batch_size=32",
         "--gin_param=Trainer.jit_compile = False", "--gin_param=Trainer.sample_every = 0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (output / "compare.jsonl").read_text().splitlines()]
    assert [(r["run"], r["mark_s"]) for r in rows] == [("hit", 1.0), ("gat", 1.0)]
    for row in rows:
        assert row["trained_s"] >= 1.0 and row["step"] >= 1
        assert all(np.isfinite(row[k]) for k in ("fcd", "classifier_score", "class_min", "class_max", "duplicates"))
        # The untrained classifier may give the samples no class it gives a real image: then nothing to average.
        measured = [share for share in row["class_duplicate_shares"] if share is not None]
        assert (row["class_duplicates"] == pytest.approx(np.mean(measured)) if measured
                else np.isnan(row["class_duplicates"]))
    table = (output / "compare.md").read_text()
    assert "| hit | 1 |" in table and "| gat | 1 |" in table and table in result.stdout
    panel = tf.io.decode_png(tf.io.read_file(str(output / "compare.png"))).numpy()
    assert panel.shape == (8 * 32, 2 * 10 * 32 + compare.GAP, 3)  # 80 samples a run in 10 columns, one mark
    assert tf.train.latest_checkpoint(str(output / "gat")) is not None


def test_a_used_output_directory_is_refused(tmp_path):
    (tmp_path / "hit").mkdir()
    ckpt = tf.train.Checkpoint(v=tf.Variable(1.0))
    ckpt.save(str(tmp_path / "hit" / "ckpt"))
    evaluator = object()
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        compare._train_and_measure(compare.Run("hit", ()), [1.0], str(tmp_path), evaluator, 32, 0)
