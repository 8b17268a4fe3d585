"""A plain HTTP/JSON client for an exported generator served by TF Serving (REST API, port 8501).

    python tools/serving_client.py --url=http://localhost:8501/v1/models/hit:predict --seeds=1,2,3 --output=out.png

Request bodies (row format, one instance per image):
    serving_default / generate_float: {"signature_name": "...", "instances": [[z_1, ..., z_d], ...]}
    generate:                         {"signature_name": "generate", "instances": [7, 8, 9]}
    class-conditional models:         {"instances": [{"z": [...], "label": 3}, ...]}
"""

import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

_URL = flags.DEFINE_string("url", "http://localhost:8501/v1/models/hit:predict", "The :predict endpoint.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3"], "Seeds for the `generate` signature.")
_OUTPUT = flags.DEFINE_string("output", "served.png", "Where to write the returned images as one PNG grid.")


def build_request(signature_name, z=None, seeds=None, labels=None):
    """The JSON body TF Serving's REST :predict expects, for one of the exported signatures."""
    if (z is None) == (seeds is None):
        raise ValueError("give exactly one of z (serving_default, generate_float) or seeds (generate)")
    values = np.asarray(z, np.float32).tolist() if z is not None else [int(s) for s in seeds]
    if labels is None:
        instances = values
    else:
        key = "z" if z is not None else "seed"
        instances = [{key: v, "label": int(label)} for v, label in zip(values, labels)]
    return {"signature_name": signature_name, "instances": instances}


def parse_response(body):
    """TF Serving's {"predictions": [...]} -> uint8 (or float) images [batch, H, W, C]."""
    predictions = body["predictions"]
    if predictions and isinstance(predictions[0], dict):
        predictions = [p["images"] for p in predictions]
    images = np.asarray(predictions)
    return images.astype(np.uint8) if np.issubdtype(images.dtype, np.integer) else images.astype(np.float32)


def predict(url, request):
    data = json.dumps(request).encode()
    http_request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(http_request, timeout=60) as response:
        return parse_response(json.load(response))


def main(argv):
    del argv
    from hit.images import image_grid  # imported here: the request helpers above need numpy only
    import tensorflow as tf

    images = predict(_URL.value, build_request("generate", seeds=_SEEDS.value))
    tf.io.write_file(_OUTPUT.value, tf.io.encode_png(image_grid(images)))
    print(_OUTPUT.value)


if __name__ == "__main__":
    app.run(main)
