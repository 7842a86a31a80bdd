import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from mhaprune.data import (
    FASHION_MNIST_DIR,
    DatasetError,
    ImageTransform,
    build_data,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
    train_val_split,
    write_idx,
)

REAL = Path(FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz"


@pytest.mark.skipif(not REAL.exists(), reason="Debian package dataset-fashion-mnist not installed (CI installs it)")
def test_real_fashion_mnist_files():
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.image_shape == (1, 28, 28) and train.images.dtype == torch.uint8
    assert set(train.labels.unique().tolist()) == set(range(10))
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_generated_idx_round_trip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, arr)
        assert np.array_equal(read_idx(tmp_path / name), arr)


def test_tiny_fashion_layout_loads(tmp_path):
    imgs = np.random.default_rng(1).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 10
    for i, lab in (
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ):
        write_idx(tmp_path / i, imgs)
        write_idx(tmp_path / lab, labels)
    ds = load_fashion_mnist("train", tmp_path)
    assert len(ds) == 12 and torch.equal(ds.images[:, 0], torch.from_numpy(imgs))


@pytest.mark.parametrize(
    "payload,msg", [(b"\x00\x00\x08\x03" + b"\x00" * 5, "truncated"), (b"hello world!", "bad magic")]
)
def test_corrupt_idx_is_a_clear_error(tmp_path, payload, msg):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(payload))
    with pytest.raises(DatasetError, match=msg):
        read_idx(p)


def test_missing_dataset_names_package_path_and_flag(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_fashion_mnist("train", tmp_path / "nowhere")
    msg = str(e.value)
    assert "dataset-fashion-mnist" in msg and str(tmp_path / "nowhere") in msg and "--data-dir" in msg


def test_validation_split_is_fixed_disjoint_and_seeded():
    tr, va = train_val_split(60000, 5000, seed=0)
    tr2, va2 = train_val_split(60000, 5000, seed=0)
    assert len(va) == 5000 and len(tr) == 55000
    assert np.array_equal(va, va2) and not set(tr) & set(va)
    assert not np.array_equal(va, train_val_split(60000, 5000, seed=1)[1])


def test_wrong_image_size_and_channels_are_clear_errors():
    with pytest.raises(DatasetError, match="images are 28x28 but the model takes 32x32"):
        ImageTransform((1, 32, 32), fit="none").check((1, 28, 28))
    with pytest.raises(DatasetError, match="4 channels"):
        ImageTransform((1, 32, 32)).check((4, 28, 28))


def test_transform_pads_normalises_and_adapts_channels():
    img = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    out = ImageTransform((3, 32, 32), mean=(0.5,), std=(0.5,))(img)
    assert out.shape == (3, 32, 32)
    assert out[0, 0, 0] == -1.0 and out[0, 2, 2] == 1.0  # zero padding, then normalised


def test_image_folder_and_splits(image_folder):
    ds = load_image_folder(image_folder)
    assert len(ds) == 160 and ds.classes == tuple(f"class{c}" for c in range(10))
    splits = build_data(str(image_folder), (1, 28, 28))
    assert len(splits.train) + len(splits.val) == 160 and splits.test is None
    x, y = splits.train[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10


def test_empty_image_folder_is_a_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        load_image_folder(tmp_path)
