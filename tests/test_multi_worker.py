"""--strategy=multi_worker: two local worker processes (CPU, RING all-reduce over gRPC) train the tiny demo
exactly as one process does, only the chief writes into model_dir, and a stop asked of one worker stops both."""

import glob
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from hit.data.pipeline import DataSource
from hit.train.strategy import is_chief, make_strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "multi_worker_child.py")
FLAGS = ["--gin_file=gin/demo/tiny_random.gin", "--deterministic", "--gin_param=Trainer.jit_compile = False",
         "--gin_param=Trainer.steps_per_loop = 1", "--gin_param=Trainer.sample_every = 1"]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_child(tmp_path, name, args, **env):
    """The child in a fresh process on the CPU; its output goes to <name>.log."""
    inherited = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env = {**inherited, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, **env}
    log = open(tmp_path / f"{name}.log", "w")
    process = subprocess.Popen([sys.executable, CHILD, str(tmp_path / f"{name}.npz"), *FLAGS, *args], cwd=ROOT,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process


def wait_all(processes, timeout=180):
    """Wait for every process; once one fails (or time is up), end the rest: they would wait for it forever."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.poll() is None for p in processes):
        if any(p.poll() not in (None, 0) for p in processes):
            break
        time.sleep(0.5)
    for p in processes:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.slow
def test_two_workers_train_as_one_and_only_the_chief_writes(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    names = ["one", "worker0", "worker1"]
    scratch = [tmp_path / f"tmp{i}" for i in range(2)]  # each worker's TMPDIR: worker 1 saves its checkpoint there
    for d in scratch:
        d.mkdir()
    processes = [start_child(tmp_path, "one", [f"--model_dir={tmp_path / 'one'}", "--strategy=default",
                                               "--gin_param=Trainer.train_steps = 1"])]
    for i in range(2):  # two steps asked for; worker 1 alone is asked to stop after the first one
        processes.append(start_child(
            tmp_path, f"worker{i}", [f"--model_dir={tmp_path / 'two'}", "--strategy=multi_worker",
                                     "--gin_param=Trainer.train_steps = 2"],
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
            TMPDIR=str(scratch[i]), **({"HIT_TEST_STOP_AFTER_FIRST_CALL": "1"} if i == 1 else {})))
    wait_all(processes)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in names}
    report = "\n".join(f"--- {name} (exit {p.returncode}):\n{logs[name][-4000:]}" for name, p in zip(names, processes))
    assert all(p.returncode == 0 for p in processes), report
    assert "with 2 replicas" in logs["worker0"] and "with 1 replicas" in logs["one"], report
    for name in ("worker0", "worker1"):  # the stop asked of worker 1 stopped worker 0 at the same step
        assert "Stopped at step 1; run the same command again to resume" in logs[name], report

    one, *workers = [dict(np.load(tmp_path / f"{name}.npz")) for name in names]
    assert one.keys() == workers[0].keys() == workers[1].keys()
    for key in one:
        np.testing.assert_array_equal(workers[0][key], workers[1][key], err_msg=key)
        np.testing.assert_allclose(workers[0][key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)

    # The chief's files only: one event file, its samples; the other worker's checkpoint went to its TMPDIR.
    two = tmp_path / "two"
    assert tf.train.latest_checkpoint(str(two)) == str(two / "ckpt-1")
    assert len(glob.glob(str(two / "events.out.tfevents.*"))) == 1
    assert sorted(os.listdir(two / "samples")) == ["latest.png", "step_00000001.png"]
    assert sorted(p for p in os.listdir(two) if not p.startswith(("ckpt-1.", "events."))) == [
        "checkpoint", "config.gin", "operative_config.gin", "samples"]
    assert not glob.glob(str(scratch[1] / "hit_worker_checkpoint_*"))


def test_random_images_give_each_input_pipeline_its_replicas_rows_of_the_global_batch():
    """Pipeline p of n gets rows [p B/n, (p + 1) B/n) of the batch one pipeline gives: what replica ids say."""
    source = DataSource(name="random", resolution=4)
    one = next(iter(source.train_dataset(tf.distribute.InputContext(), 4, seed=0, start_step=1)))["image"]
    halves = [next(iter(source.train_dataset(tf.distribute.InputContext(2, p, 2), 4, seed=0, start_step=1)))["image"]
              for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), one)


@pytest.mark.parametrize("tf_config,problem", [
    (None, "TF_CONFIG is not set"),
    ("{cluster", "JSONDecodeError"),
    ('{"cluster": {"worker": ["a:1"]}}', "KeyError: 'task'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "the task is not in the cluster"),
])
def test_multi_worker_without_a_usable_tf_config_is_a_one_line_error(monkeypatch, tf_config, problem):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match="^--strategy=multi_worker needs TF_CONFIG") as info:
        make_strategy("multi_worker")
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_one_process_strategies_are_chief():
    assert is_chief(tf.distribute.get_strategy())
