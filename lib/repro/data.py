"""Datasets of binary images shared by the generative-model chapters (IWAE, RAISE, AIS).

Every loader returns *intensities* in [0, 1] as float32 tensors of shape
``[N, D]`` (images flattened row-major); binarisation is a separate step so a
chapter can choose between

* dynamic binarisation (:func:`dynamic_binarise`): each pixel is redrawn
  ~ Bernoulli(intensity) every time the image is used (IWAE's training set);
* a fixed binarisation (:func:`fixed_binarise`): one seeded draw, the same on
  every call (a test set every model is scored on).

Sources:

* :func:`load_digits` - scikit-learn's 8x8 digits (1,797 images, ships
  with scikit-learn, no network); a fixed, seeded train/test split.
* :func:`load_mnist` - the MNIST IDX files (``train-images-idx3-ubyte[.gz]``
  ...) read with :func:`read_idx`; optional download on machines with internet.
* :func:`load_omniglot` - the 28x28 Omniglot split used by the IWAE paper
  (``chardata.mat`` from the authors' repository, 24,345 / 8,070 images).

Folders: ``data_root`` always means the folder that holds one folder per data
set (``<data_root>/mnist/``, ``<data_root>/omniglot/``; :func:`dataset_folder`);
:func:`load_images` takes it.  The per-data-set loaders take that data set's
own ``folder``.

Nothing here downloads unless asked to (``download=True``).
"""
from __future__ import annotations

import gzip
import os
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .seed import generator

MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
OMNIGLOT_URL = "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat"
DATA_ROOT = "data"   # the default data_root: one folder per data set below it


@dataclass(frozen=True)
class ImageData:
    """A train/test split of flattened grey-level images with intensities in [0, 1]."""

    name: str
    train: torch.Tensor          # [N_train, D] float32 in [0, 1]
    test: torch.Tensor           # [N_test, D]
    shape: tuple[int, int]       # image height, width (D = height * width)
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        """Pixels per image (D)."""
        return self.train.shape[1]

    def to(self, device: torch.device | str) -> "ImageData":
        """The same split with every tensor on ``device``."""
        move = (lambda t: None if t is None else t.to(device))
        return ImageData(self.name, self.train.to(device), self.test.to(device), self.shape,
                         move(self.train_labels), move(self.test_labels))

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "ImageData":
        """The first ``n_train`` / ``n_test`` images (for tiny test runs)."""
        cut = (lambda t, n: t if (t is None or n is None) else t[:n])
        return ImageData(self.name, cut(self.train, n_train), cut(self.test, n_test), self.shape,
                         cut(self.train_labels, n_train), cut(self.test_labels, n_test))


# ---------------------------------------------------------------------------
# Binarisation
# ---------------------------------------------------------------------------

def dynamic_binarise(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli(intensity) draw of every pixel (same shape, float)."""
    return torch.bernoulli(x, generator=generator)


def fixed_binarise(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One seeded Bernoulli(intensity) draw: identical on every call with the same seed."""
    return torch.bernoulli(x, generator=generator(seed, x.device))


# ---------------------------------------------------------------------------
# scikit-learn digits (CPU profiles)
# ---------------------------------------------------------------------------

def load_digits(n_test: int = 297, split_seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 digits as intensities (pixel / 16) in [0, 1], split once into train and test.

    Like every loader here it returns intensities, not bits: binarise with
    :func:`dynamic_binarise` or :func:`fixed_binarise`.  The split is a seeded
    permutation of the 1,797 images, so it is the same on every machine and in
    every chapter that uses the same ``split_seed``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0   # [1797, 64]
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    if not 0 < n_test < len(x):
        raise ValueError(f"n_test must be in 1..{len(x) - 1}, got {n_test}")
    perm = torch.randperm(len(x), generator=generator(split_seed))
    test, train = perm[:n_test], perm[n_test:]
    return ImageData("digits", x[train], x[test], (8, 8), y[train], y[test])




# ---------------------------------------------------------------------------
# MNIST (IDX files)
# ---------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``): magic ``0 0 dtype ndim``, big-endian sizes, data."""
    path = Path(path)
    with _open(path) as f:
        head = f.read(4)
        if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
            raise ValueError(f"{path} is not an IDX file (magic bytes {head!r})")
        ndim = head[3]
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        dtype = np.dtype(_IDX_DTYPES[head[2]])
        n = int(np.prod(dims)) if dims else 1
        data = np.frombuffer(f.read(n * dtype.itemsize), dtype=dtype)
    if data.size != n:
        raise ValueError(f"{path}: expected {n} values for shape {dims}, found {data.size}")
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if the name ends in .gz); used by the tests."""
    path = Path(path)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    big = {np.dtype(np.int16): ">i2", np.dtype(np.int32): ">i4", np.dtype(np.float32): ">f4",
           np.dtype(np.float64): ">f8"}
    arr = np.asarray(array)
    arr = arr.astype(big.get(arr.dtype, arr.dtype))
    if arr.dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with (gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb")) as f:
        f.write(header + arr.tobytes())
    return path


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    return None


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
        f.write(r.read())
    tmp.replace(dest)


def download_mnist(folder: str | os.PathLike) -> Path:
    """Fetch the four MNIST IDX files into ``folder`` (needs internet; skips files already there)."""
    folder = Path(folder)
    for stem in MNIST_FILES.values():
        if _find(folder, stem):
            continue
        errors = []
        for base in MNIST_URLS:
            try:
                _download(base + stem + ".gz", folder / (stem + ".gz"))
                break
            except OSError as err:  # try the next mirror
                errors.append(f"{base}: {err}")
        else:
            raise RuntimeError(f"could not download {stem}: " + "; ".join(errors))
    return folder


def load_mnist(folder: str | os.PathLike, download: bool = False) -> ImageData:
    """MNIST from the IDX files in ``folder`` (60,000 train / 10,000 test, intensities pixel / 255).

    ``folder`` holds the IDX files themselves (``<data_root>/mnist`` when
    loaded through :func:`load_images`).
    """
    folder = Path(folder)
    missing = [s for s in MNIST_FILES.values() if _find(folder, s) is None]
    if missing and download:
        download_mnist(folder)
        missing = [s for s in MNIST_FILES.values() if _find(folder, s) is None]
    if missing:
        raise FileNotFoundError(f"MNIST files {missing} not found under {folder}; "
                                "pass download=True on a machine with internet or copy them there")
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in MNIST_FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise ValueError(f"MNIST {split}: {len(arrays[f'{split}_images'])} images but "
                             f"{len(arrays[f'{split}_labels'])} labels")
    h, w = arrays["train_images"].shape[1:]

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a.reshape(len(a), -1).astype(np.float32) / 255.0)  # [N, h*w]

    return ImageData("mnist", images(arrays["train_images"]), images(arrays["test_images"]), (h, w),
                     torch.as_tensor(arrays["train_labels"].astype(np.int64)),
                     torch.as_tensor(arrays["test_labels"].astype(np.int64)))


# ---------------------------------------------------------------------------
# Omniglot (the IWAE paper's 28x28 split)
# ---------------------------------------------------------------------------

def load_omniglot(folder: str | os.PathLike, download: bool = False) -> ImageData:
    """Omniglot as in the IWAE paper: ``<folder>/chardata.mat`` (keys ``data``, ``testdata``, 784 x N).

    The authors store each image column-major, hence the Fortran-order reshape.
    """
    path = Path(folder) / "chardata.mat"
    if not path.exists() and download:
        _download(OMNIGLOT_URL, path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; pass download=True on a machine with internet "
                                f"or fetch {OMNIGLOT_URL}")
    from scipy.io import loadmat

    mat = loadmat(path)

    def images(a: np.ndarray) -> torch.Tensor:
        a = a.T.astype(np.float32)                                   # [N, 784]
        a = a.reshape(-1, 28, 28).reshape(-1, 28 * 28, order="F")    # column-major pixels -> row-major
        return torch.as_tensor(np.ascontiguousarray(a))

    return ImageData("omniglot", images(mat["data"]), images(mat["testdata"]), (28, 28))


def dataset_folder(data_root: str | os.PathLike, name: str) -> Path:
    """The folder of data set ``name`` under ``data_root``: ``<data_root>/<name>``."""
    return Path(data_root) / name


def load_images(name: str, data_root: str | os.PathLike = DATA_ROOT, download: bool = False, **kw) -> ImageData:
    """Dispatch on a dataset name: ``digits`` | ``mnist`` | ``omniglot`` (intensities in [0, 1]).

    ``mnist`` and ``omniglot`` are read from (or downloaded into)
    ``<data_root>/<name>``; ``digits`` ships with scikit-learn (``kw`` go to
    :func:`load_digits`).
    """
    if name == "digits":
        return load_digits(**kw)
    if name == "mnist":
        return load_mnist(dataset_folder(data_root, "mnist"), download=download)
    if name == "omniglot":
        return load_omniglot(dataset_folder(data_root, "omniglot"), download=download)
    raise ValueError(f"unknown dataset {name!r}: choose digits, mnist or omniglot")
