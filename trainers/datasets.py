"""Image datasets by name, held whole in memory as uint8 tensors.

Every dataset is small enough to sit in RAM (Fashion-MNIST: 55 MB, CIFAR: 180 MB), so the trainer
indexes batches straight out of one tensor and augments them on its device (`trainers.augment`);
there is no DataLoader. Images stay at their native size here; the augmenter resizes them to the
model's input size.

Example:
    >>> from trainers.datasets import load_dataset
    >>> data = load_dataset("fashion_mnist")
    >>> data.train_images.shape, data.num_classes
    (torch.Size([60000, 1, 28, 28]), 10)

Where the files come from (the first that has them wins):
    1. `data_dir`, else the environment variable BOOTSTUDY_DATA: then the only place looked at.
       Fashion-MNIST may be the four IDX files (.gz or not) in it or torchvision's layout in it
       (`FashionMNIST/raw/`).
    2. Fashion-MNIST only: Debian's package `dataset-fashion-mnist` (/usr/share/datasets/...).
    3. The cache, BOOTSTUDY_CACHE or `data/` in the runs directory (`trainers.home`), downloading
       through torchvision when the files are not there yet (when 1. is given, the download goes
       into that directory).

Command line, used by the Makefile when Debian's package cannot be installed:
    python -m trainers.datasets --fetch fashion_mnist [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import io
import os
import socket
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from trainers.errors import BootstudyError, ConfigError, DataError
from trainers.home import runs_dir
from trainers.registry import Registry

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "ImageData",
    "cache_dir",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]

DEFAULT_DATASET = "fashion_mnist"  # ships with Debian, so studies run offline
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # package dataset-fashion-mnist
DOWNLOAD_TIMEOUT_S = 60.0  # a stalled connection fails instead of hanging a study
DEFAULT_FOLDER_SIZE = 64  # image_folder side in pixels when image_size is not given


@dataclass(frozen=True, eq=False, repr=False)
class ImageData:
    """A dataset's train and test splits, whole, as CPU tensors.

    The tensors are shared by every caller of `load_dataset` in the process (it caches them):
    index or copy them, never modify them in place.
    """

    name: str  # registry name, e.g. "fashion_mnist"
    train_images: Tensor  # uint8 [N, C, H, W], 0..255
    train_labels: Tensor  # int64 [N], 0..num_classes-1
    test_images: Tensor  # uint8 [M, C, H, W]
    test_labels: Tensor  # int64 [M]
    num_classes: int
    classes: tuple[str, ...]  # class names, index = label
    mean: tuple[float, ...]  # per channel on the 0..1 scale, measured on train_images
    std: tuple[float, ...]  # per channel on the 0..1 scale, measured on train_images
    flip: bool  # whether a horizontal flip keeps the label (False for digits)
    pad: int  # random-crop padding in pixels: 1/8 of the side, the paper's 4 px at 32 px
    source: str  # the directory the files were read from, recorded with each run

    def __post_init__(self) -> None:
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise ValueError(f"{split} images must be uint8 [N, C, H, W], got {images.dtype}")
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise ValueError(f"{split} labels must be int64 [{len(images)}]")
        if len(self.classes) != self.num_classes:
            raise ValueError(f"{len(self.classes)} class names for {self.num_classes} classes")

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        return self.train_images.shape[-1]

    def __repr__(self) -> str:
        return (
            f"ImageData({self.name!r}, train={len(self.train_images)}, "
            f"test={len(self.test_images)}, {self.channels}x{self.image_size}x{self.image_size}, "
            f"classes={self.num_classes}, source={self.source!r})"
        )


# A loader takes the directory to read (None: its default places) and the requested image size,
# which only datasets without a native size use.
Loader = Callable[[Path | None, int | None], ImageData]
DATASETS: Registry[Loader] = Registry("dataset", error=DataError)


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Register `loader(data_dir, image_size) -> ImageData` under `name`.

    Example:
        >>> @register_dataset("my_digits")  # doctest: +SKIP
        ... def _my_digits(data_dir, image_size):
        ...     return ImageData(...)
    """
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> ImageData:
    """Load dataset `name` whole into memory (cached per process; see the module docstring).

    `image_size` sets the stored side of `image_folder` images (default 64); datasets with a native
    size (28 or 32 px) keep it, and the augmenter resizes batches to the model's input instead.
    Raises DataError when the dataset is unknown or its files cannot be found or downloaded.
    """
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    return DATASETS.lookup(name)(_given_dir(data_dir), image_size)


def cache_dir() -> Path:
    """Where downloads go when no data directory is given: BOOTSTUDY_CACHE or `data/` in the
    runs directory (`trainers.home`)."""
    return Path(os.environ.get("BOOTSTUDY_CACHE") or runs_dir() / "data")


def _given_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The explicit data directory (argument, else BOOTSTUDY_DATA), which must exist."""
    given = data_dir if data_dir not in (None, "") else os.environ.get("BOOTSTUDY_DATA")
    if not given:
        return None
    path = Path(given).expanduser()
    if not path.is_dir():
        origin = "BOOTSTUDY_DATA" if data_dir in (None, "") else "data directory"
        raise DataError(f"{origin} {str(path)!r} does not exist or is not a directory")
    return path.resolve()


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST: IDX files parsed with numpy (0.2 s for the 60k training images)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_HELP = (
    "install Debian's package (apt-get install dataset-fashion-mnist), or point --data-dir or "
    "BOOTSTUDY_DATA at a directory holding the four IDX files "
    "(train-images-idx3-ubyte.gz, ...), or connect to the internet so torchvision can download it"
)


@register_dataset("fashion_mnist")
def _fashion_mnist(data_dir: Path | None, image_size: int | None) -> ImageData:
    places = [data_dir] if data_dir else [DEBIAN_FASHION_MNIST, cache_dir()]
    for place in places:
        if found := _find_idx_dir(place):
            return _read_fashion_mnist(found)
    root = data_dir or cache_dir()
    _download(
        "fashion_mnist",
        root,
        lambda: _torchvision_split("fashion_mnist", root, train=True, download=True),
        lambda: _torchvision_split("fashion_mnist", root, train=False, download=True),
        hint=FASHION_MNIST_HELP,
    )
    found = _find_idx_dir(root)
    if found is None:
        raise DataError(f"fashion_mnist: no IDX files in {root} after downloading")
    return _read_fashion_mnist(found)


def _idx_path(directory: Path, stem: str) -> Path | None:
    for path in (directory / f"{stem}.gz", directory / stem):
        if path.is_file():
            return path
    return None


def _find_idx_dir(directory: Path) -> Path | None:
    """`directory` itself or its torchvision layout, whichever holds all four IDX files."""
    for candidate in (directory, directory / "FashionMNIST" / "raw"):
        if all(_idx_path(candidate, stem) for stem in IDX_STEMS.values()):
            return candidate
    return None


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000080N) as a writable numpy array."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b" or path.suffix == ".gz":  # gzip, whatever the name says
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if len(raw) < 4 or raw[0:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, file has {len(raw)} bytes")
    # bytearray makes it writable, so torch.from_numpy shares it without a warning
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _read_fashion_mnist(directory: Path) -> ImageData:
    arrays = {key: _read_idx(_idx_path(directory, stem)) for key, stem in IDX_STEMS.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"Fashion-MNIST in {directory}: {split} images {images.shape} do not match "
                f"labels {labels.shape}"
            )
    train_images = torch.from_numpy(arrays["train_images"]).unsqueeze(1)
    mean, std = _channel_stats(train_images)
    return ImageData(
        name="fashion_mnist",
        train_images=train_images,
        train_labels=torch.from_numpy(arrays["train_labels"]).long(),
        test_images=torch.from_numpy(arrays["test_images"]).unsqueeze(1),
        test_labels=torch.from_numpy(arrays["test_labels"]).long(),
        num_classes=len(FASHION_MNIST_CLASSES),
        classes=FASHION_MNIST_CLASSES,
        mean=mean,
        std=std,
        flip=True,  # clothing is near mirror-symmetric; torchvision's examples flip it too
        pad=train_images.shape[-1] // 8,  # 3 px at 28 px
        source=str(directory),
    )


# ---------------------------------------------------------------------------------------------
# CIFAR-10/100 and SVHN through torchvision: read from disk, downloaded when absent


@register_dataset("cifar10")
def _cifar10(data_dir: Path | None, image_size: int | None) -> ImageData:
    return _read_torchvision("cifar10", data_dir or cache_dir(), flip=True)


@register_dataset("cifar100")
def _cifar100(data_dir: Path | None, image_size: int | None) -> ImageData:
    return _read_torchvision("cifar100", data_dir or cache_dir(), flip=True)


@register_dataset("svhn")
def _svhn(data_dir: Path | None, image_size: int | None) -> ImageData:
    return _read_torchvision("svhn", data_dir or cache_dir(), flip=False)  # a mirrored 2 is no 2


def _torchvision_split(name: str, root: Path, train: bool, download: bool):
    import torchvision.datasets as tvd

    if name == "svhn":
        return tvd.SVHN(str(root), split="train" if train else "test", download=download)
    dataset_class = {
        "fashion_mnist": tvd.FashionMNIST,
        "cifar10": tvd.CIFAR10,
        "cifar100": tvd.CIFAR100,
    }[name]
    return dataset_class(str(root), train=train, download=download)


@functools.lru_cache(maxsize=4)
def _read_torchvision(name: str, root: Path, flip: bool) -> ImageData:
    splits = []
    for train in (True, False):
        try:
            splits.append(_torchvision_split(name, root, train, download=False))
        except RuntimeError:  # torchvision: "Dataset not found or corrupted"
            _download(
                name,
                root,
                lambda train=train: _torchvision_split(name, root, train, download=True),
                hint=f"download it where there is internet (python -m trainers.datasets --fetch "
                f"{name} --data-dir DIR) and pass --data-dir DIR",
            )
            splits.append(_torchvision_split(name, root, train, download=False))
    train_images, test_images = (_as_nchw(name, split.data) for split in splits)
    labels = [
        torch.as_tensor(np.asarray(split.labels if name == "svhn" else split.targets)).long()
        for split in splits
    ]
    classes = tuple(str(d) for d in range(10)) if name == "svhn" else tuple(splits[0].classes)
    mean, std = _channel_stats(train_images)
    return ImageData(
        name=name,
        train_images=train_images,
        train_labels=labels[0],
        test_images=test_images,
        test_labels=labels[1],
        num_classes=len(classes),
        classes=classes,
        mean=mean,
        std=std,
        flip=flip,
        pad=train_images.shape[-1] // 8,  # 4 px at 32 px, as in the paper's CIFAR recipe
        source=str(root),
    )


def _as_nchw(name: str, data: np.ndarray) -> Tensor:
    """torchvision keeps CIFAR as NHWC and SVHN as NCHW; both become contiguous NCHW uint8."""
    images = torch.from_numpy(np.ascontiguousarray(data))
    if name != "svhn":
        images = images.permute(0, 3, 1, 2).contiguous()
    return images


# ---------------------------------------------------------------------------------------------
# image_folder: root/{train,val}/<class>/*.png, resized once at load and held in memory


@register_dataset("image_folder")
def _image_folder(data_dir: Path | None, image_size: int | None) -> ImageData:
    """For subsets that fit in RAM: N images take N x 3 x size^2 bytes (10k at 64 px: 123 MB)."""
    if data_dir is None:
        raise DataError(
            "image_folder needs --data-dir (or BOOTSTUDY_DATA): a folder with train/ and val/"
        )
    return _read_image_folder(data_dir, image_size or DEFAULT_FOLDER_SIZE)


@functools.lru_cache(maxsize=2)
def _read_image_folder(root: Path, size: int) -> ImageData:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    missing = [f"{split}/" for split in ("train", "val") if not (root / split).is_dir()]
    if missing:
        raise DataError(
            f"image_folder {str(root)!r} has no {' or '.join(missing)} folder; expected "
            "root/train/<class>/*.jpg and root/val/<class>/*.jpg"
        )
    # Resize the short side, then crop the centre: square images without distorting shapes
    to_tensor = transforms.Compose(
        [transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()]
    )
    splits = {}
    for split in ("train", "val"):
        try:
            folder = ImageFolder(str(root / split), transform=to_tensor)
        except FileNotFoundError as error:  # no class folders, or no images in them
            raise DataError(f"image_folder {str(root / split)!r}: {error}") from None
        splits[split] = folder
    train, val = splits["train"], splits["val"]
    if val.classes != train.classes:
        raise DataError(
            f"image_folder {str(root)!r}: val/ classes {val.classes} differ from train/ "
            f"classes {train.classes}"
        )
    train_images, train_labels = _stack_folder(train, size)
    test_images, test_labels = _stack_folder(val, size)
    mean, std = _channel_stats(train_images)
    return ImageData(
        name="image_folder",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=len(train.classes),
        classes=tuple(train.classes),
        mean=mean,
        std=std,
        flip=True,  # natural photographs
        pad=size // 8,  # the paper's 4 px at 32 px, scaled
        source=str(root),
    )


def _stack_folder(folder, size: int) -> tuple[Tensor, Tensor]:
    images = torch.empty((len(folder), 3, size, size), dtype=torch.uint8)
    for i, (path, _) in enumerate(folder.samples):
        try:
            images[i] = folder.transform(folder.loader(path))  # the loader converts to RGB
        except OSError as error:
            raise DataError(f"cannot read image {path}: {error}") from None
    return images, torch.tensor(folder.targets, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# shared helpers


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std on the 0..1 scale, from 256-bin histograms (fast)."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).double()
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(round(mean.item(), 6))
        stds.append(round(var.sqrt().item(), 6))
    return tuple(means), tuple(stds)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(name: str, root: Path, *fetches: Callable[[], object], hint: str) -> None:
    """Run torchvision's downloads; any failure becomes one DataError line ending in `hint`."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        # torchvision prints "Downloading ..." and each failed mirror to stdout; keep it quiet
        with _socket_timeout(DOWNLOAD_TIMEOUT_S), contextlib.redirect_stdout(io.StringIO()):
            for fetch in fetches:
                fetch()
    except (OSError, RuntimeError, EOFError, ValueError, tarfile.TarError) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        reason = lines[-1].strip("<>")  # torchvision's last line is the root cause
        raise DataError(
            f"{name} is not in {root} and downloading it failed ({reason}; no internet?): {hint}"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.datasets",
        description="Make sure a dataset is on disk (downloading it if needed) and say where.",
    )
    parser.add_argument("--fetch", metavar="NAME", required=True, help=f"one of {list_datasets()}")
    parser.add_argument("--data-dir", help="directory to read from or download into")
    parser.add_argument("--image-size", type=int, help="image_folder only: side in pixels")
    args = parser.parse_args(argv)
    try:
        if args.data_dir and args.fetch in DATASETS:
            Path(args.data_dir).expanduser().mkdir(parents=True, exist_ok=True)
        data = load_dataset(args.fetch, args.data_dir, args.image_size)
    except BootstudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{data.name}: {len(data.train_images)} train / {len(data.test_images)} test images, "
        f"{data.channels}x{data.image_size}x{data.image_size}, {data.num_classes} classes, "
        f"in {data.source}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
