"""Data loaders: IDX reader/writer, MNIST and Omniglot on tiny files the tests write, sklearn digits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.data import (dataset_folder, dynamic_binarise, fixed_binarise, load_digits, load_images, load_mnist,
                        load_omniglot, read_idx, write_idx)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, suffix, dtype):
    a = (np.arange(2 * 3 * 4) * 7 % 251).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"a.idx{suffix}", a)
    b = read_idx(path)
    assert b.shape == (2, 3, 4) and np.array_equal(a, b)


def test_idx_header_is_the_standard_one(tmp_path):
    a = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.uint8)
    raw = write_idx(tmp_path / "a.idx", a).read_bytes()
    # magic: 0, 0, 0x08 (unsigned byte), 2 (dims); then the sizes 3 and 2 as big-endian uint32
    assert raw[:4] == bytes([0, 0, 8, 2])
    assert raw[4:12] == (3).to_bytes(4, "big") + (2).to_bytes(4, "big")
    assert raw[12:] == bytes([1, 2, 3, 4, 5, 6])


def test_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match="expected 10"):
        read_idx(tmp_path / "short")


def _write_tiny_mnist(root, n_train=7, n_test=3, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    imgs = {s: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8) for s, n in (("train", n_train), ("t10k", n_test))}
    labels = {s: rng.integers(0, 10, size=len(v), dtype=np.uint8) for s, v in imgs.items()}
    ext = ".gz" if gz else ""
    for s in ("train", "t10k"):
        write_idx(root / f"{s}-images-idx3-ubyte{ext}", imgs[s])
        write_idx(root / f"{s}-labels-idx1-ubyte{ext}", labels[s])
    return imgs, labels


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_on_generated_idx_files(tmp_path, gz):
    imgs, labels = _write_tiny_mnist(tmp_path, gz=gz)
    d = load_mnist(tmp_path)
    assert d.train.shape == (7, 784) and d.test.shape == (3, 784) and d.shape == (28, 28)
    assert d.train.dtype == torch.float32
    assert torch.equal(d.train, torch.as_tensor(imgs["train"].reshape(7, -1) / 255.0, dtype=torch.float32))
    assert torch.equal(d.test_labels, torch.as_tensor(labels["t10k"], dtype=torch.long))
    assert 0.0 <= float(d.train.min()) and float(d.train.max()) <= 1.0


def test_load_mnist_missing_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_images("mnist", tmp_path)


def test_load_mnist_rejects_label_mismatch(tmp_path):
    _write_tiny_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(ValueError, match="labels"):
        load_mnist(tmp_path)


def test_load_omniglot_undoes_column_major_storage(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    imgs = rng.random((5, 28, 28)).astype(np.float32)
    test = rng.random((2, 28, 28)).astype(np.float32)
    # the authors' file stores each image column-major as a column of a 784 x N matrix
    col_major = lambda a: a.transpose(0, 2, 1).reshape(len(a), -1).T
    savemat(tmp_path / "chardata.mat", {"data": col_major(imgs), "testdata": col_major(test)})
    d = load_omniglot(tmp_path)
    assert torch.allclose(d.train, torch.as_tensor(imgs.reshape(5, -1)))
    assert torch.allclose(d.test, torch.as_tensor(test.reshape(2, -1)))


def test_digits_split_is_fixed_and_disjoint():
    a, b = load_digits(n_test=300), load_digits(n_test=300)
    assert a.train.shape == (1497, 64) and a.test.shape == (300, 64)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert 0.0 <= float(a.train.min()) and float(a.train.max()) == 1.0
    # no test image is a training image (the digits set has no exact duplicates across the split)
    dist = torch.cdist(a.test, a.train).min(1).values
    assert (dist > 0).all()
    other = load_digits(n_test=300, split_seed=1)
    assert not torch.equal(a.test, other.test)


def test_binarisation():
    x = torch.full((4000, 8), 0.3)
    x[:, 0] = 0.0
    x[:, 1] = 1.0
    g = torch.Generator().manual_seed(0)
    b1, b2 = dynamic_binarise(x, g), dynamic_binarise(x, g)
    assert set(b1.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(b1, b2)                        # redrawn every time
    assert (b1[:, 0] == 0).all() and (b1[:, 1] == 1).all()
    assert abs(float(b1[:, 2:].mean()) - 0.3) < 0.01      # ~ Bernoulli(intensity); sd of this mean ~0.003
    assert torch.equal(fixed_binarise(x, 5), fixed_binarise(x, 5))
    assert not torch.equal(fixed_binarise(x, 5), fixed_binarise(x, 6))


def test_subset_and_to():
    d = load_digits().subset(10, 4).to("cpu")
    assert d.train.shape == (10, 64) and d.test.shape == (4, 64) and d.dim == 64
    assert len(d.train_labels) == 10


def test_digits_are_intensities_not_bits():
    d = load_digits()
    frac = d.train[(d.train > 0) & (d.train < 1)]
    assert frac.numel() > 1000          # grey levels pixel / 16: binarise with dynamic/fixed_binarise
    assert set(fixed_binarise(d.train).unique().tolist()) == {0.0, 1.0}


def test_data_root_holds_one_folder_per_dataset(tmp_path):
    # one meaning of data_root: <data_root>/mnist holds the IDX files; load_mnist takes that folder itself
    _write_tiny_mnist(_mkdir(tmp_path / "mnist"))
    via_root = load_images("mnist", tmp_path)
    direct = load_mnist(dataset_folder(tmp_path, "mnist"))
    assert torch.equal(via_root.train, direct.train) and dataset_folder(tmp_path, "mnist") == tmp_path / "mnist"
    with pytest.raises(FileNotFoundError):
        load_images("mnist", tmp_path / "mnist")       # the data set's own folder is not a data_root


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path
