"""Datasets: Fashion-MNIST from the Debian package's IDX files, and ImageFolder-style directories.

Both yield ``(uint8 image tensor (C, H, W), label)``; :class:`ImageTransform` turns the images into the model's
input. A fixed, seeded validation split is carved out of the training data for every tuning decision; the test
split is used for reporting only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .idx import DatasetError, read_idx

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NO_LABEL = -1  # the label of an item that has none (unlabeled image folders, text)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageTensorDataset(Dataset):
    """In-memory uint8 images ``(N, C, H, W)`` with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...], name: str = ""):
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if len(images) != len(labels):
            raise DatasetError(f"{name}: {len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.classes, self.name = images, labels.long(), tuple(classes), name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def _fashion_paths(root: Path, split: str) -> tuple[Path, Path]:
    names = FASHION_MNIST_FILES[split]
    paths = []
    for name in names:
        p = root / name
        if not p.exists() and (root / name[:-3]).exists():
            p = root / name[:-3]
        paths.append(p)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DatasetError(
            f"Fashion-MNIST not found: looked for {', '.join(missing)}. Install the Debian package "
            f"`dataset-fashion-mnist` (apt-get install -y dataset-fashion-mnist), or point --data-dir at a folder "
            f"holding the four IDX files."
        )
    return paths[0], paths[1]


def load_fashion_mnist(split: str, root: str | Path | None = None) -> ImageTensorDataset:
    """Load the ``"train"`` (60,000) or ``"test"`` (10,000) split from IDX files under ``root``."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root or FASHION_MNIST_DIR)
    img_path, lbl_path = _fashion_paths(root, split)
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"Fashion-MNIST files under {root} have unexpected shapes {images.shape} / {labels.shape}")
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DatasetError(f"{lbl_path} holds label {labels.max()}, Fashion-MNIST has 10 classes")
    return ImageTensorDataset(
        torch.from_numpy(images.copy()),
        torch.from_numpy(labels.astype(np.int64)),
        FASHION_MNIST_CLASSES,
        f"fashion-mnist/{split}",
    )


def load_image_folder(root: str | Path) -> ImageTensorDataset:
    """Load ``root/<class>/<image>`` into memory (class order: sorted folder names), or a flat ``root/<image>``
    folder as unlabeled images (label ``-1``, no classes: for the label-free objectives). Images are kept as they
    are (grayscale or RGB); :class:`ImageTransform` adapts size and channels."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; pass a directory laid out as ROOT/<class>/<image>")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    unlabeled = not classes and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in root.iterdir())
    folders = [root] if unlabeled else [root / c for c in classes]  # a flat folder: images without labels
    images, labels = [], []
    mode = None
    for ci, folder in enumerate(folders):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if im.mode in ("L", "1", "I;16", "I") else "RGB")
                    mode = mode or im.mode
                    im = im.convert(mode)
                    arr = np.asarray(im)
            except (UnidentifiedImageError, OSError) as e:
                raise DatasetError(f"cannot read image {f}: {e}") from e
            t = torch.from_numpy(arr.copy())
            images.append(t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1))
            labels.append(NO_LABEL if unlabeled else ci)
    if not images:
        raise DatasetError(f"image folder {root} holds no images (expected ROOT/<class>/<image>{IMAGE_EXTENSIONS})")
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        # different sizes: bring all to the most common size; ImageTransform then fits them to the model
        target = max(shapes, key=lambda s: sum(tuple(im.shape) == s for im in images))
        images = [_resize_uint8(im, target[1:]) for im in images]
    return ImageTensorDataset(torch.stack(images), torch.tensor(labels), tuple(classes), f"folder:{root}")


def _resize_uint8(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = torch.nn.functional.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def train_val_split(n: int, val_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded split of ``range(n)`` into (train, validation) indices."""
    if not 0 <= val_size < n:
        raise DatasetError(f"validation size {val_size} must be in [0, {n}) for a dataset of {n} images")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])
