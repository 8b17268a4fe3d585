"""SavedModel export for TF Serving: signatures equal the in-memory EMA generator, determinism per seed,
saved_model_cli, REST-style JSON requests, the promised errors, a quiet export tool, and the serving client's
one-line errors."""

import collections
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading

import gin
import numpy as np
import pytest
import tensorflow as tf

from hit.core.images import to_uint8
from hit.inference import sampling
from hit.inference.export import export_generator
from hit.inference.runs import load_generator
from hit.tasks.gan import GANTask
from hit.train.trainer import Trainer
from tools.serving_client import build_request, parse_response

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Exported = collections.namedtuple("Exported", "loaded generator path stderr")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny generator trained for 2 steps, exported by tools/export.py with its default --export_dir: the
    loaded SavedModel, the in-memory EMA generator, the version directory and the tool's stderr."""
    root = tmp_path_factory.mktemp("export")
    gin.clear_config()
    gin.parse_config("hit.tasks.GANTask.generator_preset = 'hit_tiny_32'\n"
                     "hit.tasks.GANTask.discriminator_preset = 'stylegan_d_tiny_32'\n"
                     "hit.tasks.GANTask.ema_start_step = 1\n")
    Trainer(task=GANTask(), model_dir=str(root / "run"), train_steps=2, global_batch_size=4, steps_per_loop=2,
            checkpoint_every=2, sample_every=0, jit_compile=False).train()
    gin.clear_config()
    result = subprocess.run([sys.executable, "tools/export.py", f"--model_dir={root / 'run'}"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    path = result.stdout.strip().splitlines()[-1]
    generator = load_generator(model_dir=str(root / "run"))
    return Exported(tf.saved_model.load(path), generator, path, result.stderr)


@pytest.mark.slow
def test_the_export_defaults_to_the_run_directory_and_the_checkpoint_step(exported):
    run = os.path.dirname(os.path.dirname(exported.path))
    assert exported.path == os.path.join(run, "export", "2")  # <model_dir>/export/<step>
    assert sorted(os.listdir(os.path.join(run, "export"))) == ["2"]  # no temporary directory left


@pytest.mark.slow
def test_a_write_error_is_one_line(exported, tmp_path):
    # Before, a full disk or an unwritable folder printed a traceback.
    run = os.path.dirname(os.path.dirname(exported.path))
    (tmp_path / "file").write_text("a file, not a folder")
    result = subprocess.run([sys.executable, "tools/export.py", f"--model_dir={run}",
                             f"--export_dir={tmp_path / 'file' / 'export'}"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.returncode != 0 and result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: cannot write the export to {tmp_path / 'file' / 'export'}: "), result.stderr


@pytest.mark.slow
def test_the_export_log_has_no_renamed_input_names(exported):
    assert "signature_serialization" not in exported.stderr and "unsupported characters" not in exported.stderr
    assert "unknown_0" not in exported.stderr
    assert max(map(len, exported.stderr.splitlines() or [""])) < 500, exported.stderr[-2000:]


@pytest.mark.slow
def test_every_signature_equals_the_in_memory_ema_generator(exported):
    loaded, generator = exported.loaded, exported.generator
    assert set(loaded.signatures) == {"serving_default", "generate", "generate_float"}
    z = tf.random.stateless_normal([3, 32], seed=[4, 2])
    expected = tf.clip_by_value(generator(z, training=False), -1.0, 1.0)
    floats = loaded.signatures["generate_float"](z=z)["images"]
    np.testing.assert_allclose(floats.numpy(), expected.numpy(), atol=1e-5)
    images = loaded.signatures["serving_default"](z=z)["images"]
    assert images.dtype == tf.uint8 and images.shape == (3, 32, 32, 3)
    assert np.abs(images.numpy().astype(int) - to_uint8(expected).numpy().astype(int)).max() <= 1


@pytest.mark.slow
def test_generate_is_deterministic_per_seed_and_differs_across_seeds(exported):
    loaded, generator = exported.loaded, exported.generator
    images = loaded.signatures["generate"](seed=tf.constant([7, 8, 7], tf.int64))["images"].numpy()
    np.testing.assert_array_equal(images[0], images[2])
    assert not np.array_equal(images[0], images[1])
    again = loaded.signatures["generate"](seed=tf.constant([8], tf.int64))["images"].numpy()
    np.testing.assert_array_equal(again[0], images[1])  # the batch does not change a seed's image
    # The sample of seed 7 is the same everywhere: tools/sample.py's 8th image from seed 0 (hit.core.seeds).
    expected = to_uint8(sampling.sample(generator, 8, seed=0)[7]).numpy()
    assert np.abs(images[0].astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.slow
def test_the_signatures_declare_the_latent_width(exported):
    for name in ("serving_default", "generate_float"):
        spec = exported.loaded.signatures[name].structured_input_signature[1]["z"]
        assert spec.shape.as_list() == [None, 32] and spec.dtype == tf.float32
    assert exported.loaded.signatures["generate"].structured_input_signature[1]["seed"].shape.as_list() == [None]


@pytest.mark.slow
def test_wrong_inputs_are_rejected_with_clear_messages(exported):
    loaded = exported.loaded
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"z must have shape \[batch, 32\]"):
        loaded.signatures["serving_default"](z=tf.zeros([2, 31]))
    for z in (tf.zeros([2], tf.float32), tf.zeros([2, 1, 32])):  # wrong rank (rank 3 with the right width too)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"z must have shape \[batch, 32\]"):
            loaded.signatures["serving_default"](z=z)
    for name, bad in (("serving_default", np.nan), ("generate_float", np.inf)):  # else black or NaN images
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"z must be finite \(no NaN or Inf\)"):
            loaded.signatures[name](z=tf.tensor_scatter_nd_update(tf.zeros([2, 32]), [[1, 5]], [bad]))
    for seed in (tf.constant(1, tf.int64), tf.constant([[1, 2]], tf.int64)):  # else an error inside map_fn
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"seed must have shape \[batch\]"):
            loaded.signatures["generate"](seed=seed)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a int64 tensor but is a float"):
        loaded.signatures["generate"](seed=tf.constant([1.5]))  # wrong dtype: the signature rejects it
    with pytest.raises(ValueError, match="already exists"):
        export_generator(load_generator(preset="hit_tiny_32"), os.path.dirname(exported.path), 2)


@pytest.mark.slow
def test_saved_model_cli_lists_and_runs_the_signatures(exported):
    path = exported.path
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    show = subprocess.run([*cli, "show", "--dir", path, "--all"], capture_output=True, text=True, env=env, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    text = show.stdout
    for name in ("serving_default", "generate", "generate_float"):
        assert f"signature_def['{name}']" in text
    assert "dtype: DT_INT64" in text and "dtype: DT_UINT8" in text and "shape: (-1, 32, 32, 3)" in text
    assert "inputs['seed']" in text and "inputs['z']" in text and "outputs['images']" in text
    z_inputs = re.findall(r"inputs\['z'\] tensor_info:\s+dtype: (\S+)\s+shape: (\(.*\))", text)
    assert z_inputs == [("DT_FLOAT", "(-1, 32)")] * 2  # serving_default and generate_float name the width
    out = os.path.join(os.path.dirname(path), "cli_out")
    run = subprocess.run([*cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "generate",
                          "--input_exprs", "seed=[1,2]", "--outdir", out], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]  # the TF1-style loader TF Serving also uses
    images = np.load(os.path.join(out, "images.npy"))
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    wrong = subprocess.run([*cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
                            "--input_exprs", f"z=[{[0.0] * 31}]", "--outdir", out, "--overwrite"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert wrong.returncode != 0
    assert "Cannot feed value of shape (1, 31) for Tensor serving_default_z:0, which has shape (None, 32)" in \
        wrong.stderr, wrong.stderr[-2000:]


def rest_to_tensors(body, signature):
    """What TF Serving's REST API does with a row-format body: stack the instances per named input."""
    specs = signature.structured_input_signature[1]
    instances = body["instances"]
    if len(specs) == 1 and not isinstance(instances[0], dict):
        (name, spec), = specs.items()
        return {name: tf.constant(instances, spec.dtype)}
    return {name: tf.constant([row[name] for row in instances], spec.dtype) for name, spec in specs.items()}


@pytest.mark.slow
def test_the_client_request_builder_against_the_loaded_signatures(exported):
    loaded = exported.loaded
    z = np.random.default_rng(0).normal(size=(2, 32)).astype(np.float32)
    for name, request in [("serving_default", build_request("serving_default", z=z)),
                          ("generate_float", build_request("generate_float", z=z)),
                          ("generate", build_request("generate", seeds=[3, 4]))]:
        body = json.loads(json.dumps(request))  # exactly what goes over the wire
        assert body["signature_name"] == name
        signature = loaded.signatures[name]
        outputs = signature(**rest_to_tensors(body, signature))
        response = {"predictions": outputs["images"].numpy().tolist()}  # TF Serving's row-format reply
        images = parse_response(json.loads(json.dumps(response)))
        np.testing.assert_array_equal(images, outputs["images"].numpy())
        assert images.shape == (2, 32, 32, 3)
    wrong = json.loads(json.dumps(build_request("serving_default", z=z[:, :31])))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"z must have shape \[batch, 32\]"):
        loaded.signatures["serving_default"](**rest_to_tensors(wrong, loaded.signatures["serving_default"]))
    conditional = build_request("generate", seeds=[1, 2], labels=[5, 6])
    assert conditional["instances"] == [{"seed": 1, "label": 5}, {"seed": 2, "label": 6}]
    with pytest.raises(ValueError, match="exactly one of z"):
        build_request("generate")


@pytest.mark.slow
def test_loading_needs_no_keras(exported):
    path = exported.path
    code = ("import sys; sys.modules['keras'] = None  # any attempt to import Keras fails\n"
            "import tensorflow as tf\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "print(m.signatures['generate'](seed=tf.constant([1], tf.int64))['images'].shape)")
    result = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(1, 32, 32, 3)"


def run_client(url, tmp_path):
    return subprocess.run([sys.executable, "tools/serving_client.py", f"--url={url}",
                           f"--output={tmp_path / 'served.png'}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_the_client_says_in_one_line_that_nothing_answers(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/models/hit:predict"
    result = run_client(url, tmp_path)
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: nothing answers at {url} (is TF Serving running?")


def test_the_client_reports_an_http_error_with_the_servers_text_in_one_line(tmp_path):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.dumps({"error": "Servable not found for request: Latest(hit)"}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/models/hit:predict"
        result = run_client(url, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {url} answered HTTP 404: Servable not found for request: "
                                          "Latest(hit)"], result.stderr
