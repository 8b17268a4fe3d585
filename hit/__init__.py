"""HiT, VQ-HiT and GAT in TensorFlow 2 / Keras 3.

Importing `hit` selects the TensorFlow backend for Keras: the library uses `tf.nn.space_to_depth`,
`tf.einsum` and `tf.distribute`, so no other backend is supported.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
