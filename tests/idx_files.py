"""Fashion-MNIST IDX files written by tests (the format hit.data.fashion_mnist reads), in place of Debian's."""

from hit.data import fashion_mnist


def write_idx(directory, images, labels, split="train"):
    """Writes a split's image and label files into `directory` (a pathlib.Path): uint8 images [N, 28, 28] and N
    labels; returns the image file's header."""
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    stems = fashion_mnist._FILES[split]
    (directory / stems[0]).write_bytes(header + images.tobytes())
    (directory / stems[1]).write_bytes(bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + bytes(labels))
    return header
