"""Data: Fashion-MNIST (IDX), ImageFolder directories, the validation split and the image pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .datasets import (
    FASHION_MNIST_DIR,
    ImageTensorDataset,
    load_fashion_mnist,
    load_image_folder,
    train_val_split,
)
from .idx import DatasetError, read_idx, write_idx
from .text import TextDataConfig, TextDataset, build_text_data, load_tokenizer, read_fortunes, read_texts
from .transforms import FASHION_MNIST_MEAN, FASHION_MNIST_STD, LUMA, ImageTransform, TransformedDataset


@dataclass
class DataSplits:
    train: TransformedDataset
    val: TransformedDataset
    test: TransformedDataset | None
    classes: tuple[str, ...]


def build_data(
    data: str,
    input_size,
    data_dir: str | None = None,
    val_size: int = 5000,
    split_seed: int = 0,
    augment: bool = True,
    fit: str | None = None,
    channels: int | None = None,
) -> DataSplits:
    """Build train / validation / test views for ``data`` (``"fashion-mnist"`` or an image-folder path).

    Fashion-MNIST: 55,000 train, 5,000 validation (fixed, seeded), 10,000 test. A folder holding ``train/`` (and
    optionally ``val/`` and ``test/``) uses them; a plain class-folder tree is split like the training set.
    Images are converted to the model's channels; ``channels`` (1 or 3) states that conversion and checks it
    (:class:`ImageTransform`).
    """
    if data == "fashion-mnist":
        train_full, test = load_fashion_mnist("train", data_dir), load_fashion_mnist("test", data_dir)
        mean, std, fit = FASHION_MNIST_MEAN, FASHION_MNIST_STD, fit or "pad"
        val_base = None
    else:
        from pathlib import Path

        root = Path(data)
        sub = root / "train"
        train_full = load_image_folder(sub if sub.is_dir() else root)
        test = load_image_folder(root / "test") if (root / "test").is_dir() else None
        val_base = load_image_folder(root / "val") if (root / "val").is_dir() else None
        imgs = train_full.images.float() / 255
        if imgs.shape[1] == 3 and input_size[0] == 1:  # the statistics of what the model sees: luma
            imgs = torch.tensordot(imgs, torch.tensor(LUMA), dims=([1], [0])).unsqueeze(1)
        mean = tuple(imgs.mean(dim=(0, 2, 3)).tolist())
        std = tuple(imgs.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
        fit = fit or "resize"
    if len(train_full) == 0:
        raise DatasetError(f"dataset {data!r} is empty")
    t_train = ImageTransform(input_size, mean, std, fit, augment=augment, channels=channels)
    t_eval = ImageTransform(input_size, mean, std, fit, augment=False, channels=channels)
    if val_base is not None:
        train = TransformedDataset(train_full, t_train)
        val = TransformedDataset(val_base, t_eval)
    else:
        vs = min(val_size, len(train_full) // 10) if data != "fashion-mnist" else val_size
        tr_idx, va_idx = train_val_split(len(train_full), vs, split_seed)
        train = TransformedDataset(train_full, t_train, tr_idx)
        val = TransformedDataset(train_full, t_eval, va_idx)
    test_ds = TransformedDataset(test, t_eval) if test is not None else None
    return DataSplits(train, val, test_ds, train_full.classes)


__all__ = [
    "FASHION_MNIST_DIR",
    "DataSplits",
    "DatasetError",
    "ImageTensorDataset",
    "ImageTransform",
    "TextDataConfig",
    "TextDataset",
    "build_text_data",
    "load_tokenizer",
    "read_fortunes",
    "read_texts",
    "TransformedDataset",
    "build_data",
    "load_fashion_mnist",
    "load_image_folder",
    "read_idx",
    "train_val_split",
    "write_idx",
]
