"""The perceptual term of VQ-HiT's autoencoder loss (paper A.5, eq. 5): lambda1 * ||F(x) - F(G(E(x)))||^2.

The paper says only that F is "the VGG feature extraction model" and cites Johnson et al., VQGAN and LPIPS; which
layers and how the norm is reduced are our choice, following LPIPS without its learned linear heads:
  F          VGG16 (ImageNet weights from a local Keras file) at the five LPIPS layers relu1_2, relu2_2, relu3_3,
             relu4_3 and relu5_3 (Keras's block1_conv2 ... block5_conv3 include the ReLU).
  input      [-1, 1] RGB images -> 0..255 -> Keras's "caffe" preprocessing (RGB -> BGR, minus the ImageNet mean).
  distance   each position's feature vector is scaled to unit L2 norm over channels, then the squared differences
             are SUMMED over the five layers, all positions and channels: one distance per sample; the loss is
             their batch mean.
Magnitude: per position the normalised squared distance lies in [0, 4] (0..2 for non-negative ReLU features).
At 256x256 the sum covers 65536 + 16384 + 4096 + 1024 + 256 = 87,296 positions, so lambda1 = 5e-5 weighs the
per-position mean of relu1_2 by 65536 * 5e-5 ~ 3.3, relu2_2 by ~0.8, relu3_3 by ~0.2, ...: the order of VQGAN's
LPIPS weight 1.0 on per-position means, and comparable to a per-pixel mean L2 reconstruction term. A raw
(unnormalised) VGG feature sum is orders of magnitude larger (x3e3 measured with random weights at 64x64; ~1e6
expected with the larger ImageNet-trained activations, not measured here) and would swamp every other term.
Measured at 64x64 with random weights (5,456 positions): two unrelated images ~4e3, an image and a copy with
N(0, 0.02) noise ~20, with N(0, 0.1) noise ~360.

The unit-norm step is x * rsqrt(sum x^2 + eps) rather than LPIPS's x / (sqrt(sum x^2) + eps): equal wherever the
features are not ~0, but its gradient stays finite at an all-zero vector, where sqrt's gradient is NaN under XLA.
"""

import keras
import tensorflow as tf
from absl import logging

LPIPS_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
EPSILON = 1e-10  # added to the squared norm


def to_vgg_input(images):
    """[-1, 1] RGB images -> keras.applications.vgg16.preprocess_input of their 0..255 version (caffe mode)."""
    images = tf.convert_to_tensor(images, tf.float32)
    bgr = tf.reverse((images + 1.0) * 127.5, axis=[-1])
    return bgr - tf.constant(CAFFE_MEAN_BGR, tf.float32)


def _first_line(error):
    return (str(error).strip().splitlines() or [""])[0][:200]


def _non_trainable(next_creator, **kwargs):
    kwargs["trainable"] = False
    return next_creator(**kwargs)


class VGGFeatures:
    """A frozen VGG16 giving the feature maps of `layers` for [-1, 1] images; weights_path=None: random weights."""

    def __init__(self, weights_path=None, layers=LPIPS_LAYERS, input_size=None):
        if weights_path is not None and not tf.io.gfile.exists(weights_path):
            raise ValueError(f"VGG16 weights not found at {weights_path!r}; pass Keras's {WEIGHTS_FILE} (e.g. copied "
                             "from ~/.keras/models on a machine with internet)")
        with tf.variable_creator_scope(_non_trainable):  # so that no GradientTape watches them either
            base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(input_size, input_size, 3))
        if weights_path is not None:
            try:
                base.load_weights(weights_path)
            except Exception as error:  # Keras raises ValueError, OSError, KeyError ... depending on the file
                raise ValueError(f"{weights_path} is not Keras's VGG16 {WEIGHTS_FILE}: "
                                 f"{type(error).__name__}: {_first_line(error)}") from None
            logging.info("Loaded VGG16 perceptual-loss weights from %s", weights_path)
        self.layers = tuple(layers)
        self.model = keras.Model(base.input, [base.get_layer(name).output for name in self.layers])
        self.model.trainable = False
        last = max(base.layers.index(base.get_layer(name)) for name in self.layers)
        self._path = base.layers[1:last + 1]  # after the input layer, up to the deepest layer used

    def __call__(self, images):
        """Feature maps [B, H_l, W_l, C_l], one per layer, in float32: the model's layers in order, its 2x2 max
        pools computed as a reshape and max. Same values; the gradient of a max, unlike MaxPoolGrad, has an XLA
        kernel under op determinism (--deterministic), and differs only at ties, where the ReLU before the
        pool makes it zero anyway (ties are at 0)."""
        x, outputs = to_vgg_input(images), {}
        for layer in self._path:
            x = _max_pool_2x2(x) if isinstance(layer, keras.layers.MaxPooling2D) else layer(x)
            outputs[layer.name] = x
        return [tf.cast(outputs[name], tf.float32) for name in self.layers]


def _max_pool_2x2(x):
    """MaxPooling2D(2, 2, "valid") on NHWC."""
    height, width, channels = x.shape[1] // 2, x.shape[2] // 2, x.shape[3]
    x = x[:, :2 * height, :2 * width]
    return tf.reduce_max(tf.reshape(x, [-1, height, 2, width, 2, channels]), axis=[2, 4])


def normalize_channels(feature):
    """LPIPS's step: each position's feature vector scaled to unit L2 norm over the last (channel) axis."""
    return feature * tf.math.rsqrt(tf.reduce_sum(tf.square(feature), axis=-1, keepdims=True) + EPSILON)


def perceptual_distance(features, x, y):
    """Per-sample [B] sum over layers, positions and channels of (normalize(F(x)) - normalize(F(y)))^2."""
    both = features(tf.concat([tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32)], 0))
    total = 0.0
    for feature in both:
        fx, fy = tf.split(normalize_channels(tf.cast(feature, tf.float32)), 2, axis=0)  # any policy
        total += tf.reduce_sum(tf.square(fx - fy), axis=[1, 2, 3])
    return total
