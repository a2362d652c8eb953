"""STL-10 (``mt_repro.data.stl10``): the binary release as a tarball or extracted, its byte
layout, the parts and their image names, what each part reads, and hostile files."""
from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from mt_repro.core.errors import BadInput
from mt_repro.core.types import NO_LABEL
from mt_repro.data import stl10, synthetic
from mt_repro.data.batch_augment import translate_flip
from mt_repro.data.labels import apply_labels, read_label_file, write_label_file
from mt_repro.data.registry import get_dataset
from mt_repro.data.transforms import translate_with_reflect
from mt_repro.data.usb_splits import usb_split

N_TRAIN, N_TEST, N_UNLABELED = 30, 20, 25
IMAGE = stl10.IMAGE_BYTES


@pytest.fixture(autouse=True)
def fresh_reads():
    """Each test reads its files itself (the module keeps the last release read)."""
    stl10._READ.clear()
    yield
    stl10._READ.clear()


@pytest.fixture
def members():
    return synthetic.stl10_members(N_TRAIN, N_TEST, N_UNLABELED, seed=4)


def tarball_of(path: Path, members: dict[str, bytes], **options) -> Path:
    return synthetic.write_stl10_binary(path, members=members, **options)


def one_line_naming(exc: pytest.ExceptionInfo, *names: str) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, message
    return message


# --- reading ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("part", ["train", "test", "train+unlabeled"])
def test_the_tarball_and_the_extracted_directory_give_the_same_part(tmp_path, members, part):
    sources = [tarball_of(tmp_path / "stl10_binary.tar.gz", members),
               tarball_of(tmp_path / "plain.tar", members),
               synthetic.write_stl10_binary(tmp_path / "holder", members=members)]
    sources.append(sources[-1] / "stl10_binary")          # the extracted directory itself
    opened = [stl10.open_part(source, part, None) for source in sources]
    expected = {"train": N_TRAIN, "test": N_TEST, "train+unlabeled": N_TRAIN + N_UNLABELED}[part]
    for dataset in opened:
        assert len(dataset) == expected
        assert dataset.samples == opened[0].samples and dataset.targets == opened[0].targets
        assert np.array_equal(dataset.in_memory_images(), opened[0].in_memory_images())


def test_the_bytes_are_channel_planes_written_column_by_column(tmp_path, members):
    # One image whose every byte says where it is stored: plane c, column x, row y.
    c, x, y = np.indices((3, 96, 96))
    stored = ((40 * c + 3 * x + 7 * y) % 256).astype(np.uint8)
    members["train_X.bin"] = stored.tobytes() + members["train_X.bin"][IMAGE:]
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    train = stl10.open_part(root, "train", None)
    first = train.published_order[0]
    assert train.samples[first][0].startswith("0_")
    pixels = np.asarray(train[first][0])
    assert pixels.shape == (96, 96, 3)
    rows, columns = np.indices((96, 96))
    for channel in range(3):
        assert np.array_equal(pixels[..., channel], (40 * channel + 3 * columns + 7 * rows) % 256)
    assert pixels[0, 1, 0] == 3 and pixels[1, 0, 0] == 7      # column 1 of row 0; row 1 of column 0


def test_reads_as_torchvisions_stl10_does(tmp_path, members, monkeypatch):
    from torchvision.datasets import STL10
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    monkeypatch.setattr(STL10, "_check_integrity", lambda self: True)   # the files' checksums are the release's
    for part in ("train", "test", "train+unlabeled"):
        theirs = STL10(str(root), split=part)
        ours = stl10.open_part(root, part, None)
        assert len(ours) == len(theirs)
        for k, index in enumerate(ours.published_order):
            image, target = theirs[k]
            assert np.array_equal(ours.pixels(index), np.asarray(image))
            assert ours.samples[index][1] == target                   # NO_LABEL is torchvision's -1 too
        assert ours.classes == theirs.classes


def test_names_classes_and_order_as_cifars_image_tree(tmp_path, members):
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    labels = np.frombuffer(members["train_y.bin"], np.uint8)
    train = stl10.open_part(root, "train", None)
    assert train.classes == list(synthetic.STL10_CLASSES) and train.class_to_idx["monkey"] == 7
    names_in_file_order = [train.samples[k][0] for k in train.published_order]
    assert names_in_file_order == [f"{i}_{synthetic.STL10_CLASSES[c - 1]}.png" for i, c in enumerate(labels)]
    assert [train.samples[k][1] for k in train.published_order] == (labels.astype(int) - 1).tolist()
    # ImageFolder's order over train/<class>/<i>_<class>.png: classes sorted, then names as strings
    assert train.samples == sorted(train.samples, key=lambda s: (train.classes[s[1]], s[0]))
    assert train.targets == [t for _, t in train.samples] and train.imgs is train.samples
    test = stl10.open_part(root, "test", None)
    assert sorted(name for name, _ in test.samples) == sorted(
        f"{i}_{synthetic.STL10_CLASSES[c - 1]}.png" for i, c in enumerate(members["test_y.bin"]))


def test_class_names_come_from_the_file(tmp_path, members):
    names = [f"kind{k}" for k in (9, 3, 5, 0, 1, 2, 4, 6, 7, 8)]
    members["class_names.txt"] = "\r\n".join(names).encode() + b"\r\n\r\n"
    train = stl10.open_part(synthetic.write_stl10_binary(tmp_path / "d", members=members), "train", None)
    assert train.classes == sorted(names)
    for index in train.published_order[:5]:
        name, target = train.samples[index]
        label = members["train_y.bin"][int(name.split("_")[0])]
        assert name.endswith(f"_{names[label - 1]}.png") and train.classes[target] == names[label - 1]


def test_train_plus_unlabeled_puts_the_training_images_first(tmp_path, members):
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    train = stl10.open_part(root, "train", None)
    joined = stl10.open_part(root, "train+unlabeled", None)
    assert joined.samples[:N_TRAIN] == train.samples and joined.classes == train.classes
    assert joined.samples[N_TRAIN:] == [(f"unlabeled_{i}.png", NO_LABEL) for i in range(N_UNLABELED)]
    assert joined.targets.count(NO_LABEL) == N_UNLABELED
    assert joined.published_order == train.published_order + list(range(N_TRAIN, N_TRAIN + N_UNLABELED))
    images = joined.in_memory_images()
    assert images.shape == (N_TRAIN + N_UNLABELED, 96, 96, 3)
    assert np.array_equal(images[:N_TRAIN], train.in_memory_images())
    written = np.frombuffer(members["unlabeled_X.bin"], np.uint8).reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    assert np.array_equal(images[N_TRAIN:], written)
    assert np.array_equal(np.asarray(joined[N_TRAIN + 7][0]), written[7]) and joined[N_TRAIN + 7][1] == NO_LABEL


def test_train_and_test_never_read_the_unlabeled_file(tmp_path, members, monkeypatch):
    read = []
    real = stl10._read_file
    monkeypatch.setattr(stl10, "_read_file", lambda path, name, size: read.append(name) or real(path, name, size))
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    assert len(stl10.open_part(root, "train", None)) == N_TRAIN and len(stl10.open_part(root, "test", None)) == N_TEST
    assert "unlabeled_X.bin" not in read
    # absent, or not an image file at all: train and test still open; train+unlabeled says which file
    unlabeled = root / "stl10_binary" / "unlabeled_X.bin"
    for damage in ("absent", "odd size"):
        stl10._READ.clear()
        if damage == "absent":
            unlabeled.unlink()
        else:
            unlabeled.write_bytes(b"not an image file")
        assert len(stl10.open_part(root, "train", None)) == N_TRAIN and len(stl10.open_part(root, "test", None)) == N_TEST
        with pytest.raises(BadInput) as exc:
            stl10.open_part(root, "train+unlabeled", None)
        one_line_naming(exc, "unlabeled_X.bin")
    # the tarball: a part's pass stops at its last member, and never keeps the unlabeled one
    del members["unlabeled_X.bin"]
    tar = tarball_of(tmp_path / "no-unlabeled.tar.gz", members)
    assert len(stl10.open_part(tar, "train", None)) == N_TRAIN
    with pytest.raises(BadInput, match=r"no-unlabeled.tar.gz lacks stl10_binary/unlabeled_X.bin: not the STL-10 binary"):
        stl10.open_part(tar, "train+unlabeled", None)


def test_the_unlabeled_member_of_a_tarball_is_skipped_unless_needed(tmp_path, members, monkeypatch):
    kept = []
    real = stl10._read_member
    monkeypatch.setattr(stl10, "_read_member", lambda tar, m, s: kept.append(Path(m.name).name) or real(tar, m, s))
    # the unlabeled images before the others, as a re-packed tarball might hold them
    ordered = {"unlabeled_X.bin": members.pop("unlabeled_X.bin"), **members}
    tar = tarball_of(tmp_path / "s.tar.gz", ordered)
    stl10.open_part(tar, "train", None)
    stl10.open_part(tar, "test", None)
    assert "unlabeled_X.bin" not in kept
    assert len(stl10.open_part(tar, "train+unlabeled", None)) == N_TRAIN + N_UNLABELED
    assert kept.count("unlabeled_X.bin") == 1 and kept.count("train_X.bin") == 1  # train's was kept


def test_a_changed_file_is_read_again(tmp_path, members):
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    before = stl10.open_part(root, "train", None)
    labels = root / "stl10_binary" / "train_y.bin"
    labels.write_bytes(bytes(10 - b + 1 for b in members["train_y.bin"]))   # class k becomes 11 - k
    os.utime(labels, ns=(1, 1))
    after = stl10.open_part(root, "train", None)
    first = [after.samples[k][1] for k in after.published_order]
    assert first == [9 - before.samples[k][1] for k in before.published_order]


# --- hostile files ---------------------------------------------------------------------------------
def directory_with(tmp_path: Path, members: dict[str, bytes], name: str, payload: bytes | None) -> Path:
    changed = dict(members)
    if payload is None:
        del changed[name]
    else:
        changed[name] = payload
    return synthetic.write_stl10_binary(tmp_path / "hostile", members=changed)


HOSTILE_CONTENTS = {
    # name: (file, how to change its bytes (None: remove it), the words of the refusal)
    "truncated image file": ("train_X.bin", lambda b: b[:len(b) - 1000], "not a whole number of 27,648-byte"),
    "size not a multiple": ("test_X.bin", lambda b: b + b"x" * 100, "not a whole number of 27,648-byte"),
    "truncated at an image": ("train_X.bin", lambda b: b[:len(b) - IMAGE], "holds 30 labels but train_X.bin 29 images"),
    "a label too many": ("train_y.bin", lambda b: b + b"\x01", "holds 31 labels but train_X.bin 30 images"),
    "label 0": ("train_y.bin", lambda b: b[:3] + b"\x00" + b[4:], "label 0 for image 3: the classes are 1..10"),
    "label 11": ("test_y.bin", lambda b: b[:-1] + b"\x0b", f"label 11 for image {N_TEST - 1}"),
    "empty image file": ("train_X.bin", lambda b: b"", "holds no images"),
    "no class names": ("class_names.txt", None, "class_names.txt"),
    "nine class names": ("class_names.txt", lambda b: b"\n".join(b.split(b"\n")[1:]), "names 9 classes"),
    "a class name with a space": ("class_names.txt", lambda b: b.replace(b"car", b"race car"),
                                  "'race car' is not a class name"),
    "a class twice": ("class_names.txt", lambda b: b.replace(b"car", b"cat"), "names a class twice"),
    "not UTF-8": ("class_names.txt", lambda b: b"\xff" + b, "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONTENTS))
@pytest.mark.parametrize("form", ["directory", "tarball"])
def test_hostile_contents_are_one_line_naming_the_file(tmp_path, members, case, form):
    name, change, words = HOSTILE_CONTENTS[case]
    part = "test" if name.startswith("test") else "train"
    payload = None if change is None else change(members[name])
    if form == "directory":
        root = directory_with(tmp_path, members, name, payload)
        where = f"{root / 'stl10_binary'}/"
    else:
        changed = {k: v for k, v in members.items() if k != name}
        if payload is not None:
            changed[name] = payload
        root = tarball_of(tmp_path / "stl10_binary.tar.gz", changed)
        where = "stl10_binary.tar.gz: member 'stl10_binary/" if change else "stl10_binary.tar.gz lacks stl10_binary/"
    with pytest.raises(BadInput) as exc:
        stl10.open_part(root, part, None)
    message = one_line_naming(exc, where, name)
    if case != "no class names":
        assert words in message


def header_only_tar(path: Path, name: str, size: int, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> Path:
    """A tar of one member's header alone: what it declares is all that may be looked at."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, linkname
    path.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(2 * tarfile.BLOCKSIZE))
    return path


@pytest.mark.parametrize("name, kind, linkname, words", [
    ("stl10_binary/train_X.bin", tarfile.SYMTYPE, "/etc/passwd", "is a link (to '/etc/passwd'): refused"),
    ("stl10_binary/train_X.bin", tarfile.LNKTYPE, "stl10_binary/test_X.bin", "is a link"),
    ("stl10_binary/train_X.bin", tarfile.CHRTYPE, "", "is not a regular file: refused"),
    ("stl10_binary/train_X.bin", tarfile.FIFOTYPE, "", "is not a regular file: refused"),
    ("../stl10_binary/train_X.bin", tarfile.REGTYPE, "", "points outside the archive: refused"),
    ("stl10_binary/../../../etc/cron.d/x", tarfile.REGTYPE, "", "points outside the archive: refused"),
    ("/stl10_binary/train_X.bin", tarfile.REGTYPE, "", "points outside the archive: refused"),
])
def test_unsafe_tarball_members_are_refused(tmp_path, members, name, kind, linkname, words):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    path = tmp_path / "stl10_binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(info)                                   # first: refused before anything is read
        for member, payload in members.items():
            entry = tarfile.TarInfo(f"stl10_binary/{member}")
            entry.size = len(payload)
            tar.addfile(entry, io.BytesIO(payload))
    with pytest.raises(BadInput) as exc:
        stl10.open_part(path, "train", None)
    assert words in one_line_naming(exc, "stl10_binary.tar.gz", repr(name))


def test_a_ten_gigabyte_sparse_image_file_is_refused_before_it_is_read(tmp_path, members, monkeypatch):
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    huge = root / "stl10_binary" / "train_X.bin"
    os.truncate(huge, 400_000 * IMAGE)                  # 11 GB, a whole number of images, no blocks on disk
    monkeypatch.setattr(stl10, "_buffer", lambda size, subject: pytest.fail(f"allocated {size:,} bytes"))
    start = time.monotonic()
    with pytest.raises(BadInput) as exc:
        stl10.open_part(root, "train", None)
    assert time.monotonic() - start < 2
    assert "declares 11,059,200,000 bytes, more than the 5,000 images" in one_line_naming(exc, str(huge))


@pytest.mark.parametrize("name, size, words", [
    ("stl10_binary/train_X.bin", 400_000 * IMAGE, "more than the 5,000 images"),
    ("stl10_binary/unlabeled_X.bin", 100_001 * IMAGE, "more than the 100,000 images"),
    ("stl10_binary/train_y.bin", 5001, "more than the 5,000 labels"),
    ("stl10_binary/class_names.txt", 1 << 30, "more than a list of 10 class names needs"),
])
def test_a_member_declaring_more_than_the_release_holds_is_refused_on_its_header(tmp_path, monkeypatch,
                                                                                 name, size, words):
    path = header_only_tar(tmp_path / "stl10_binary.tar", name, size)
    monkeypatch.setattr(stl10, "_buffer", lambda size, subject: pytest.fail(f"allocated {size:,} bytes"))
    with pytest.raises(BadInput) as exc:
        stl10.open_part(path, "train+unlabeled", None)
    assert words in one_line_naming(exc, "stl10_binary.tar", name)


def test_a_label_count_that_differs_is_refused_before_the_images_are_read(tmp_path, members, monkeypatch):
    members["train_y.bin"] = members["train_y.bin"][:-2]
    ordered = {"train_y.bin": members.pop("train_y.bin"), **members}      # the labels first
    path = tarball_of(tmp_path / "stl10_binary.tar.gz", ordered)
    real = stl10._read_member
    monkeypatch.setattr(stl10, "_read_member", lambda tar, m, s: (
        pytest.fail("read the images") if m.name.endswith("train_X.bin") else real(tar, m, s)))
    with pytest.raises(BadInput) as exc:
        stl10.open_part(path, "train", None)
    assert "holds 28 labels but train_X.bin 30 images" in one_line_naming(exc, "stl10_binary/train_y.bin")


def test_device_fifo_and_directory_files_are_refused(tmp_path, members):
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    target = root / "stl10_binary" / "train_X.bin"
    for make, words in ((lambda: target.symlink_to("/dev/zero"), "is a character device, not a regular file"),
                        (lambda: os.mkfifo(target), "is a FIFO (named pipe), not a regular file"),
                        (lambda: target.mkdir(), "is a directory, not a regular file"),
                        (lambda: target.symlink_to(tmp_path / "nowhere"), "does not exist")):
        if target.is_dir() and not target.is_symlink():
            target.rmdir()
        elif os.path.lexists(target):
            target.unlink()
        make()
        stl10._READ.clear()
        with pytest.raises(BadInput) as exc:
            stl10.open_part(root, "train", None)
        assert words in one_line_naming(exc, str(target))


def test_a_symlink_to_a_regular_file_is_read_as_that_file(tmp_path, members):
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    target = root / "stl10_binary" / "train_X.bin"
    target.rename(tmp_path / "elsewhere.bin")
    target.symlink_to(tmp_path / "elsewhere.bin")
    assert len(stl10.open_part(root, "train", None)) == N_TRAIN


def test_damaged_tarballs_are_one_line(tmp_path, members):
    whole = tarball_of(tmp_path / "stl10_binary.tar.gz", members).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(BadInput) as exc:
        stl10.open_part(cut, "train+unlabeled", None)
    one_line_naming(exc, "cut.tar.gz")
    plain = tarball_of(tmp_path / "plain.tar", members).read_bytes()
    short = tmp_path / "short.tar"
    short.write_bytes(plain[:3 * tarfile.BLOCKSIZE + 5000])     # inside the first image member
    with pytest.raises(BadInput) as exc:
        stl10.open_part(short, "train+unlabeled", None)
    one_line_naming(exc, "short.tar")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + os.urandom(4000))
    with pytest.raises(BadInput, match=r"garbage.tar.gz is not a readable STL-10 tarball .*re-download stl10_binary.tar.gz"):
        stl10.open_part(garbage, "train", None)


def test_a_pax_record_of_a_terabyte_is_refused(tmp_path):
    info = tarfile.TarInfo("stl10_binary/train_X.bin")
    info.pax_headers = {"size": str(1 << 40)}
    path = tmp_path / "stl10_binary.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info)
    with pytest.raises(BadInput) as exc:
        stl10.open_part(path, "train", None)
    one_line_naming(exc, "stl10_binary.tar.gz")


def test_missing_sources_and_parts(tmp_path, members):
    with pytest.raises(BadInput, match="does not exist .pass stl10_binary.tar.gz itself"):
        stl10.open_part(tmp_path / "nowhere", "train", None)
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    with pytest.raises(BadInput, match="STL-10 has the parts train, test, train.unlabeled, not 'unlabeled'"):
        stl10.open_part(root, "unlabeled", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput) as exc:
        stl10.open_part(tmp_path / "empty", "train", None)
    one_line_naming(exc, str(tmp_path / "empty" / "train_X.bin"), "is missing")


# --- label files, augmentation, the registry ---------------------------------------------------------
def test_a_label_file_of_image_names_applies_to_train_plus_unlabeled(tmp_path, members):
    root = synthetic.write_stl10_binary(tmp_path / "d", members=members)
    train = stl10.open_part(root, "train", None)
    names = [train.samples[k][0] for k in train.published_order]
    targets = [train.samples[k][1] for k in train.published_order]
    labeled, _ = usb_split(targets, 10, 10, seed=0, include_lb_to_ulb=False)   # one per class
    path = tmp_path / "labels.txt"
    write_label_file(path, {names[i]: train.classes[targets[i]] for i in labeled.tolist()})
    joined = stl10.open_part(root, "train+unlabeled", None)
    chosen, rest = apply_labels(joined, read_label_file(path))
    assert len(chosen) == 10 and len(rest) == N_TRAIN + N_UNLABELED - 10
    assert sorted(joined.samples[i][0] for i in chosen) == sorted(names[i] for i in labeled.tolist())
    assert sorted(joined.targets[i] for i in chosen) == list(range(10))
    assert all(joined.targets[i] == NO_LABEL for i in rest) and joined.targets == [t for _, t in joined.samples]
    write_label_file(path, {"unlabeled_3.png": "cat"})                         # the name exists: it applies
    assert apply_labels(joined, read_label_file(path))[0] == [N_TRAIN + 3]
    write_label_file(path, {names[0]: "zebra"})
    with pytest.raises(BadInput, match="unknown class"):
        apply_labels(joined, read_label_file(path))


def test_usbs_random_crop_draws_what_the_mirrored_translation_draws(tmp_path, members):
    train = stl10.open_part(synthetic.write_stl10_binary(tmp_path / "d", members=members), "train", None)
    image = train[0][0]
    padded = TF.pad(image, stl10.MAX_TRANSLATION, padding_mode="reflect")    # RandomCrop(96, padding=12, reflect)
    assert stl10.MAX_TRANSLATION == 12 and padded.size == (120, 120)
    pixels = np.asarray(image)
    for top in range(25):
        for left in range(25):
            crop = np.asarray(TF.crop(padded, top, left, 96, 96))
            assert np.array_equal(crop, translate_with_reflect(pixels, 12 - left, 12 - top))
    assert TF.resize(image, 96) is image                                      # USB's Resize(96) first


def test_transforms_and_the_batch_augmentation(tmp_path, members):
    spec = get_dataset("stl10")
    train = spec.open_part(synthetic.write_stl10_binary(tmp_path / "d", members=members), "train",
                           spec.train_transform())
    (student, teacher), target = train[0]
    assert student.shape == teacher.shape == (3, 96, 96) and 0 <= target < 10
    evaluated = spec.open_part(tmp_path / "d", "train", spec.eval_transform())[0][0]
    raw = torch.from_numpy(np.asarray(train.in_memory_images()[:1]))
    expected = (raw.permute(0, 3, 1, 2).float() / 255 - torch.tensor(stl10.STL10_STATS["mean"])[:, None, None]) \
        / torch.tensor(stl10.STL10_STATS["std"])[:, None, None]
    assert torch.allclose(evaluated, expected[0], atol=1e-6)
    augment = spec.batch_augment()
    assert augment.max_translation == 12 and augment.flip
    dx, dy = torch.tensor([-12, 5]), torch.tensor([7, 12])
    images = torch.from_numpy(train.in_memory_images()[:2])
    moved = translate_flip(images, dx, dy)
    for k in range(2):
        assert np.array_equal(moved[k].numpy(), translate_with_reflect(images[k].numpy(), int(dx[k]), int(dy[k])))
    assert torch.allclose(augment.normalise(images[:1]), expected, atol=1e-6)


def test_the_registered_dataset(tmp_path):
    spec = get_dataset("stl10")
    assert (spec.num_classes, spec.train_size, spec.train_part, spec.eval_part) == (10, 5000, "train", "test")
    assert stl10.files_of("train+unlabeled") == ("train_X.bin", "train_y.bin", "unlabeled_X.bin", "class_names.txt")
    path = synthetic.write_stl10_binary(tmp_path / "stl10_binary.tar.gz", 10, 10, 10)
    assert "STL-10" in synthetic.stand_in_marker(path)
    assert "STL-10" in synthetic.stand_in_marker(synthetic.write_stl10_binary(tmp_path / "d", 10, 10, 10))
    assert isinstance(Image.fromarray(spec.open_part(path, "test", None).pixels(0)), Image.Image)


def test_a_tarball_of_too_many_members_is_refused(tmp_path):
    path = tmp_path / "stl10_binary.tar"
    with tarfile.open(path, "w") as tar:
        for k in range(stl10.MAX_MEMBERS + 1):
            tar.addfile(tarfile.TarInfo(f"stl10_binary/pad_{k}"))
    with pytest.raises(BadInput) as exc:
        stl10.open_part(path, "train", None)
    assert "holds more than 1000 members" in one_line_naming(exc, "stl10_binary.tar")
