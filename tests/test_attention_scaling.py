"""hit.bench.attention_scaling at tiny sizes: report structure and the logits-memory formulas (no timing checks)."""

import math

import pytest
import tensorflow as tf

from hit.bench.attention_scaling import FORMULATIONS, _forward, logits_bytes, scaling_report
from hit.bench.flops import count_flops

SETTINGS = dict(channels=16, num_heads=2, block_size=2, batch=2)


@pytest.fixture(scope="module")
def report():
    return scaling_report(grid_sizes=(4, 8), repeats=1, **SETTINGS)


@pytest.mark.slow
def test_report_structure(report):
    assert set(report) == {"rows", "time_exponents", "flops_exponents"}
    assert [(r["grid"], r["tokens"]) for r in report["rows"]] == [(4, 16), (8, 64)]
    keys = {"grid", "tokens"} | {f"{f}_{k}" for f in FORMULATIONS for k in ("ms", "logits_bytes", "flops")}
    for row in report["rows"]:
        assert set(row) == keys
        assert all(row[f"{f}_ms"] > 0 and row[f"{f}_flops"] > 0 for f in FORMULATIONS)
    for kind in ("time_exponents", "flops_exponents"):
        assert set(report[kind]) == set(FORMULATIONS)
        assert all(math.isfinite(a) for a in report[kind].values())


@pytest.mark.slow
def test_logits_bytes_follow_the_formulas(report):
    b, h, p = SETTINGS["batch"], SETTINGS["num_heads"], SETTINGS["block_size"]
    small, large = report["rows"]
    for row in report["rows"]:
        t = row["tokens"]
        assert row["full_logits_bytes"] == b * h * t * t * 4
        assert row["multi_axis_logits_bytes"] == b * (h // 2) * t * max(p * p, t // (p * p)) * 4
    assert large["tokens"] == 4 * small["tokens"]
    assert large["full_logits_bytes"] == 16 * small["full_logits_bytes"]  # quadratic in the tokens


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("grid", [4, 8])
def test_logits_bytes_match_the_traced_softmax(formulation, grid):
    """The formula is the largest softmax input the traced layer actually builds."""
    s = SETTINGS
    fn = tf.function(_forward(formulation, grid, s["channels"], s["num_heads"], s["block_size"]))
    graph = fn.get_concrete_function(tf.TensorSpec([s["batch"], grid, grid, s["channels"]])).graph
    sizes = [op.inputs[0].shape.num_elements() * 4 for op in graph.get_operations() if op.type == "Softmax"]
    assert len(sizes) == (2 if formulation == "multi_axis" else 1)
    assert max(sizes) == logits_bytes(formulation, grid, s["num_heads"], s["block_size"], s["batch"])


def test_full_attention_flops():
    t, c, b = 16, SETTINGS["channels"], SETTINGS["batch"]
    fn = tf.function(_forward("full", 4, c, SETTINGS["num_heads"], SETTINGS["block_size"]))
    projections = 2 * b * t * c * (3 * c) + 2 * b * t * c * c
    attention = 2 * (2 * b * t * t * c)  # logits and weighted values, all heads together
    assert count_flops(fn, tf.TensorSpec([b, 4, 4, c]))["total"] == projections + attention
