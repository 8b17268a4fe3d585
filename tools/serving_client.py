"""A plain HTTP/JSON client for an exported generator served by TF Serving (REST API, port 8501).

    python tools/serving_client.py --url=http://localhost:8501/v1/models/hit:predict --seeds=1,2,3  # -> runs/served.png

Request bodies (row format, one instance per image):
    serving_default / generate_float: {"signature_name": "...", "instances": [[z_1, ..., z_d], ...]}
    generate:                         {"signature_name": "generate", "instances": [7, 8, 9]}
    class-conditional models:         {"instances": [{"z": [...], "label": 3}, ...]}
Failures are one line on stderr and a non-zero exit: nothing answering at --url, an HTTP error status (with
the server's error text), or an answer that is not TF Serving's JSON.
"""

import json
import os
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

_URL = flags.DEFINE_string("url", "http://localhost:8501/v1/models/hit:predict", "The :predict endpoint.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3"], "Seeds for the `generate` signature.")
_OUTPUT = flags.DEFINE_string("output", os.path.join("runs", "served.png"),
                              "Where to write the returned images as one PNG grid (runs/ is git-ignored).")


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


def server_error(error):
    """The error text of an HTTP error answer: TF Serving's {"error": "..."}, else the body, on one line."""
    body = error.read().decode(errors="replace")
    try:
        body = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        pass
    return " ".join(str(body).split()) or error.reason


def predict(url, request):
    """POST `request` to `url` and parse the answer; raises ValueError with a one-line message on failure."""
    data = json.dumps(request).encode()
    http_request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(http_request, timeout=60) as response:
            return parse_response(json.load(response))
    except urllib.error.HTTPError as e:
        raise ValueError(f"{url} answered HTTP {e.code}: {server_error(e)}") from None
    except (urllib.error.URLError, OSError) as e:  # refused, unknown host, timed out
        reason = getattr(e, "reason", e)
        raise ValueError(f"nothing answers at {url} (is TF Serving running? {reason})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{url} did not answer with TF Serving's JSON: {e!r}") from None


def main(argv):
    del argv
    try:
        images = predict(_URL.value, build_request("generate", seeds=_SEEDS.value))
    except ValueError as e:
        sys.exit(f"error: {e}")
    from hit.core.images import image_grid  # imported here (hit first, then TensorFlow): the helpers need numpy only
    import tensorflow as tf

    if os.path.dirname(_OUTPUT.value):
        tf.io.gfile.makedirs(os.path.dirname(_OUTPUT.value))
    tf.io.write_file(_OUTPUT.value, tf.io.encode_png(image_grid(images)))
    print(_OUTPUT.value)


if __name__ == "__main__":
    app.run(main)
