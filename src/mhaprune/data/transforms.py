"""The one image pipeline: fit size and channels to the model, normalise, light augmentation for training."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .idx import DatasetError

FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")
_logger = logging.getLogger(__name__)


class ImageTransform:
    """uint8 ``(C, H, W)`` -> normalised float ``input_size``.

    Args:
        input_size: the model's ``(C, H, W)``.
        mean: per-channel mean (of the 0–1 image); one value is broadcast.
        std: per-channel std.
        fit: ``"pad"`` centres smaller images on a zero background (28 -> 32 px) and resizes larger ones;
            ``"resize"`` always resizes (bilinear); ``"none"`` requires the exact size.
        augment: random horizontal flip and a random translation of up to ``translate`` pixels.
        channels: the channel count asked for (1 or 3; ``--channels``): it must be the model's. RGB images are
            converted to grayscale (luma) for a 1-channel model and grayscale ones repeated for a 3-channel model
            either way; ``channels`` states the conversion (no warning) and checks it.
    """

    def __init__(
        self,
        input_size,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        fit="pad",
        augment=False,
        translate=2,
        channels: int | None = None,
    ):
        if fit not in ("pad", "resize", "none"):
            raise ValueError(f"fit must be 'pad', 'resize' or 'none', got {fit!r}")
        if channels is not None and channels not in (1, 3):
            raise DatasetError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if channels is not None and channels != input_size[0]:
            raise DatasetError(
                f"--channels {channels} but the model takes {input_size[0]}-channel images; drop --channels (images "
                f"are converted to the model's channels), or build the model with in_chans={channels}"
            )
        self.channels = channels
        self.input_size = tuple(input_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.fit, self.augment, self.translate = fit, augment, translate

    def check(self, image_shape: tuple[int, int, int]) -> None:
        """Raise a clear error when images of ``image_shape`` cannot be fed to the model."""
        C, H, W = image_shape
        c, h, w = self.input_size
        if C not in (1, 3) or (C != c and c not in (1, 3)):
            raise DatasetError(
                f"images have {C} channels but the model takes {c}; use 1 (grayscale) or 3 (RGB) "
                f"channel images, or build the model with in_chans={C}"
            )
        if self.fit == "none" and (H, W) != (h, w):
            raise DatasetError(
                f"images are {H}x{W} but the model takes {h}x{w}; resize the images or use --fit pad/resize"
            )
        if C != c and self.channels is None:
            _logger.warning(
                "images have %d channels, the model takes %d: converting them to %s (pass --channels %d to say so)",
                C, c, "grayscale" if c == 1 else "RGB", c,
            )  # fmt: skip

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c, h, w = self.input_size
        x = img.float().div_(255.0)
        if x.shape[0] != c:
            x = to_channels(x, c)
        H, W = x.shape[-2:]
        if (H, W) != (h, w):
            if self.fit == "pad" and H <= h and W <= w:
                top, left = (h - H) // 2, (w - W) // 2
                x = F.pad(x, (left, w - W - left, top, h - H - top))
            elif self.fit == "none":
                raise DatasetError(f"image is {H}x{W} but the model takes {h}x{w}")
            else:
                x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        if self.augment:
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            if self.translate:
                t = self.translate
                dy, dx = torch.randint(-t, t + 1, (2,)).tolist()
                x = torch.roll(F.pad(x, (t, t, t, t)), shifts=(dy, dx), dims=(1, 2))[:, t : t + h, t : t + w]
        return (x - self.mean) / self.std


def to_channels(x: torch.Tensor, c: int) -> torch.Tensor:
    """A ``(C, H, W)`` image in [0, 1] with ``c`` channels: RGB -> grayscale by luma, grayscale -> 3 equal channels."""
    if x.shape[0] == c:
        return x
    if c == 1 and x.shape[0] == 3:
        return torch.tensordot(torch.tensor(LUMA, dtype=x.dtype), x, dims=1).unsqueeze(0)
    if c == 3 and x.shape[0] == 1:
        return x.expand(3, -1, -1)
    raise DatasetError(f"cannot convert {x.shape[0]}-channel images to {c} channels")


class TransformedDataset(torch.utils.data.Dataset):
    """A view of a dataset (optionally a subset of indices) with a transform applied to the image."""

    def __init__(self, base, transform: ImageTransform, indices=None):
        self.base, self.transform = base, transform
        self.indices = None if indices is None else torch.as_tensor(indices)
        transform.check(base.image_shape)

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else len(self.indices)

    def __getitem__(self, i: int):
        img, label = self.base[int(self.indices[i]) if self.indices is not None else i]
        return self.transform(img), label
