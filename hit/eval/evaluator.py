"""The evaluation job (as hit-gan trainers/base_trainer.py `evaluate`): FID, IS and KID of the EMA generator for each
new checkpoint.

Real statistics are computed once from the eval split and cached (mean and covariance sums, plus a bounded
sample of features for KID). Fakes are G_ema(z, training=False) clipped to [-1, 1], not quantised, as the
official HiT evaluation; `quantize` rounds them to uint8 first, as official GAT's FID-50K (the ADM suite reads
PNGs). Results go to TensorBoard under <model_dir>/eval (scalars and a real|fake panel) and to
<model_dir>/eval/results.jsonl (one line per evaluated checkpoint, by step), and the best checkpoint by
`best_metric` is copied to <model_dir>/best with best.json. The eval job evaluates every checkpoint that
results.jsonl does not hold yet for its protocol, oldest first, then waits for new ones.

A class-conditional generator (GAT, through hit.models.samples.Decoded) samples each seed's class (`labels`:
"balanced", every class in turn, or "random", official GAT's) with `truncation_psi`, decoded to images; FID may be
measured against an ADM-suite reference batch (`reference_batch`: its mu and sigma, as the GAT paper's FID-50K)
and precision / recall (k = 3) join the metrics on request; psi, the labels, the quantisation and the decoder are
written beside every number in results.jsonl.

An autoencoder (VQ-HiT: a model with `encode` and `decode` methods) is evaluated by reconstruction instead: the
fakes are clip(model(x, training=False), -1, 1) of the eval split's images x (the batches, in the order, that
the reference statistics use), so "fid" is rFID, and "psnr" and "ssim" (reconstruction vs input, averaged over
the images) join the metrics; the panel holds input|reconstruction pairs.
"""

import io
import json
import os
import time

import gin
from absl import logging
import numpy as np
import tensorflow as tf

from hit.core.files import write_atomically
from hit.core.images import image_grid, rgb_if_mixed, to_uint8
from hit.core.progress import Progress
from hit.core.seeds import LABEL_MODES, seed_range
from hit.eval.fid import (RunningInceptionScore, RunningStatistics, fid_from_statistics, kernel_inception_distance,
                          load_reference_batch)
from hit.eval.inception import make_feature_extractor, weights_name
from hit.eval.precision_recall import precision_recall
from hit.eval.reconstruction import is_autoencoder, reconstruction_quality
from hit.models.samples import is_conditional, seed_images
from hit.train.checkpoints import (DamagedCheckpointError, check_model_variables, checkpoint_step, checkpoints_in,
                                  make_checkpoint, restore)

LOWER_IS_BETTER = {"fid": True, "kid": True, "inception_score": False, "psnr": False, "ssim": False,
                   "precision": False, "recall": False}
RECONSTRUCTION_METRICS = ("psnr", "ssim")  # autoencoders only
WAIT_LOG_SECONDS = 600  # the eval job says it is still waiting this often


@gin.configurable(module="hit.eval")
class Evaluator:
    """protocol: "keras_inception" (the paper's numbers), "tfgan_inception" (standard FID) or
    "demo_classifier" (the Fashion-MNIST demo); weights_path: its local weights (see hit.eval.inception)."""

    def __init__(self, model_dir=gin.REQUIRED, protocol="keras_inception", weights_path=None, num_samples=50_000,
                 batch_size=100, inception_split=5000, kid_samples=2000, best_metric="fid",
                 reference_path=None, seed=0, reference_batch=None, precision_recall=False, precision_recall_k=3,
                 precision_recall_samples=10_000, truncation_psi=0.0, labels="balanced", quantize=False,
                 reference_data=None):
        """reference_batch: an ADM-suite reference .npz (mu, sigma, arr_0) whose statistics FID is measured
        against instead of the eval split's (its images give KID's and precision / recall's real features).
        precision_recall: also Kynkäänniemi et al.'s precision and recall (k nearest neighbours) of all samples
        against up to precision_recall_samples real ones. truncation_psi: for class-conditional generators
        (GAT); labels: "balanced" (seed % K) or "random" (official GAT) for them. quantize: fakes rounded to
        uint8 before the feature network. Psi, labels, quantize and the decoder are written beside the numbers.
        reference_data: the DataSource whose eval split holds the real images, when the run's data are not images
        (a latent set: gin `Evaluator.reference_data = @reference/DataSource()`)."""
        if labels not in LABEL_MODES:
            raise ValueError(f"Evaluator.labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}")
        if best_metric not in LOWER_IS_BETTER:
            raise ValueError(f"unknown best_metric {best_metric!r}; expected one of {sorted(LOWER_IS_BETTER)}")
        if best_metric in ("precision", "recall") and not precision_recall:
            raise ValueError(f"best_metric {best_metric!r} needs Evaluator.precision_recall = True")
        self.model_dir, self.protocol, self.weights_path = model_dir, protocol, weights_path
        self.num_samples, self.batch_size = num_samples, batch_size
        self.inception_split, self.kid_samples = inception_split, kid_samples
        self.best_metric, self.seed = best_metric, seed
        self.reference_batch, self.truncation_psi = reference_batch, truncation_psi
        self.labels, self.quantize, self.reference_data = labels, quantize, reference_data
        self.precision_recall, self.precision_recall_k = precision_recall, precision_recall_k
        self.precision_recall_samples = precision_recall_samples
        source = f"_{os.path.splitext(os.path.basename(reference_batch))[0]}" if reference_batch else ""
        name = f"reference_{protocol}_{weights_name(weights_path)}_{num_samples}{source}.npz"
        self.reference_path = reference_path or os.path.join(model_dir, "eval", name)
        self._extractor = None
        self._writer = None

    @property
    def writer(self):
        """TensorBoard events in <model_dir>/eval, created on first use (creating it makes the directory)."""
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.model_dir, "eval"))
        return self._writer

    @property
    def extractor(self):
        if self._extractor is None:
            self._extractor = make_feature_extractor(self.protocol, self.weights_path)
        return self._extractor

    # ---- statistics ---------------------------------------------------------------------------------

    def _statistics(self, batches, what, kept_for_pr=0):
        """(RunningStatistics, RunningInceptionScore, KID features, first batch, the first `kept_for_pr` features
        for precision / recall) over image batches."""
        stats, score, kid, pr, first = None, RunningInceptionScore(self.inception_split), [], [], None
        progress = Progress(what, self.num_samples)
        for images in batches:
            features, logits = (np.asarray(t) for t in self.extractor.features_and_logits(images))
            if stats is None:
                stats, first = RunningStatistics(features.shape[1]), np.asarray(images)
            stats.update(features)
            score.update(logits)
            kid.append(features[:max(0, self.kid_samples - sum(len(k) for k in kid))])
            pr.append(features[:max(0, kept_for_pr - sum(len(k) for k in pr))])
            progress.update(len(features))
        if stats is None:
            raise ValueError("the evaluation data set is empty")
        progress.done()
        return stats, score, np.concatenate(kid), first, np.concatenate(pr)

    def _reference_batch_images(self, images):
        for start in range(0, len(images), self.batch_size):
            yield tf.cast(images[start:start + self.batch_size], tf.float32) / 127.5 - 1.0

    def real_data(self, data):
        """The DataSource of the real images: reference_data if set, else the run's."""
        return self.reference_data or data

    def reference(self, data):
        """(real statistics, KID features, first real batch, precision / recall features): of the eval split (of
        reference_data if set), or of Evaluator.reference_batch (its mu and sigma, features of its images);
        computed once and cached at reference_path."""
        data = self.real_data(data)
        if tf.io.gfile.exists(self.reference_path):
            with tf.io.gfile.GFile(self.reference_path, "rb") as f:
                cached = np.load(f)
                if self.reference_batch:
                    with tf.io.gfile.GFile(self.reference_batch, "rb") as batch_file:
                        stats = load_reference_batch(batch_file, load_images=False).statistics
                else:
                    stats = RunningStatistics.from_arrays(cached)
                if not self.precision_recall or "pr" in cached.files:
                    return stats, cached["kid"], cached["first"], cached["pr"] if "pr" in cached.files else None
        kept = self.precision_recall_samples if self.precision_recall else 0
        if self.reference_batch:
            logging.info("Reading reference batch %s (%s features of its images into %s)", self.reference_batch,
                         self.protocol, self.reference_path)
            with tf.io.gfile.GFile(self.reference_batch, "rb") as f:
                batch = load_reference_batch(f)
            if batch.images is None:
                raise ValueError(f"reference batch {self.reference_batch} holds no images (arr_0): KID and "
                                 "precision / recall need them")
            _, _, kid, first, pr = self._statistics(self._reference_batch_images(batch.images),
                                                    f"features of {os.path.basename(self.reference_batch)}", kept)
            stats, arrays = batch.statistics, {}
        else:
            logging.info("Computing reference statistics of %s (%s) into %s", data.name, self.protocol,
                         self.reference_path)
            batches = (b["image"] for b in data.eval_dataset(self.batch_size, self.num_samples))
            stats, _, kid, first, pr = self._statistics(batches, f"reference statistics of {data.name}", kept)
            arrays = stats.arrays()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, kid=kid, first=first, **({"pr": pr} if self.precision_recall else {}))
        write_atomically(self.reference_path, buffer.getvalue())
        return stats, kid, first, pr if self.precision_recall else None

    def _quantized(self, images):
        """[-1, 1] images as the feature network sees them: rounded to uint8 levels when `quantize` is on."""
        return tf.cast(to_uint8(images), tf.float32) / 127.5 - 1.0 if self.quantize else images

    def _fake_batches(self, generator):
        """The samples of seeds seed, seed + 1, ... (hit.models.samples; a class-conditional generator: each
        seed's class, `labels`, with psi), in [-1, 1]."""
        for start in range(0, self.num_samples, self.batch_size):
            seeds = seed_range(self.seed + start, min(self.batch_size, self.num_samples - start))
            yield self._quantized(seed_images(generator, seeds, truncation_psi=self.truncation_psi,
                                              label_mode=self.labels))

    def _reconstruction_batches(self, autoencoder, data, sums):
        """Clipped reconstructions of the eval split's batches; adds PSNR, SSIM and counts into `sums`, and
        keeps the first input batch (for the panel) in sums["first"]."""
        for batch in data.eval_dataset(self.batch_size, self.num_samples):
            images = batch["image"]
            reconstructions = tf.clip_by_value(autoencoder(images, training=False), -1.0, 1.0)
            psnr, ssim = reconstruction_quality(images, reconstructions)
            sums.setdefault("first", np.asarray(images))
            sums["psnr"] += float(tf.reduce_sum(tf.cast(psnr, tf.float64)))
            sums["ssim"] += float(tf.reduce_sum(tf.cast(ssim, tf.float64)))
            sums["count"] += len(images)
            yield self._quantized(reconstructions)

    def evaluate(self, generator, data, what="generated samples"):
        """Metrics of a generator (or an autoencoder's reconstructions, see the module) against the data set's
        eval split, and a real|fake (input|reconstruction) panel."""
        start = time.time()
        real, real_kid, real_first, real_pr = self.reference(data)
        sums = {"psnr": 0.0, "ssim": 0.0, "count": 0}
        autoencoder = is_autoencoder(generator)
        fakes = self._reconstruction_batches(generator, data, sums) if autoencoder else self._fake_batches(generator)
        fake, score, fake_kid, fake_first, fake_pr = self._statistics(
            fakes, what, self.num_samples if self.precision_recall else 0)
        inception_score, inception_score_std = score.result()
        kid, _ = kernel_inception_distance(real_kid, fake_kid, num_subsets=50,
                                           subset_size=min(1000, len(real_kid), len(fake_kid)))
        metrics = {"fid": fid_from_statistics(real, fake), "inception_score": inception_score,
                   "inception_score_std": inception_score_std, "kid": kid}
        if self.precision_recall:
            metrics["precision"], metrics["recall"] = precision_recall(real_pr, fake_pr, self.precision_recall_k)
        if autoencoder:
            real_first = sums["first"]  # the inputs of these reconstructions, whatever the cached reference holds
            metrics.update(psnr=sums["psnr"] / sums["count"], ssim=sums["ssim"] / sums["count"])
        metrics["eval_time"] = time.time() - start
        count = min(len(real_first), len(fake_first), 32)
        pairs = np.concatenate(rgb_if_mixed([to_uint8(real_first[:count]).numpy(),
                                             to_uint8(fake_first[:count]).numpy()]), 2)
        return metrics, image_grid(pairs, columns=4)

    # ---- checkpoints --------------------------------------------------------------------------------

    def evaluate_checkpoint(self, path, generator, data, name="ema_generator"):
        """Restore `generator` from the checkpoint's `name` entry, evaluate, report, and keep the best."""
        autoencoder = is_autoencoder(generator)
        if self.best_metric in RECONSTRUCTION_METRICS and not autoencoder:
            raise ValueError(f"best_metric {self.best_metric!r} is for autoencoders; use fid, kid or inception_score")
        model = getattr(generator, "model", generator)  # Decoded: its G
        check_model_variables(path, name, model, "generator this config builds")
        restore(make_checkpoint({name: model}), path).expect_partial().assert_existing_objects_matched()
        step = checkpoint_step(path)
        metrics, panel = self.evaluate(generator, data, f"eval step {step}")
        with self.writer.as_default(step=step):
            for key, value in metrics.items():
                tf.summary.scalar(f"eval/{key}", value)
            tf.summary.image("eval/input_reconstruction" if autoencoder else "eval/real_fake", panel[None])
        self.writer.flush()
        settings = {}
        if is_conditional(generator):  # what the numbers depend on, beside them (docs/fidelity.md, GAT)
            settings = {"truncation_psi": self.truncation_psi, "labels": self.labels,
                        "decoder": getattr(generator, "decoder", None)}
        settings["quantized"] = self.quantize
        logging.info("eval step %d | %s (%s)", step, " ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                     ", ".join([self.protocol] + [f"{k} {v}" for k, v in settings.items()]))
        self._record(step, path, {**metrics, **settings})
        self._keep_if_best(path, step, metrics)
        return metrics

    # ---- the results table --------------------------------------------------------------------------

    @property
    def results_path(self):
        return os.path.join(self.model_dir, "eval", "results.jsonl")

    def results(self):
        """Every recorded evaluation (all protocols), ordered by step: a list of dicts."""
        if not tf.io.gfile.exists(self.results_path):
            return []
        with tf.io.gfile.GFile(self.results_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def evaluated_steps(self):
        """Steps that results.jsonl holds for this protocol (checkpoints skipped as damaged included)."""
        return {r["step"] for r in self.results() if r["protocol"] == self.protocol}

    def _record(self, step, path, metrics):
        """Add (or replace) this protocol's line for `step`; the file is rewritten atomically (GCS has no
        append), so a crash leaves the previous table."""
        rows = [r for r in self.results() if (r["step"], r["protocol"]) != (step, self.protocol)]
        rows.append({"step": step, "checkpoint": os.path.basename(path), "protocol": self.protocol, **metrics})
        rows.sort(key=lambda r: (r["step"], r["protocol"]))
        write_atomically(self.results_path, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def _keep_if_best(self, path, step, metrics):
        """Copy the checkpoint into best/ when it beats best.json. Crash-safe order: copy the new files,
        replace best.json atomically, then delete the previous best's files."""
        best_dir = os.path.join(self.model_dir, "best")
        record = os.path.join(best_dir, "best.json")
        value = metrics[self.best_metric]
        previous = None
        if tf.io.gfile.exists(record):
            with tf.io.gfile.GFile(record) as f:
                previous = json.load(f)
            better = value < previous["value"] if LOWER_IS_BETTER[self.best_metric] else value > previous["value"]
            if not better:
                return
        tf.io.gfile.makedirs(best_dir)
        for source in tf.io.gfile.glob(path + ".*"):
            tf.io.gfile.copy(source, os.path.join(best_dir, os.path.basename(source)), overwrite=True)
        write_atomically(record, json.dumps({
            "step": step, "checkpoint": os.path.basename(path), "metric": self.best_metric, "value": value,
            "protocol": self.protocol, **metrics}, indent=1).encode())
        if previous and previous["checkpoint"] != os.path.basename(path):
            for old in tf.io.gfile.glob(os.path.join(best_dir, previous["checkpoint"] + ".*")):
                tf.io.gfile.remove(old)
        logging.info("New best %s %.4f at step %d, kept in %s", self.best_metric, value, step, best_dir)

    def pending_checkpoints(self):
        """Checkpoints in model_dir that results.jsonl does not hold for this protocol, oldest first."""
        done = self.evaluated_steps()
        return [p for p in checkpoints_in(self.model_dir) if checkpoint_step(p) not in done]

    def run(self, generator, data, train_steps, timeout=None, name="ema_generator", poll_seconds=10):
        """The eval job (--mode=eval): evaluate every checkpoint not evaluated yet, oldest first, and wait for
        new ones until a checkpoint at or past train_steps is evaluated, or `timeout` seconds pass without a
        new checkpoint."""
        waited_since = last_said = time.time()
        gone = set()  # checkpoints deleted (keep_checkpoints) before they could be evaluated
        if not tf.io.gfile.isdir(self.model_dir):
            logging.warning("%s does not exist (yet): waiting for a training job with this --model_dir to write "
                            "checkpoints there (check the path if none is running; --eval_timeout stops waiting)",
                            self.model_dir)
        while True:
            done = self.evaluated_steps()
            if done and max(done) >= train_steps:
                logging.info("Evaluated every checkpoint up to step %d: %s", max(done), self.results_path)
                return
            pending = [p for p in self.pending_checkpoints() if p not in gone]
            for path in pending:
                try:
                    self.evaluate_checkpoint(path, generator, data, name)
                except tf.errors.NotFoundError:  # deleted by the trainer's keep_checkpoints meanwhile
                    logging.warning("%s was deleted before it could be evaluated; skipping it", path)
                    gone.add(path)
                except DamagedCheckpointError as e:  # recorded, so that no later run of the job stops on it
                    if not tf.io.gfile.exists(path + ".index"):  # deleted while it was being read
                        gone.add(path)
                        continue
                    logging.warning("Skipping %s: %s", path, e)
                    self._record(checkpoint_step(path), path, {"skipped": str(e)})
            now = time.time()
            if pending:
                waited_since = last_said = now
                continue
            if timeout is not None and now - waited_since >= timeout:
                logging.info("No new checkpoint in %s for %d s; the eval job stops", self.model_dir, timeout)
                return
            if now - last_said >= WAIT_LOG_SECONDS:
                last_said = now
                logging.info("Waiting for checkpoints in %s (up to step %d) for %d min", self.model_dir,
                             train_steps, (now - waited_since) // 60)
            time.sleep(poll_seconds if timeout is None else max(0.0, min(poll_seconds, timeout - (now - waited_since))))
