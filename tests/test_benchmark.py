"""tools/benchmark.py with tiny settings (one timed call): valid JSON lines, the fields each kind promises and
their arithmetic. No timing assertions: speed is measured by running the tool, not by tests."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MACHINE_KEYS = {"date", "tensorflow", "cpus", "device"}


def run_benchmark(*flags):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "tools/benchmark.py", *flags], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def lines_of(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


@pytest.mark.slow
def test_inference_and_train_step_lines():
    lines = lines_of(run_benchmark("--inference=hit_tiny_32,vqhit_tiny_32", "--train=gan",
                              "--generator=hit_tiny_32", "--discriminator=stylegan_d_tiny_32", "--batch=2",
                              "--steps=1", "--jit=false", "--precision=float32", "--matmul_size=128"))
    assert [(line["kind"], line.get("model")) for line in lines] == [
        ("matmul", None), ("inference", "hit_tiny_32"), ("inference", "vqhit_tiny_32"),
        ("train_step", "GANTask:hit_tiny_32/stylegan_d_tiny_32")]
    matmul = lines[0]
    assert matmul["float32_gflops"] > 0 and matmul["bfloat16_gflops"] > 0
    for line in lines[1:]:
        assert MACHINE_KEYS <= set(line)
        assert (line["batch"], line["precision"], line["jit_compile"]) == (2, "float32", False)
        assert line["images_per_sec"] > 0 and line["gflop_per_image"] > 0
        assert line["matmul_gflops"] == matmul["float32_gflops"]
        product = line["gflop_per_image"] * line["images_per_sec"]  # of rounded numbers: compare to 1%
        assert abs(line["achieved_gflops"] - product) <= 0.01 * product + 0.01, line
        ratio = line["achieved_gflops"] / line["matmul_gflops"]  # the fraction is of the rounded rates the line shows
        assert abs(line["fraction_of_matmul"] - ratio) <= 5e-4 + 1e-9, line
    # A train step does forward, R1's double backward and both gradients: many times the generator's FLOPs.
    assert lines[3]["gflop_per_image"] > 5 * lines[1]["gflop_per_image"]


@pytest.mark.slow
def test_attention_scaling_lines():
    lines = lines_of(run_benchmark("--scaling", "--grids=8,16", "--steps=1"))
    assert [line["kind"] for line in lines] == ["attention_scaling"] * 2 + ["attention_scaling_fit"]
    assert [line["tokens"] for line in lines[:2]] == [64, 256]
    assert lines[1]["full_logits_bytes"] == 16 * lines[0]["full_logits_bytes"]  # quadratic in tokens
    assert set(lines[2]["time_exponents"]) == set(lines[2]["flops_exponents"]) == {"multi_axis", "full"}
