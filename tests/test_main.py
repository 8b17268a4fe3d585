"""`python -m hit.main` as a user runs it: one-line configuration errors, and SIGTERM (TPU preemption)."""

import os
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = ["--gin_file=gin/demo/tiny_random.gin"]


def run_main(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "hit.main", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_unknown_gin_key_is_a_one_line_error(tmp_path):
    result = run_main(*DEMO, "--gin_param=Trainer.bogus_steps = 3", f"--model_dir={tmp_path}")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: bad gin config: Configurable 'Trainer' doesn't have a parameter named "
                           "'bogus_steps'"), last
    assert not os.listdir(tmp_path)  # nothing was written


def test_bad_preset_in_gin_is_a_one_line_error(tmp_path):
    result = run_main(*DEMO, "--gin_param=GANTask.generator_preset = 'hit_xl_256'", f"--model_dir={tmp_path}")
    assert result.returncode == 1
    assert "unknown generator preset 'hit_xl_256'" in result.stderr.strip().splitlines()[-1]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    args = [*DEMO, f"--model_dir={tmp_path}", "--gin_param=Trainer.train_steps = 100000",
            "--gin_param=Trainer.steps_per_loop = 1", "--gin_param=Trainer.checkpoint_every = 100000",
            "--gin_param=Trainer.sample_every = 0", "--gin_param=Trainer.jit_compile = False"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-m", "hit.main", *args], cwd=ROOT, env=env,
                               stderr=subprocess.PIPE, text=True)
    log = []
    try:
        for line in process.stderr:  # wait until training is under way
            log.append(line)
            if "step 3/100000" in line:
                break
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=120)
        log.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(log)
    assert process.returncode == 0, text[-3000:]
    assert "Stopped by signal at step" in text
    latest = tf.train.latest_checkpoint(str(tmp_path))
    step = int(latest.rsplit("-", 1)[1])
    assert 3 <= step < 100000


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian package dataset-fashion-mnist is not installed (CI installs it)")
def test_the_fashion_mnist_demo_runs_end_to_end(tmp_path):
    result = run_main("--gin_file=gin/demo/fashion_mnist_32.gin", f"--model_dir={tmp_path}",
                      "--gin_param=Trainer.train_steps = 4", "--gin_param=Trainer.steps_per_loop = 2",
                      "--gin_param=Trainer.checkpoint_every = 4", "--gin_param=Trainer.sample_every = 4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 4/4" in result.stderr and "images/s" in result.stderr and "ETA" in result.stderr
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "samples" / "latest.png"))).numpy()
    assert grid.shape == (8 * 32, 8 * 32, 3)  # 64 EMA samples


def eval_params(weights):
    return ["--gin_param=Evaluator.protocol = 'demo_classifier'", f"--gin_param=Evaluator.weights_path = '{weights}'",
            "--gin_param=Evaluator.num_samples = 64", "--gin_param=Evaluator.batch_size = 32",
            "--gin_param=Evaluator.inception_split = 32", "--gin_param=Evaluator.kid_samples = 64"]


def test_train_and_eval_then_the_separate_eval_job(tmp_path):
    from hit.eval.classifier_distance import DemoClassifier

    weights = str(tmp_path / "classifier.weights.h5")
    DemoClassifier().save(weights)  # untrained weights are enough to run the job
    run = tmp_path / "run"
    train = ["--gin_param=Trainer.train_steps = 4", "--gin_param=Trainer.steps_per_loop = 2",
             "--gin_param=Trainer.checkpoint_every = 2", "--gin_param=Trainer.eval_every = 2",
             "--gin_param=Trainer.sample_every = 0", "--gin_param=Trainer.jit_compile = False"]
    result = run_main(*DEMO, f"--model_dir={run}", "--mode=train_and_eval", *train, *eval_params(weights))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval step 2" in result.stderr and "eval step 4" in result.stderr
    assert (run / "best" / "best.json").exists()
    result = run_main(*DEMO, f"--model_dir={run}", "--mode=eval", "--eval_timeout=30", *train, *eval_params(weights))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval step 4" in result.stderr  # the latest checkpoint, which reaches train_steps: the job ends


def test_eval_without_weights_is_a_one_line_error(tmp_path):
    result = run_main(*DEMO, f"--model_dir={tmp_path}", "--mode=eval",
                      "--gin_param=Evaluator.weights_path = '/nonexistent/inception.h5'")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: InceptionV3 weights not found at")
