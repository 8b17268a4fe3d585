"""`python -m hit.main` as a user runs it: one-line errors, Ctrl-C and SIGTERM, resume, a quiet console,
--deterministic, the end-of-run message, and the eval job over every checkpoint.

Errors that only need their message checked call hit.main's main() in this process (`in_process`); the
subprocess tests (marked slow) check what only a process shows: exit codes, signals, the console's filtering."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = ["--gin_file=gin/demo/tiny_random.gin"]
FAST = ["--gin_param=Trainer.jit_compile = False", "--gin_param=Trainer.sample_every = 0"]
# Our own absl log lines ("I1123 16:25:56.574687 140311 trainer.py:192] ...") and the end-of-run message.
OWN_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ (main|trainer|evaluator|progress|pipeline|image_folder)\.py:\d+\] ")


def clean_env():
    """The user's environment: no TF_CPP_MIN_LOG_LEVEL (the tests' conftest sets one; a user has none)."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def run_main(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "hit.main", *args], cwd=ROOT, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def start_main(*args):
    return subprocess.Popen([sys.executable, "-m", "hit.main", *args], cwd=ROOT, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(process, pattern, log):
    """Read stderr lines into `log` until one contains `pattern`."""
    for line in process.stderr:
        log.append(line)
        if pattern in line:
            return
    raise AssertionError(f"{pattern!r} never appeared:\n{''.join(log)[-3000:]}")


def assert_one_error_line(result, *fragments):
    """The command failed with exactly one `error:` line, last, after nothing but our own log lines."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert all(OWN_LINE.match(line) for line in lines[:-1]), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def assert_quiet(stderr):
    """Only our own log lines: no oneDNN / CPU-feature banner, grappler error or TensorFlow INFO line."""
    others = [line for line in stderr.splitlines() if not OWN_LINE.match(line)]
    assert not others, "\n".join(others)


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.endswith("VARIABLE_VALUE") and "data_iterator" not in name}


@pytest.fixture
def in_process():
    """in_process(*flags): hit.main's main() in this process after parsing `flags` as `python -m hit.main` would;
    its `error: ...` exit message, or None when it returns. Flags, signal handlers and the console filter are put
    back afterwards."""
    from hit import main
    from hit.core.console import keep_project_lines

    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    absl_level = logging.getLogger("absl").level

    def run(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["hit.main", *args])
        flags.FLAGS.verbosity = 0  # INFO, as absl's app.run sets after parsing
        try:
            main.main(["hit.main"])
        except SystemExit as e:
            return e.code
        return None

    yield run
    flags.FLAGS.unparse_flags()
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    keep_project_lines(verbose=True)  # drops the filter main() added to absl's handler
    logging.getLogger("absl").setLevel(absl_level)  # the verbosity flag set it


def assert_error_message(error, *fragments):
    """main() exited with one `error: ...` line (sys.exit with a message: exit status 1) holding `fragments`."""
    assert isinstance(error, str) and error.startswith("error: ") and "\n" not in error, error
    for fragment in fragments:
        assert fragment in error, error


def test_unknown_gin_key_is_a_one_line_error(tmp_path, in_process):
    error = in_process(*DEMO, "--gin_param=Trainer.bogus_steps = 3", f"--model_dir={tmp_path}")
    assert_error_message(error, "error: bad gin config: Configurable 'Trainer' doesn't have a parameter named "
                                "'bogus_steps'")
    assert not os.listdir(tmp_path)  # nothing was written


def test_bad_preset_in_gin_is_a_one_line_error(tmp_path, in_process):
    error = in_process(*DEMO, "--gin_param=GANTask.generator_preset = 'hit_xl_256'", f"--model_dir={tmp_path}")
    assert_error_message(error, "unknown generator preset 'hit_xl_256'")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_model_dir_that_is_a_file_is_a_one_line_error(tmp_path, in_process, mode):
    path = tmp_path / "run"
    path.write_text("not a directory")
    error = in_process(*DEMO, f"--model_dir={path}", f"--mode={mode}")
    assert_error_message(error, f"--model_dir {path} is a file")
    assert path.read_text() == "not a directory"


def _write_png(path, value):
    tf.io.write_file(str(path), tf.io.encode_png(np.full((8, 8, 3), value, np.uint8)))


@pytest.mark.slow  # in this process too: the models are built before the data are opened
@pytest.mark.parametrize("case", ["missing_folder", "empty_folder", "undecodable_folder", "missing_fashion_mnist"])
def test_bad_data_is_a_one_line_error(tmp_path, in_process, case):
    folder = tmp_path / "data"
    if case != "missing_folder":
        folder.mkdir()
    if case == "undecodable_folder":
        (folder / "a.png").write_bytes(b"not a png at all")
        (folder / "b.jpg").write_bytes(b"\xff\xd8\xff truncated")
    name = "fashion_mnist" if case == "missing_fashion_mnist" else "folder"
    data_dir = tmp_path / "nowhere" if case == "missing_fashion_mnist" else folder
    error = in_process(*DEMO, *FAST, f"--model_dir={tmp_path / 'run'}", f"--gin_param=DataSource.name = '{name}'",
                       f"--gin_param=DataSource.data_dir = '{data_dir}'")
    assert_error_message(error, str(data_dir))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "preemption"])
def test_a_signal_checkpoints_after_the_host_call_and_the_resume_recomputes_nothing(tmp_path, signum):
    args = [*DEMO, *FAST, f"--model_dir={tmp_path}", "--gin_param=Trainer.steps_per_loop = 1",
            "--gin_param=Trainer.checkpoint_every = 100000"]
    process = start_main(*args, "--gin_param=Trainer.train_steps = 100000")
    log = []
    try:
        read_until(process, "step 3/100000", log)
        process.send_signal(signum)
        _, rest = process.communicate(timeout=120)
        log.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(log)
    assert process.returncode == 0, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert f"{signal.Signals(signum).name}: checkpointing and stopping after the current host call" in text
    stopped = int(re.search(r"Stopped at step (\d+); run the same command again to resume", text).group(1))
    assert 3 <= stopped < 100000
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith(f"ckpt-{stopped}")
    if signum == signal.SIGTERM:
        return  # the resume is the same after either signal
    result = run_main(*args, f"--gin_param=Trainer.train_steps = {stopped + 1}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from {tmp_path}/ckpt-{stopped}" in result.stderr
    assert f"Training {tmp_path} from step {stopped} to {stopped + 1}" in result.stderr
    assert f"step {stopped + 1}/{stopped + 1}" in result.stderr
    assert_quiet(result.stderr)  # no "unrestored values" or "(root).data_iterator" warnings on a resume


@pytest.mark.slow
def test_a_second_sigint_stops_at_once_without_saving(tmp_path):
    # One host call of 100000 steps: only the main thread's handler can end it early.
    process = start_main(*DEMO, *FAST, f"--model_dir={tmp_path}", "--gin_param=Trainer.train_steps = 100000",
                         "--gin_param=Trainer.steps_per_loop = 100000", "--gin_param=Trainer.checkpoint_every = 100000")
    log = []
    try:
        read_until(process, "from step 0 to 100000", log)
        time.sleep(2)  # inside the host call now
        process.send_signal(signal.SIGINT)
        read_until(process, "press Ctrl-C again", log)
        start = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
        elapsed = time.monotonic() - start
        log.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(log)
    assert process.returncode == 128 + signal.SIGINT, text[-3000:]
    assert elapsed < 10, elapsed
    assert "Stopped at once by a second SIGINT without saving" in text
    assert tf.train.latest_checkpoint(str(tmp_path)) is None


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian package dataset-fashion-mnist is not installed (tools/setup.sh installs it)")
def test_the_fashion_mnist_demo_runs_with_a_quiet_console(tmp_path):
    result = run_main("--gin_file=gin/demo/fashion_mnist_32.gin", f"--model_dir={tmp_path}",
                      "--gin_param=Trainer.train_steps = 4", "--gin_param=Trainer.steps_per_loop = 2",
                      "--gin_param=Trainer.log_every = 4", "--gin_param=Trainer.checkpoint_every = 4",
                      "--gin_param=Trainer.sample_every = 4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 4/4" in result.stderr and "images/s" in result.stderr and "ETA" in result.stderr
    assert "step 2/4" not in result.stderr  # log_every = 4
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "samples" / "latest.png"))).numpy()
    assert grid.shape == (8 * 32, 8 * 32, 3)  # 64 EMA samples
    assert_quiet(result.stderr)
    assert f"samples in {tmp_path}/samples/latest.png" in result.stdout


def eval_params(weights):
    return ["--gin_param=Evaluator.protocol = 'demo_classifier'", f"--gin_param=Evaluator.weights_path = '{weights}'",
            "--gin_param=Evaluator.num_samples = 64", "--gin_param=Evaluator.batch_size = 32",
            "--gin_param=Evaluator.inception_split = 32", "--gin_param=Evaluator.kid_samples = 64"]


@pytest.fixture
def classifier_weights(tmp_path):
    from hit.eval.classifier_distance import DemoClassifier

    weights = str(tmp_path / "classifier.weights.h5")
    DemoClassifier().save(weights)  # untrained weights are enough to run the job
    return weights


def results_steps(run):
    with open(run / "eval" / "results.jsonl") as f:
        return [json.loads(line)["step"] for line in f]


@pytest.mark.slow
def test_train_and_eval_records_every_evaluation(tmp_path, classifier_weights):
    run = tmp_path / "run"
    train = [*FAST, "--gin_param=Trainer.train_steps = 4", "--gin_param=Trainer.steps_per_loop = 2",
             "--gin_param=Trainer.checkpoint_every = 2", "--gin_param=Trainer.eval_every = 2"]
    result = run_main(*DEMO, f"--model_dir={run}", "--mode=train_and_eval", *train, *eval_params(classifier_weights))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval step 2" in result.stderr and "eval step 4" in result.stderr
    assert (run / "best" / "best.json").exists()
    assert results_steps(run) == [2, 4]


@pytest.mark.slow
def test_deterministic_runs_then_what_next_and_the_eval_job_over_every_checkpoint_oldest_first(
        tmp_path, classifier_weights):
    run = tmp_path / "run"
    relative = os.path.relpath(run, ROOT)  # as users type it: checkpoint paths are then relative too
    train = [*FAST, "--gin_param=Trainer.train_steps = 4", "--gin_param=Trainer.steps_per_loop = 2",
             "--gin_param=Trainer.checkpoint_every = 2"]
    for model_dir in (relative, tmp_path / "same"):  # --deterministic: the same command, the same checkpoints
        result = run_main(*DEMO, f"--model_dir={model_dir}", "--deterministic", *train)
        assert result.returncode == 0, result.stderr[-3000:]
        for command in ("--mode=eval", "tools/sample.py", "tools/export.py", "tensorboard --logdir",
                        "'--gin_param=Trainer.train_steps = 4'"):  # the eval job needs the run's own bindings
            assert command in result.stdout, result.stdout
        assert_quiet(result.stderr)
    first, second = checkpoint_values(str(run / "ckpt-4")), checkpoint_values(str(tmp_path / "same" / "ckpt-4"))
    assert first.keys() == second.keys() and len(first) > 100
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    again = run_main(*DEMO, f"--model_dir={run}", *train)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained to 4 steps; raise Trainer.train_steps to continue" in again.stderr
    evaluated = run_main(*DEMO, f"--model_dir={relative}", "--mode=eval", "--eval_timeout=30", *train,
                         *eval_params(classifier_weights))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert 0 < evaluated.stderr.index("eval step 2 |") < evaluated.stderr.index("eval step 4 |")
    assert results_steps(run) == [2, 4]
    rerun = run_main(*DEMO, f"--model_dir={relative}", "--mode=eval", "--eval_timeout=30", *train,
                     *eval_params(classifier_weights))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "eval step" not in rerun.stderr and "Evaluated every checkpoint up to step 4" in rerun.stderr
    assert results_steps(run) == [2, 4]
    # Another model in the same directory, then a damaged checkpoint: one error line each, under our own lines.
    other = run_main(*DEMO, f"--model_dir={run}", *train, "--gin_param=Trainer.train_steps = 6",
                     "--gin_param=GANTask.r1_weight = 1.0")
    assert_one_error_line(other, "holds a run of another configuration (GANTask.r1_weight = 10.0 there, 1.0 now)")
    data = run / "ckpt-4.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:4096])
    damaged = run_main(*DEMO, f"--model_dir={run}", *train, "--gin_param=Trainer.train_steps = 6")
    assert_one_error_line(damaged, f"checkpoint {run}/ckpt-4 is damaged: {data} is damaged (",
                          f"the newest intact checkpoint is {run}/ckpt-2")


@pytest.mark.slow
def test_the_eval_job_on_a_missing_model_dir_says_what_it_waits_for(tmp_path, classifier_weights, in_process, caplog):
    missing = tmp_path / "misspelled"
    assert in_process(*DEMO, f"--model_dir={missing}", "--mode=eval", "--eval_timeout=1",
                      *eval_params(classifier_weights)) is None
    assert f"{missing} does not exist (yet): waiting for a training job" in caplog.text
    assert "No new checkpoint" in caplog.text


def test_eval_without_weights_is_a_one_line_error(tmp_path, in_process):
    error = in_process(*DEMO, f"--model_dir={tmp_path}", "--mode=eval",
                       "--gin_param=Evaluator.weights_path = '/nonexistent/inception.h5'")
    assert_error_message(error, "error: InceptionV3 weights not found at")
