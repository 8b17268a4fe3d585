"""Throughput against the machine's limit: inference and whole train steps, graph mode vs XLA, float32 vs
bfloat16 (TPU) or float16 (GPU), with FLOPs per image and the fraction of a dense matmul's rate measured in the
same run (hit.bench.benchmark).
One JSON line per configuration on stdout.

    python tools/benchmark.py --inference=hit_b_256,hit_imagenet_128 --batch=8
    python tools/benchmark.py --train=gan --generator=hit_imagenet_128 --discriminator=stylegan_d_128 --batch=8
    python tools/benchmark.py --train=vqhit --generator=vqhit_demo_32 --discriminator=stylegan_d_demo_32
    python tools/benchmark.py --train=gat --generator=gat_demo --inference= --precision=float32,bfloat16
    python tools/benchmark.py --scaling   # multi-axis vs full attention as the token count grows (Sec. 3.2)

The train step is the task's own replica step (forward, penalties, both optimizer updates, EMA) on random data,
one replica, with the task's defaults (GAN: R1 every step; --bcr_weight adds bCR's augmented D pass).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import hit  # noqa: E402,F401  (selects the TensorFlow backend; before TensorFlow, see hit/__init__.py)
from hit.bench import benchmark  # noqa: E402
from hit.tasks.gan import GANTask  # noqa: E402
from hit.tasks.gat import GATTask  # noqa: E402
from hit.tasks.vqhit import VQHiTTask  # noqa: E402

_INFERENCE = flags.DEFINE_list("inference", ["hit_demo_32"], "Presets (generator, D or VQ-HiT) to time forward.")
_TRAIN = flags.DEFINE_enum("train", None, ["gan", "vqhit", "gat"], "Also time this task's train step.")
_G = flags.DEFINE_string("generator", "hit_demo_32", "--train: the generator (VQ-HiT: model, GAT: G) preset.")
_D = flags.DEFINE_string("discriminator", "stylegan_d_demo_32", "--train: the D preset (GAT: the G preset's D).")
_BCR = flags.DEFINE_float("bcr_weight", 0.0, "--train=gan: bCR weight (0 leaves the augmented D pass out).")
_BATCH = flags.DEFINE_integer("batch", 8, "Batch size (one replica).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed calls after the untimed first one (median reported).")
_JIT = flags.DEFINE_list("jit", ["false", "true"], "XLA settings to time.")
_PRECISION = flags.DEFINE_list("precision", ["float32", "bfloat16"],
                               "Precisions to time: float32, bfloat16 (TPU) and float16 (GPU, with loss scaling).")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul that measures the limit.")
_SCALING = flags.DEFINE_bool("scaling", False, "Print the attention scaling report instead.")
_GRIDS = flags.DEFINE_list("grids", ["8", "16", "32", "64"], "--scaling: grid sizes (tokens = grid^2).")


def make_task(precision):
    if _TRAIN.value == "gan":
        return GANTask(generator_preset=_G.value, discriminator_preset=_D.value, bcr_weight=_BCR.value,
                       precision=precision)
    if _TRAIN.value == "vqhit":
        return VQHiTTask(model_preset=_G.value, discriminator_preset=_D.value, perceptual_weight=0.0,
                         precision=precision)
    return GATTask(generator_preset=_G.value, precision=precision)


def main(argv):
    del argv
    emit = lambda line: print(json.dumps({**line, **benchmark.machine()}), flush=True)  # noqa: E731
    if _SCALING.value:
        from hit.bench.attention_scaling import scaling_report
        report = scaling_report([int(g) for g in _GRIDS.value], repeats=_STEPS.value)
        for row in report["rows"]:
            emit({"kind": "attention_scaling", **row})
        emit({"kind": "attention_scaling_fit", "time_exponents": report["time_exponents"],
              "flops_exponents": report["flops_exponents"]})
        return
    dtypes = ["float32", "bfloat16"] + [p for p in _PRECISION.value if p not in ("float32", "bfloat16")]
    limits = {p: benchmark.matmul_gflops(p, _MATMUL.value, _STEPS.value) for p in dtypes}
    emit({"kind": "matmul", "size": _MATMUL.value, **{f"{p}_gflops": round(v, 1) for p, v in limits.items()}})
    for precision in _PRECISION.value:
        for jit in (s.lower() == "true" for s in _JIT.value):
            for preset in filter(None, _INFERENCE.value):
                emit(benchmark.with_limit(benchmark.inference(preset, _BATCH.value, precision, jit, _STEPS.value),
                                          limits))
            if _TRAIN.value:
                line = benchmark.train_step(make_task(precision), _BATCH.value, precision, jit, _STEPS.value)
                emit(benchmark.with_limit(line, limits))


if __name__ == "__main__":
    app.run(main)
