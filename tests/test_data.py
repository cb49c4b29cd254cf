"""The data layer: datasets on disk, class-balanced splits, batched augmentation.

Uses the real Fashion-MNIST (Debian's dataset-fashion-mnist, which `make test` installs) and
asserts exact counts and pixel values.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainers.augment import BatchAugmenter, CropFlip, batch_indices
from trainers.datasets import (
    DATASETS,
    IDX_STEMS,
    ImageData,
    list_datasets,
    load_dataset,
    main,
    register_dataset,
)
from trainers.errors import ConfigError, DataError
from trainers.splits import (
    class_balanced_indices,
    limited_data_split,
    split_digest,
    train_val_split,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fmnist() -> ImageData:
    return load_dataset("fashion_mnist")


@pytest.fixture
def no_internet(monkeypatch):
    """Make every DNS lookup fail, as on this machine, so no test ever downloads."""

    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("BOOTSTUDY_DATA", raising=False)
    monkeypatch.setenv("BOOTSTUDY_CACHE", str(tmp_path / "cache"))


def per_class(labels: torch.Tensor, num_classes: int = 10) -> list[int]:
    return torch.bincount(labels, minlength=num_classes).tolist()


# ---------------------------------------------------------------------------------------------
# datasets


def test_fashion_mnist_is_complete(fmnist):
    assert fmnist.name == "fashion_mnist"
    assert fmnist.train_images.shape == (60000, 1, 28, 28)
    assert fmnist.test_images.shape == (10000, 1, 28, 28)
    assert fmnist.train_images.dtype == fmnist.test_images.dtype == torch.uint8
    assert fmnist.train_labels.dtype == fmnist.test_labels.dtype == torch.int64
    assert per_class(fmnist.train_labels) == [6000] * 10
    assert per_class(fmnist.test_labels) == [1000] * 10
    assert (fmnist.train_images.min().item(), fmnist.train_images.max().item()) == (0, 255)
    assert fmnist.num_classes == len(fmnist.classes) == 10
    assert fmnist.classes[0] == "T-shirt/top" and fmnist.classes[9] == "Ankle boot"
    assert (fmnist.channels, fmnist.image_size, fmnist.pad, fmnist.flip) == (1, 28, 3, True)
    # The well-known statistics of the training set, measured exactly here
    assert fmnist.mean == pytest.approx((0.2860,), abs=1e-4)
    assert fmnist.std == pytest.approx((0.3530,), abs=1e-4)
    assert not fmnist.train_images.is_cuda


def test_fashion_mnist_is_cached_and_fast(fmnist):
    started = time.perf_counter()
    again = load_dataset("fashion_mnist")
    assert again is fmnist
    assert time.perf_counter() - started < 0.05


def test_registry_lists_every_dataset_and_refuses_duplicates():
    assert list_datasets() == ["cifar10", "cifar100", "fashion_mnist", "image_folder", "svhn"]
    with pytest.raises(ValueError, match="dataset .cifar10. is already registered"):
        register_dataset("cifar10")(lambda data_dir, image_size: None)
    assert len(DATASETS) == 5


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DataError) as error:
        load_dataset("mnist")
    assert str(error.value) == (
        "unknown dataset 'mnist'; choose from: cifar10, cifar100, fashion_mnist, image_folder, svhn"
    )


def test_missing_data_dir_is_one_clear_line(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as error:
        load_dataset("fashion_mnist", data_dir=missing)
    assert str(missing) in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setenv("BOOTSTUDY_DATA", str(missing))
    with pytest.raises(DataError, match=r"^BOOTSTUDY_DATA '.*nowhere' does not exist"):
        load_dataset("fashion_mnist")


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_image_size_is_a_config_error(size):
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("fashion_mnist", image_size=size)


def test_fashion_mnist_from_a_data_dir_in_both_layouts(fmnist, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for stem in IDX_STEMS.values():
        (flat / f"{stem}.gz").symlink_to(fmnist_file(fmnist, stem))
    # torchvision's layout, decompressed as torchvision leaves it (test files only, to stay fast)
    tv_raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    tv_raw.mkdir(parents=True)
    for stem in IDX_STEMS.values():
        target = tv_raw / stem
        if stem.startswith("t10k"):
            target.write_bytes(gzip.decompress(fmnist_file(fmnist, stem).read_bytes()))
        else:
            target.symlink_to(fmnist_file(fmnist, stem))
    for directory, source in ((flat, flat), (tmp_path / "tv", tv_raw)):
        data = load_dataset("fashion_mnist", data_dir=directory)
        assert data.source == str(source.resolve())
        assert torch.equal(data.test_images, fmnist.test_images)
        assert torch.equal(data.train_labels, fmnist.train_labels)


def fmnist_file(fmnist: ImageData, stem: str) -> Path:
    directory = Path(fmnist.source)
    return next(p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file())


def test_fashion_mnist_nowhere_says_how_to_get_it(tmp_path, no_internet, no_env):
    with pytest.raises(DataError) as error:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    for advice in (
        "apt-get install dataset-fashion-mnist",
        "--data-dir",
        "BOOTSTUDY_DATA",
        "internet",
    ):
        assert advice in message


def test_corrupt_idx_files_are_data_errors(tmp_path):
    for stem in IDX_STEMS.values():
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x03 not idx"))
    with pytest.raises(DataError, match="is not an IDX file of unsigned bytes"):
        load_dataset("fashion_mnist", data_dir=tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read .*train-images"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_torchvision_dataset_without_internet_is_one_data_error(name, tmp_path, no_internet):
    started = time.perf_counter()
    with pytest.raises(DataError) as error:
        load_dataset(name, data_dir=tmp_path)
    message = str(error.value)
    assert message.startswith(f"{name} is not in {tmp_path} and downloading it failed")
    assert "no internet?" in message and f"--fetch {name} --data-dir DIR" in message
    assert "\n" not in message
    assert time.perf_counter() - started < 10


def write_image_tree(root: Path, colours: dict[str, tuple[int, int, int]], per_split: dict):
    from PIL import Image

    for split, count in per_split.items():
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                # 40x30 (not square, not the target size): exercises resize and centre crop
                Image.new("RGB", (40, 30), colour).save(folder / f"{i}.png")


def test_image_folder_loads_a_generated_tree(tmp_path):
    colours = {"blue": (0, 0, 255), "grey": (100, 100, 100), "red": (255, 0, 0)}
    write_image_tree(tmp_path, colours, {"train": 4, "val": 2})
    data = load_dataset("image_folder", data_dir=tmp_path, image_size=16)
    assert data.classes == ("blue", "grey", "red") and data.num_classes == 3
    assert data.train_images.shape == (12, 3, 16, 16) and data.test_images.shape == (6, 3, 16, 16)
    assert data.train_images.dtype == torch.uint8
    assert per_class(data.train_labels, 3) == [4, 4, 4]
    assert per_class(data.test_labels, 3) == [2, 2, 2]
    for image, label in zip(data.train_images, data.train_labels, strict=True):
        colour = torch.tensor(list(colours.values())[label], dtype=torch.uint8)
        assert torch.equal(image, colour.view(3, 1, 1).expand(3, 16, 16))  # solid stays solid
    # Equal numbers of each colour: channel mean = mean of the three colours
    expected_mean = [sum(c[ch] for c in colours.values()) / 3 / 255 for ch in range(3)]
    assert data.mean == pytest.approx(expected_mean, abs=1e-6)
    assert (data.pad, data.flip, data.image_size) == (2, True, 16)
    assert load_dataset("image_folder", data_dir=tmp_path).image_size == 64  # the default


def test_image_folder_problems_are_data_errors(tmp_path, no_env):
    with pytest.raises(DataError, match="image_folder needs --data-dir"):
        load_dataset("image_folder")
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no val/ folder; expected root/train/<class>"):
        load_dataset("image_folder", data_dir=tmp_path)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="Found no valid file"):
        load_dataset("image_folder", data_dir=tmp_path)


def test_fetch_command_prints_where_the_data_is(fmnist, capsys):
    assert main(["--fetch", "fashion_mnist"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fashion_mnist: 60000 train / 10000 test images, 1x28x28, 10 classes")
    assert fmnist.source in out


def test_fetch_command_fails_in_one_line(tmp_path, capsys, no_internet):
    assert main(["--fetch", "cifar100", "--data-dir", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cifar100 is not in ") and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# splits


@pytest.mark.parametrize(
    "fraction, per_class_count",
    [(0.01, 60), (0.013, 78), (0.05, 300), (0.5, 3000), (1e-6, 1), (1.0, 6000)],
)
def test_fraction_takes_exact_counts_per_class(fmnist, fraction, per_class_count):
    indices = class_balanced_indices(fmnist.train_labels, fraction, seed=0)
    assert per_class(fmnist.train_labels[indices]) == [per_class_count] * 10
    assert indices.dtype == torch.int64
    assert torch.equal(indices, torch.unique(indices))  # sorted, no repeats


def test_full_fraction_is_every_index(fmnist):
    assert torch.equal(class_balanced_indices(fmnist.train_labels, 1.0, 7), torch.arange(60000))


def test_round_is_half_to_even():
    labels = torch.tensor([0] * 5 + [1] * 7)
    # 5 * 0.5 = 2.5 -> 2 and 7 * 0.5 = 3.5 -> 4, as Python's round does
    assert per_class(labels[class_balanced_indices(labels, 0.5, 0)], 2) == [2, 4]


def test_fraction_is_reproducible_and_ignores_global_rng(fmnist):
    torch.manual_seed(1)
    first = class_balanced_indices(fmnist.train_labels, 0.01, seed=3)
    torch.manual_seed(2)
    torch.rand(1000)
    assert torch.equal(first, class_balanced_indices(fmnist.train_labels, 0.01, seed=3))
    other_seed = class_balanced_indices(fmnist.train_labels, 0.01, seed=4)
    assert len(set(first.tolist()) & set(other_seed.tolist())) < 0.1 * len(first)


def test_fraction_is_identical_in_another_process(fmnist):
    code = (
        "from trainers.datasets import load_dataset\n"
        "from trainers.splits import class_balanced_indices, split_digest\n"
        "labels = load_dataset('fashion_mnist').train_labels\n"
        "print(split_digest(class_balanced_indices(labels, 0.013, seed=5)))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.returncode == 0, child.stderr
    here = split_digest(class_balanced_indices(fmnist.train_labels, 0.013, seed=5))
    assert child.stdout.strip() == here


def test_fractions_are_nested(fmnist):
    subsets = [
        set(class_balanced_indices(fmnist.train_labels, fraction, seed=11).tolist())
        for fraction in (0.01, 0.05, 0.2, 1.0)
    ]
    for small, large in zip(subsets, subsets[1:], strict=False):
        assert small < large


def test_a_class_choice_does_not_depend_on_other_classes(fmnist):
    labels = fmnist.train_labels
    full = class_balanced_indices(labels, 0.02, seed=0)
    shoes = torch.nonzero(labels >= 5).squeeze(1)  # drop classes 0-4
    subset = shoes[class_balanced_indices(labels[shoes], 0.02, seed=0)]
    assert torch.equal(subset, full[labels[full] >= 5])


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1, float("nan"), True])
def test_fraction_out_of_range_is_a_config_error(fmnist, fraction):
    with pytest.raises(ConfigError) as error:
        class_balanced_indices(fmnist.train_labels, fraction, seed=0)
    assert str(error.value) == f"fraction must be in (0, 1], got {fraction!r}"


def test_bad_labels_and_seeds_are_config_errors():
    with pytest.raises(ConfigError, match="1-D integer"):
        class_balanced_indices(torch.rand(10), 0.5, 0)
    with pytest.raises(ConfigError, match="non-negative integer"):
        class_balanced_indices(torch.arange(10), 0.5, -1)


def test_val_split_is_disjoint_balanced_and_fixed(fmnist):
    labels = fmnist.train_labels
    train_idx, val_idx = train_val_split(labels, 0.1, seed=0)
    assert per_class(labels[val_idx]) == [600] * 10
    assert per_class(labels[train_idx]) == [5400] * 10
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert torch.equal(torch.sort(torch.cat([train_idx, val_idx])).values, torch.arange(60000))
    again = train_val_split(labels, 0.1, seed=0)
    assert torch.equal(again[0], train_idx) and torch.equal(again[1], val_idx)
    assert not torch.equal(train_val_split(labels, 0.1, seed=1)[1], val_idx)


def test_val_split_edges():
    labels = torch.tensor([0] * 10 + [1] * 1)
    train_idx, val_idx = train_val_split(labels, 0.0, seed=0)
    assert torch.equal(train_idx, torch.arange(11)) and len(val_idx) == 0
    train_idx, val_idx = train_val_split(labels, 0.01, seed=0)
    assert per_class(labels[val_idx], 2) == [1, 0]  # at least one, but a lone image stays in train
    with pytest.raises(ConfigError, match=r"val_fraction must be in \[0, 1\), got 1"):
        train_val_split(labels, 1, seed=0)


def test_limited_data_split_keeps_val_fixed_across_fractions(fmnist):
    labels = fmnist.train_labels
    small_train, small_val = limited_data_split(labels, 0.01, 0.1, seed=2)
    large_train, large_val = limited_data_split(labels, 0.05, 0.1, seed=2)
    assert torch.equal(small_val, large_val)
    assert per_class(labels[small_train]) == [54] * 10  # round(5400 * 0.01)
    assert per_class(labels[large_train]) == [270] * 10
    assert set(small_train.tolist()) < set(large_train.tolist())
    assert not set(large_train.tolist()) & set(large_val.tolist())


# ---------------------------------------------------------------------------------------------
# augmentation

MEAN, STD = (0.5, 0.25, 0.125), (0.25, 0.5, 0.2)


def random_images(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def test_eval_of_a_constant_image_is_exact():
    images = torch.full((2, 3, 32, 32), 200, dtype=torch.uint8)
    out = BatchAugmenter(MEAN, STD, pad=4, flip=True).eval(images)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 32, 32)
    for channel in range(3):
        expected = (200 / 255 - MEAN[channel]) / STD[channel]
        assert torch.allclose(out[:, channel], torch.tensor(expected), atol=1e-6)
    upsampled = BatchAugmenter(MEAN, STD, pad=4, flip=True, out_size=56).eval(images)
    assert upsampled.shape == (2, 3, 56, 56)
    assert torch.allclose(upsampled[:, 0], torch.tensor((200 / 255 - 0.5) / 0.25), atol=1e-6)


@pytest.mark.parametrize("out_size, antialias", [(224, False), (16, True)])
def test_resizing_matches_float_bilinear_within_one_grey_level(out_size, antialias):
    images = random_images(8)
    out = BatchAugmenter(MEAN, STD, pad=4, flip=True, out_size=out_size).eval(images)
    expected = F.interpolate(
        normalise(images), size=out_size, mode="bilinear", align_corners=False, antialias=antialias
    )
    one_level = torch.tensor([1.01 / 255 / s for s in STD]).view(1, 3, 1, 1)
    assert out.shape == (8, 3, out_size, out_size)
    assert bool(((out - expected).abs() <= one_level).all())


def test_crop_and_flip_match_a_manual_per_image_crop():
    pad, images = 4, random_images(200)
    augment = BatchAugmenter(MEAN, STD, pad=pad, flip=True)
    params = augment.sample(200, torch.Generator().manual_seed(123))
    assert params.top.min() >= 0 and params.top.max() <= 2 * pad
    assert set(params.left.tolist()) == set(range(2 * pad + 1))  # every offset occurs
    out = augment.apply(images, params)
    padded = F.pad(images, (pad,) * 4)
    for i in range(200):
        top, left = params.top[i].item(), params.left[i].item()
        crop = padded[i : i + 1, :, top : top + 32, left : left + 32]
        if params.flipped[i]:
            crop = crop.flip(-1)
        assert torch.allclose(out[i : i + 1], normalise(crop), atol=1e-6)
    # Calling the augmenter draws exactly these parameters from the same seed
    assert torch.equal(augment(images, torch.Generator().manual_seed(123)), out)


def test_padding_is_black_before_normalisation():
    images = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    augment = BatchAugmenter(MEAN, STD, pad=4, flip=False)
    bottom_right = CropFlip(torch.tensor([8]), torch.tensor([8]), torch.tensor([False]))
    out = augment.apply(images, bottom_right)[0, 0]
    black, white = (0 - MEAN[0]) / STD[0], (1 - MEAN[0]) / STD[0]
    assert torch.allclose(out[-4:, :], torch.tensor(black))
    assert torch.allclose(out[:, -4:], torch.tensor(black))
    assert torch.allclose(out[:28, :28], torch.tensor(white))


def test_flip_mirrors_about_half_the_images():
    images = torch.zeros((1000, 3, 8, 8), dtype=torch.uint8)
    images[..., :4] = 255  # bright left half
    out = BatchAugmenter(MEAN, STD, pad=0, flip=True)(images, torch.Generator().manual_seed(0))
    plain, mirrored = normalise(images[:1]), normalise(images[:1].flip(-1))
    is_plain = torch.isclose(out, plain, atol=1e-6).flatten(1).all(1)
    is_mirrored = torch.isclose(out, mirrored, atol=1e-6).flatten(1).all(1)
    assert bool((is_plain ^ is_mirrored).all())  # each image is exactly one of the two
    assert 450 <= int(is_mirrored.sum()) <= 550  # binomial(1000, 0.5): 3.2 sd either side
    unflipped = BatchAugmenter(MEAN, STD, pad=0, flip=False)(images, torch.Generator())
    assert torch.allclose(unflipped, normalise(images), atol=1e-6)


def test_same_seed_same_batches_other_seed_other_batches():
    images = random_images(64)
    augment = BatchAugmenter(MEAN, STD, pad=4, flip=True, out_size=48)

    def run(seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return [
            augment(images[idx], generator)
            for idx in batch_indices(64, 16, generator, shuffle=True)
        ]

    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert first[0].shape == (16, 3, 48, 48) and first[0].dtype == torch.float32


def test_augmenter_for_fashion_mnist(fmnist):
    augment = BatchAugmenter.for_data(fmnist, out_size=32)
    out = augment(fmnist.train_images[:64], torch.Generator().manual_seed(0))
    assert out.shape == (64, 1, 32, 32)
    whole = augment.eval(fmnist.test_images[:2000])
    # Normalised with the training statistics: test-set mean near 0, std near 1
    assert abs(whole.mean().item()) < 0.05 and abs(whole.std().item() - 1) < 0.05


def test_wrong_inputs_are_refused():
    augment = BatchAugmenter(MEAN, STD, pad=4, flip=True)
    with pytest.raises(ValueError, match="uint8"):
        augment.eval(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="3 channels"):
        augment.eval(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="positive std"):
        BatchAugmenter((0.5,), (0.0,), pad=4, flip=True)


def test_batch_indices_cover_everything_once():
    generator = torch.Generator().manual_seed(0)
    batches = batch_indices(10, 4, generator)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert torch.cat(batches).tolist() != list(range(10))  # shuffled
    assert [len(b) for b in batch_indices(10, 4, generator, drop_last=True)] == [4, 4]
    assert [len(b) for b in batch_indices(8, 4, generator, drop_last=True)] == [4, 4]
    in_order = batch_indices(5, 2, generator, shuffle=False)
    assert [b.tolist() for b in in_order] == [[0, 1], [2, 3], [4]]
    assert batch_indices(0, 4, generator) == []
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(10, 0, generator)
    same = batch_indices(100, 7, torch.Generator().manual_seed(9))
    assert all(
        torch.equal(a, b)
        for a, b in zip(same, batch_indices(100, 7, torch.Generator().manual_seed(9)), strict=True)
    )
