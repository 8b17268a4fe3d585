"""Any data set as a folder of JPEG / PNG files (FFHQ's images1024x1024, CelebA-HQ, your own).

Files are listed recursively in sorted order. A file without a JPEG/PNG signature or end marker (truncated) is
skipped before training; one that passes these checks but still fails to decode (corrupt inside) is dropped
by the pipeline and logged by name the first time (pipeline.py). Both are counted in `data/skipped_images`.
"""

import os

import tensorflow as tf

from hit.core.errors import tf_reason

EXTENSIONS = (".jpg", ".jpeg", ".png")
_JPEG_START, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
_FIX = "point DataSource.data_dir at a folder of .jpg/.png files"


def list_images(root):
    """Sorted paths of the images below `root`; a one-line error when there are none."""
    if not tf.io.gfile.isdir(root):
        raise ValueError(f"image folder {root} does not exist; {_FIX}")
    paths = sorted(os.path.join(d, f) for d, _, files in tf.io.gfile.walk(root) for f in files
                   if f.lower().endswith(EXTENSIONS))
    if not paths:
        raise ValueError(f"no .jpg/.jpeg/.png files found below {root}; {_FIX}")
    return paths


def is_complete_image(path):
    """True when the file starts with a JPEG/PNG signature and ends with the format's end marker."""
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(8)
        size = f.size()
        f.seek(max(0, size - 1024))
        tail = f.read()
    if head.startswith(_JPEG_START):
        return _JPEG_END in tail  # EOI, possibly followed by padding
    if head.startswith(_PNG_START):
        return tail.rstrip(b"\x00").endswith(_PNG_END)
    return False


def list_checked_images(root):
    """(paths of the complete images below root, the paths skipped as undecodable or truncated)."""
    paths = list_images(root)
    complete = [is_complete_image(p) for p in paths]
    good = [p for p, ok in zip(paths, complete) if ok]
    if not good:
        raise ValueError(f"none of the {len(paths)} images below {root} can be decoded (not JPEG/PNG, or "
                         f"truncated); replace them or {_FIX}")
    return good, [p for p, ok in zip(paths, complete) if not ok]


def decode(image_bytes):
    """Encoded JPEG / PNG -> uint8 (H, W, 3)."""
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def decode_error(path, min_side=1):
    """Why the file cannot be used, on one line: it cannot be read or decoded (e.g. "cannot be decoded (Invalid
    PNG data, size 1528)"), or its shorter side is under `min_side` pixels (a crop of it would be empty); None if
    it can be used."""
    try:
        image = decode(tf.io.read_file(path))
    except tf.errors.OpError as error:
        return f"cannot be decoded ({tf_reason(error)})"
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        return f"too small ({width}x{height} pixels; the crop needs a shorter side of at least {min_side})"
    return None


def check_some_image_usable(paths, root, skipped, min_side=1):
    """A one-line ValueError unless one of `paths` decodes to an image of shorter side >= min_side. Without this
    the training pipeline's filter would loop forever over the repeated, all-bad files. Decodes files in order
    until one is usable: one decode for a healthy folder."""
    first = None
    for path in paths:
        reason = decode_error(path, min_side)
        if reason is None:
            return
        first = first or f"{path} {reason}"
    raise ValueError(f"no decodable image in {root}; {len(paths) + skipped} files skipped, e.g. {first}")
