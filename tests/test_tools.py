"""Command-line tools: model_summary's JSON line and errors, image grids, and the import of `hit` before
TensorFlow (tools/sample.py: test_sample.py; export.py and serving_client.py: test_export.py)."""

import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_model_summary_prints_one_json_line():
    result = run_tool("tools/model_summary.py", "--preset=hit_imagenet_128")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["trainable_params"] == 32_866_627
    assert summary["non_trainable_params"] == 19_200
    assert summary["output_shape"] == [1, 128, 128, 3]
    assert [s["resolution"] for s in summary["stages"]] == [8, 16, 32, 64, 128]
    assert summary["stages"][0]["output"] == [1, 16, 16, 512]


@pytest.mark.slow
def test_model_summary_counts_the_convnet_baseline():
    result = run_tool("tools/model_summary.py", "--preset=convnet_128")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["trainable_params"], summary["non_trainable_params"]) == (32_171_268, 9_984)
    assert summary["output_shape"] == [1, 128, 128, 3] and summary["attention_resolution"] == 64


@pytest.mark.slow
def test_model_summary_unknown_preset_is_a_one_line_error():
    result = run_tool("tools/model_summary.py", "--preset=hit_xl_256")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown generator preset 'hit_xl_256'")
    assert result.stdout == ""


def test_to_uint8_clips_instead_of_wrapping():
    from hit.core.images import image_grid, to_uint8

    values = to_uint8(tf.constant([-3.0, -1.0, 0.0, 1.0, 2.5])).numpy()
    np.testing.assert_array_equal(values, [0, 0, 128, 255, 255])
    grid = image_grid(np.ones((5, 2, 2, 1)), columns=2)
    assert grid.shape == (6, 4, 1) and grid[4:, 2:].sum() == 0  # the unused sixth cell stays black


def test_tools_import_hit_before_tensorflow():
    """hit/__init__.py sets environment defaults that TensorFlow reads when it is imported."""
    for tool in ("export.py", "sample.py", "serving_client.py"):
        with open(os.path.join(ROOT, "tools", tool)) as f:
            tree = ast.parse(f.read())
        modules = []  # every import, in source order, including those inside functions
        for node in sorted(ast.walk(tree), key=lambda n: getattr(n, "lineno", 0)):
            if isinstance(node, ast.Import):
                modules += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.append(node.module)
        roots = [m.split(".")[0] for m in modules]
        assert "tensorflow" in roots and "hit" in roots, tool
        assert roots.index("hit") < roots.index("tensorflow"), (tool, modules)
