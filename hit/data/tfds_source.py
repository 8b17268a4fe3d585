"""TFDS data sets of the paper: imagenet2012 and celeb_a_hq/<res> (both need a manual download; official hit-gan
utils/datasets.py `TFDSBuilder`).

Prepared data is read from `data_dir`; if it is not prepared and `manual_dir` holds the downloaded archives,
it is prepared first. Images stay encoded until after the shuffle (less memory per buffered element).
"""

# name -> (train split, eval split); CelebA-HQ is evaluated on its training set, as in the paper (Sec. 4.1).
SPLITS = {"imagenet2012": ("train", "validation[:50000]"), "celeb_a_hq": ("train", "train")}
HOW_TO = {
    "imagenet2012": "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into manual_dir",
    "celeb_a_hq": "build the CelebA-HQ archives as the TFDS celeb_a_hq page describes, into manual_dir",
}


def builder_name(name, resolution):
    return f"celeb_a_hq/{resolution}" if name == "celeb_a_hq" else name


def tfds_source(name, resolution, split, data_dir=None, manual_dir=None, input_context=None, seed=0,
                shuffle_files=False, with_labels=False):
    """{"image_bytes": encoded image[, "label"]}, sharded by the input context, files shuffled with seed."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(builder_name(name, resolution), data_dir=data_dir)
    read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=input_context, try_autocache=False)

    def read():
        return builder.as_dataset(split=SPLITS[name][0 if split == "train" else 1], shuffle_files=shuffle_files,
                                  decoders={"image": tfds.decode.SkipDecoding()}, read_config=read_config)

    try:
        dataset = read()
    except AssertionError:  # TFDS's "could not find data": prepare from the manual downloads, if given
        if not manual_dir:
            raise ValueError(f"TFDS data set {builder.name} is not prepared in {builder.data_dir}; "
                             f"{HOW_TO[name]} and set DataSource.manual_dir (and data_dir)") from None
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        dataset = read()

    def select(example):
        out = {"image_bytes": example["image"]}
        if with_labels:
            out["label"] = example["label"]
        return out

    return dataset.map(select)
