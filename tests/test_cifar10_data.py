"""CIFAR-10 input: the published tarball, its extracted batches, the by-image tree, label files.

Everything is built here from ``mt_repro.data.synthetic`` in the exact published formats; the
original label files are read from the ``original_labels`` fixture (never copied here).
"""
from __future__ import annotations

import os
import pickle
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from mt_repro.cli import main
from mt_repro.config import compose
from mt_repro.data import cifar10, synthetic
from mt_repro.data.loaders import training_data
from mt_repro.data.labels import read_label_file
from mt_repro.core.errors import BadInput
from mt_repro.core.types import NO_LABEL

CLASSES = synthetic.CIFAR10_CLASSES
N_TRAIN, N_TEST = 120, 20  # names from 0_ to 119_: one-, two- and three-digit, as string order needs
RUN_FLAGS = ["--set", "arch=cifar_shakeshake_mini", "--epochs", "1", "--workers", "0", "--gpus", "1",
             "--no-progress"]


# --- helpers -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """A small tarball (published pickle format), its source batches and the extracted copy."""
    root = tmp_path_factory.mktemp("small")
    batches = synthetic.cifar_batches(N_TRAIN, N_TEST, seed=3)
    pickles = synthetic.cifar_pickles(batches)
    tarball = synthetic.write_tarball(root / "cifar-10-python.tar.gz", pickles)
    extracted = root / "extracted"
    with tarfile.open(tarball) as tar:
        tar.extractall(extracted, filter="data")
    return {"tarball": tarball, "extracted": extracted, "batches": batches, "pickles": pickles,
            "root": root}


def expected_split(batches: dict, names: tuple[str, ...]):
    """(HWC images, labels) straight from the pickled rows, batches concatenated in order."""
    rows = np.concatenate([batches[n]["data"] for n in names])
    labels = [label for n in names for label in batches[n]["labels"]]
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def tree_files(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(capsys, argv: list[str]) -> str:
    """Exit 2, exactly one stderr line ``mt-repro: error: ...``, no traceback; returns the line."""
    code, out, err = run_cli(capsys, argv)
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("mt-repro: error: "), err
    return lines[0]


def prepare(capsys, source: Path, destination: Path) -> str:
    code, out, err = run_cli(capsys, ["prepare", "cifar10", "--from", source, "--to", destination,
                                      "--no-progress"])
    assert code == 0, err
    return out


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


# --- 1. reading the tarball and the batches ------------------------------------------------
@pytest.mark.parametrize("py2", [True, False], ids=["published-py2-pickles", "py3-pickles"])
def test_tarball_and_batch_directories_read_identically(tmp_path, py2):
    batches = synthetic.cifar_batches(N_TRAIN, N_TEST, seed=1)
    pickles = synthetic.cifar_pickles(batches, py2=py2)
    tarball = synthetic.write_tarball(tmp_path / "cifar-10-python.tar.gz", pickles)
    batch_dir = tmp_path / "extracted" / cifar10.BATCH_DIR
    batch_dir.mkdir(parents=True)
    for name, payload in pickles.items():
        (batch_dir / name).write_bytes(payload)

    reads = [cifar10.read_cifar10(s) for s in (tarball, batch_dir.parent, batch_dir)]
    for split, names in (("train+val", cifar10.TRAIN_BATCHES), ("test", (cifar10.TEST_BATCH,))):
        images, labels = expected_split(batches, names)
        for read in reads:
            got = read[split]
            assert got.images.dtype == np.uint8 and got.images.shape == (len(labels), 32, 32, 3)
            np.testing.assert_array_equal(got.images, images)
            assert got.labels == labels
            assert got.class_names == list(CLASSES)
            assert got.file_names() == [f"{i}_{CLASSES[c]}.png" for i, c in enumerate(labels)]
    assert len(reads[0]["train+val"].labels) == N_TRAIN and len(reads[0]["test"].labels) == N_TEST


def test_published_pickle_format_is_what_python2_wrote(small):
    # The real batches are protocol-2 dicts keyed by Python 2 byte strings, with numpy 1.x's
    # reconstructor. Reading them must not depend on numpy._core or on Python 3 str opcodes.
    payload = small["pickles"]["data_batch_1"]
    assert payload.startswith(b"\x80\x02}q\x00(U\x0bbatch_labelq\x01U\x15training batch 1 of 5")
    assert b"U\x04data" in payload and b"U\x06labels" in payload
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload and b"numpy._core" not in payload
    assert b"_codecs" not in payload


def test_channel_major_rows_become_hwc_pixels():
    row = np.arange(3072, dtype=np.int64)
    batch = {"data": (row % 251).astype(np.uint8)[None], "labels": [0]}
    image = cifar10._images(batch, "x")[0]
    assert image.shape == (32, 32, 3)
    for y, x, c in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (0, 0, 1), (31, 31, 2), (5, 7, 2)]:
        assert image[y, x, c] == (c * 1024 + y * 32 + x) % 251


# --- 2. prepare ----------------------------------------------------------------------------
def test_prepare_writes_the_original_tree_exactly_and_is_idempotent(small, tmp_path, capsys):
    out_dir = tmp_path / "by-image"
    out = prepare(capsys, small["tarball"], out_dir)
    assert f"wrote {N_TRAIN} training and {N_TEST} test images to {out_dir}" in out

    expected = {}
    for split, names in (("train+val", cifar10.TRAIN_BATCHES), ("test", (cifar10.TEST_BATCH,))):
        images, labels = expected_split(small["batches"], names)
        for i, (image, label) in enumerate(zip(images, labels)):
            expected[f"{split}/{CLASSES[label]}/{i}_{CLASSES[label]}.png"] = image
    files = tree_files(out_dir)
    assert set(files) == set(expected)  # nothing else: no .partial leftovers
    for relative, image in expected.items():
        np.testing.assert_array_equal(decode(out_dir / relative), image, err_msg=relative)

    # Idempotent: a second run succeeds and touches nothing.
    out = prepare(capsys, small["tarball"], out_dir)
    assert f"wrote {N_TRAIN} training and {N_TEST} test images" in out
    assert tree_files(out_dir) == files

    # An interrupted run (one image never written, a stale temporary) is completed by a rerun.
    victim = next(iter(expected))
    (out_dir / victim).unlink()
    (out_dir / victim).with_suffix(".png.partial").write_bytes(b"half a png")
    prepare(capsys, small["tarball"], out_dir)
    assert set(tree_files(out_dir)) == set(expected)
    np.testing.assert_array_equal(decode(out_dir / victim), expected[victim])


def test_prepare_from_extracted_batches_writes_the_same_tree(small, tmp_path, capsys):
    from_tar, from_dir = tmp_path / "a", tmp_path / "b"
    prepare(capsys, small["tarball"], from_tar)
    prepare(capsys, small["extracted"], from_dir)
    a = {k: v[1] for k, v in tree_files(from_tar).items()}
    b = {k: v[1] for k, v in tree_files(from_dir).items()}
    assert a == b


# --- 3. CifarArrays == ImageFolder ---------------------------------------------------------
def test_arrays_present_the_same_samples_as_image_folder(small, tmp_path, capsys):
    tree = tmp_path / "by-image"
    prepare(capsys, small["tarball"], tree)
    splits = cifar10.read_cifar10(small["tarball"])
    for split in ("train+val", "test"):
        folder = ImageFolder(str(tree / split))
        arrays = cifar10.CifarArrays(splits[split])
        assert arrays.classes == folder.classes
        assert arrays.class_to_idx == folder.class_to_idx
        assert len(arrays) == len(folder)
        assert arrays.samples == [(os.path.basename(p), t) for p, t in folder.samples]
        assert arrays.targets == folder.targets
        assert arrays.imgs == arrays.samples
        for index in range(len(folder)):
            image_a, target_a = arrays[index]
            image_f, target_f = folder[index]
            assert target_a == target_f
            assert image_a.mode == image_f.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(image_a), np.asarray(image_f))
    # The order is ImageFolder's string order, not numeric ("10_..." before "9_..."), and this
    # data does tell the two apart.
    samples = cifar10.CifarArrays(splits["train+val"]).samples
    first_class = [name for name, target in samples if target == 0]
    assert [name for name, _ in samples[:len(first_class)]] == first_class == sorted(first_class)
    assert first_class != sorted(first_class, key=lambda name: int(name.split("_")[0]))


def test_arrays_apply_the_transform():
    split = cifar10.CifarSplit(np.zeros((2, 32, 32, 3), np.uint8), [1, 0], list(CLASSES))
    dataset = cifar10.CifarArrays(split, transform=lambda image: image.size)
    assert dataset[0] == ((32, 32), 0) and dataset[1] == ((32, 32), 1)
    assert [name for name, _ in dataset.samples] == ["1_airplane.png", "0_automobile.png"]


# --- 4. Must-show: full size, original label file ------------------------------------------
@pytest.fixture(scope="module")
def full_size(tmp_path_factory, original_labels):
    """A 50000 + 10000 tarball in the published format whose images the original label file
    10.txt names with its classes, and the tree ``prepare`` writes from it."""
    label_file = original_labels / "cifar10" / "4000_balanced_labels" / "10.txt"
    listed = read_label_file(label_file)
    train_labels = [i % len(CLASSES) for i in range(50000)]
    for name, class_name in listed.items():
        index, suffix = name.split("_", 1)
        assert suffix == f"{class_name}.png"
        train_labels[int(index)] = CLASSES.index(class_name)
    root = tmp_path_factory.mktemp("full")
    tarball = synthetic.write_cifar_tarball(root / "cifar-10-python.tar.gz", 50000, 10000, seed=0,
                                            images="flat", train_labels=train_labels, compresslevel=1)
    tree = root / "by-image"
    code = main(["prepare", "cifar10", "--from", str(tarball), "--to", str(tree), "--no-progress"])
    assert code == 0
    return {"label_file": label_file, "listed": listed, "tarball": tarball, "tree": tree}


def _check_selection(bundle, listed: dict[str, str]) -> list[tuple[str, int]]:
    dataset = bundle.train_loader.dataset
    samples = [(os.path.basename(path), target) for path, target in dataset.samples]
    assert len(samples) == 50000 and len(bundle.eval_loader.dataset) == 10000
    labeled = {name: target for name, target in samples if target != NO_LABEL}
    assert set(labeled) == set(listed)
    assert all(labeled[name] == dataset.class_to_idx[listed[name]] for name in listed)
    assert dataset.classes == list(CLASSES)
    assert sum(t == NO_LABEL for _, t in samples) == 50000 - 4000
    assert dataset.targets == [t for _, t in samples]
    assert (bundle.n_labeled, bundle.n_unlabeled) == (4000, 46000)
    # The sampler draws exactly the labeled indices for its labeled stream.
    sampler = bundle.train_loader.batch_sampler
    assert sorted(sampler.labeled_indices) == [i for i, (_, t) in enumerate(samples) if t != NO_LABEL]
    return samples


@pytest.mark.slow
def test_original_label_file_selects_exactly_its_images(full_size):
    config = lambda data_dir: compose.resnet_run(  # noqa: E731
        "cifar10_4000", label_file=full_size["label_file"], gpus=1,
        run={"data_dir": str(data_dir), "workers": 0})
    listed = full_size["listed"]
    assert NO_LABEL == -1 and len(listed) == 4000
    assert sorted(list(listed.values()).count(c) for c in CLASSES) == [400] * 10

    from_tree = training_data(config(full_size["tree"]))
    samples_tree = _check_selection(from_tree, listed)
    assert isinstance(from_tree.train_loader.dataset, ImageFolder)

    from_tarball = training_data(config(full_size["tarball"]))
    samples_tarball = _check_selection(from_tarball, listed)
    assert isinstance(from_tarball.train_loader.dataset, cifar10.CifarArrays)
    # Same images at the same indices, so the sampler sees the same thing either way.
    assert samples_tarball == samples_tree
    assert from_tarball.train_loader.batch_sampler.labeled_indices == \
        from_tree.train_loader.batch_sampler.labeled_indices
    names_tree = [os.path.basename(p) for p, _ in from_tree.eval_loader.dataset.samples]
    assert [n for n, _ in from_tarball.eval_loader.dataset.samples] == names_tree

    # Pixels behind each name are that image's (flat images encode their index).
    rng = np.random.RandomState(0)
    train_sets = [from_tree.train_loader.dataset, from_tarball.train_loader.dataset]
    for dataset in train_sets:
        dataset.transform = None
    some_labeled = rng.choice(from_tree.train_loader.batch_sampler.labeled_indices, 100, replace=False)
    for index in [*some_labeled, *rng.randint(0, 50000, size=100), 0, 49999]:
        name = samples_tree[index][0]
        images = [np.asarray(dataset[index][0]) for dataset in train_sets]
        np.testing.assert_array_equal(images[0], images[1])
        assert synthetic.flat_image_index(images[0]) == int(name.split("_")[0])


# --- 5. bad input --------------------------------------------------------------------------
def test_prepare_from_a_missing_path(tmp_path, capsys):
    line = assert_bad_input(capsys, ["prepare", "cifar10", "--from", tmp_path / "nope.tar.gz",
                                     "--to", tmp_path / "out"])
    assert "nope.tar.gz" in line and "does not exist" in line
    assert not (tmp_path / "out").exists()


def test_prepare_from_a_truncated_tarball(small, tmp_path, capsys):
    data = small["tarball"].read_bytes()
    cut = tmp_path / "cifar-10-python.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    line = assert_bad_input(capsys, ["prepare", "cifar10", "--from", cut, "--to", tmp_path / "out"])
    assert "cifar-10-python.tar.gz" in line and "re-download" in line
    assert not (tmp_path / "out").exists()


def test_prepare_from_a_corrupted_tarball(small, tmp_path, capsys):
    data = bytearray(small["tarball"].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(bytes(data))
    assert_bad_input(capsys, ["prepare", "cifar10", "--from", bad, "--to", tmp_path / "out"])


def test_prepare_from_something_that_is_not_a_tarball(tmp_path, capsys):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"<html>404 not found</html>\n")
    assert_bad_input(capsys, ["prepare", "cifar10", "--from", bad, "--to", tmp_path / "out"])


def test_prepare_from_a_tarball_without_test_batch(small, tmp_path, capsys):
    members = {k: v for k, v in small["pickles"].items() if k != "test_batch"}
    tarball = synthetic.write_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    line = assert_bad_input(capsys, ["prepare", "cifar10", "--from", tarball, "--to", tmp_path / "out"])
    assert "test_batch" in line


def test_prepare_from_a_batch_directory_without_test_batch(small, tmp_path, capsys):
    batch_dir = tmp_path / cifar10.BATCH_DIR
    batch_dir.mkdir()
    for name, payload in small["pickles"].items():
        if name != "test_batch":
            (batch_dir / name).write_bytes(payload)
    line = assert_bad_input(capsys, ["prepare", "cifar10", "--from", tmp_path, "--to", tmp_path / "out"])
    assert "test_batch" in line and "missing" in line


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-a-dict", "no-labels", "wrong-shape"])
def test_prepare_from_a_corrupt_batch(small, tmp_path, capsys, damage):
    members = dict(small["pickles"])
    good = members["data_batch_3"]
    batch = small["batches"]["data_batch_3"]
    members["data_batch_3"] = {
        "truncated": good[: len(good) // 2],
        "garbage": b"\x80\x02" + bytes(range(256)) * 4,
        "not-a-dict": synthetic.py2_pickle([1, 2, 3]),
        "no-labels": synthetic.py2_pickle({"data": batch["data"]}),
        "wrong-shape": synthetic.py2_pickle({**batch, "data": batch["data"].reshape(-1, 3, 32, 32)}),
    }[damage]
    tarball = synthetic.write_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    line = assert_bad_input(capsys, ["prepare", "cifar10", "--from", tarball, "--to", tmp_path / "out"])
    assert "data_batch_3" in line


class _Exploit:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("form", ["tarball", "batches"])
def test_a_pickle_with_a_malicious_global_is_refused_unexecuted(small, tmp_path, capsys, protocol, form):
    marker = tmp_path / "executed"
    evil = pickle.dumps({"data": _Exploit(f"touch {shlex.quote(str(marker))}"), "labels": []},
                        protocol=protocol)
    members = {**small["pickles"], "data_batch_1": evil}
    if form == "tarball":
        source = synthetic.write_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    else:
        source = tmp_path / "extracted" / cifar10.BATCH_DIR
        source.mkdir(parents=True)
        for name, payload in members.items():
            (source / name).write_bytes(payload)
    line = assert_bad_input(capsys, ["prepare", "cifar10", "--from", source, "--to", tmp_path / "out"])
    assert "data_batch_1" in line and "system" in line and "not allowed" in line
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_cifar10_run_with_a_missing_data_directory(tiny_tree, tmp_path, capsys):
    line = assert_bad_input(capsys, ["cifar10", "--data", tmp_path / "missing", "--label-file",
                                     tiny_tree.parent / "labels.txt", *RUN_FLAGS, "--out", tmp_path / "run"])
    assert "missing" in line and "does not exist" in line and "mt-repro prepare cifar10" in line
    assert not (tmp_path / "run").exists()


def test_cifar10_run_with_a_missing_label_file(tiny_tree, tmp_path, capsys):
    line = assert_bad_input(capsys, ["cifar10", "--data", tiny_tree, "--label-file", tmp_path / "nope.txt",
                                     *RUN_FLAGS, "--out", tmp_path / "run"])
    assert "nope.txt" in line


@pytest.fixture(params=["tree", "tarball"])
def data_form(request, tiny_tree, small):
    """(data path, [(file name, class name)] of its training images) for both data forms."""
    if request.param == "tree":
        names = [(p.name, p.parent.name) for p in sorted((tiny_tree / "train+val").rglob("*.png"))]
        return tiny_tree, names
    split = cifar10.read_cifar10(small["tarball"])["train+val"]
    return small["tarball"], [(n, CLASSES[c]) for n, c in zip(split.file_names(), split.labels)]


def _run_with_labels(capsys, tmp_path, data: Path, text: str) -> str:
    label_file = tmp_path / "labels.txt"
    label_file.write_text(text)
    return assert_bad_input(capsys, ["cifar10", "--data", data, "--label-file", label_file, *RUN_FLAGS,
                                     "--out", tmp_path / "run"])


def test_label_file_naming_images_not_in_the_data(data_form, tmp_path, capsys):
    data, names = data_form
    absent = [f"{50000 + k}_{CLASSES[k % 10]}.png" for k in range(7)]
    lines = [f"{n} {c}" for n, c in names[:5]] + [f"{n} {n[6:-4]}" for n in absent]
    line = _run_with_labels(capsys, tmp_path, data, "\n".join(lines) + "\n")
    assert "7 image(s) not in the training folder" in line
    assert sum(n in line for n in absent) >= 3
    assert not (tmp_path / "run").exists()


def test_label_file_with_a_malformed_line(data_form, tmp_path, capsys):
    data, names = data_form
    text = f"{names[0][0]} {names[0][1]}\n{names[1][0]}\n"
    line = _run_with_labels(capsys, tmp_path, data, text)
    assert "line 2" in line and names[1][0] in line


def test_label_file_with_an_unknown_class(data_form, tmp_path, capsys):
    data, names = data_form
    text = f"{names[0][0]} {names[0][1]}\n{names[1][0]} aeroplane\n"
    line = _run_with_labels(capsys, tmp_path, data, text)
    assert "unknown class" in line and "aeroplane" in line


# --- 6. label file reader ------------------------------------------------------------------
def test_label_reader_ignores_blank_lines_and_whitespace(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\n0_cat.png cat\n   \n\t\n1_dog.png\tdog  \r\n\n2_cat.png cat")
    assert read_label_file(path) == {"0_cat.png": "cat", "1_dog.png": "dog", "2_cat.png": "cat"}


def test_label_reader_accepts_a_repeated_line_but_not_a_conflicting_one(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("0_cat.png cat\n0_cat.png cat\n")
    assert read_label_file(path) == {"0_cat.png": "cat"}
    path.write_text("0_cat.png cat\n1_dog.png dog\n0_cat.png dog\n")
    with pytest.raises(BadInput, match=r"line 3: 0_cat.png labeled twice \(cat and dog\)"):
        read_label_file(path)


@pytest.mark.parametrize("text", ["", "\n\n", "  \n\t\n"])
def test_label_reader_refuses_an_empty_file(tmp_path, text):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(BadInput, match="names no images"):
        read_label_file(path)


@pytest.mark.parametrize("line", ["0_cat.png", "0_cat.png cat extra"])
def test_label_reader_refuses_malformed_lines(tmp_path, line):
    path = tmp_path / "labels.txt"
    path.write_text(f"1_dog.png dog\n{line}\n")
    with pytest.raises(BadInput, match="line 2: expected"):
        read_label_file(path)


def test_label_reader_refuses_missing_and_binary_files(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        read_label_file(tmp_path / "nope.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81 cat\n")
    with pytest.raises(BadInput):
        read_label_file(tmp_path / "binary.txt")


def test_label_reader_reads_the_original_files(original_labels):
    for n_labels in (1000, 4000):
        labels = read_label_file(original_labels / "cifar10" / f"{n_labels}_balanced_labels" / "10.txt")
        assert len(labels) == n_labels
        assert all(name.endswith(f"_{c}.png") for name, c in labels.items())
        assert {list(labels.values()).count(c) for c in CLASSES} == {n_labels // 10}
