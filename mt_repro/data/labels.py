"""Label files of the original code: one ``<image file name> <class name>`` per line.

Images of the training folder that the file does not name are unlabeled (``NO_LABEL``).
"""
from __future__ import annotations

import os
from pathlib import Path

from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import write_text_atomic
from mt_repro.core.limits import LINE_BYTES, TEXT_FILE_BYTES, read_text
from mt_repro.core.types import NO_LABEL


def read_label_file(path: str | os.PathLike) -> dict[str, str]:
    """``{image file name: class name}``; the file must be a regular UTF-8 text file within
    ``TEXT_FILE_BYTES``, each line within ``LINE_BYTES``."""
    path = Path(path)
    text = read_text(path, "label file", TEXT_FILE_BYTES)
    labels: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        LINE_BYTES.check(len(line.encode("utf-8", "surrogatepass")), f"label file {path.name} line {number}")
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise BadInput(f"label file {path.name} line {number}: expected '<file> <class>', got {line!r}")
        name, label = parts
        if labels.get(name, label) != label:
            raise BadInput(f"label file {path.name} line {number}: {name} labeled twice "
                           f"({labels[name]} and {label})")
        labels[name] = label
    if not labels:
        raise BadInput(f"label file {path} names no images")
    return labels


def write_label_file(path: str | os.PathLike, labels: dict[str, str]) -> None:
    """``labels`` in the original's format, ``<image> <class>`` per line (written atomically:
    later runs read it)."""
    write_text_atomic(path, "".join(f"{name} {label}\n" for name, label in labels.items()))


def apply_labels(dataset, labels: dict[str, str], source: str = "label file") -> tuple[list[int], list[int]]:
    """Relabel ``dataset.samples`` in place; return (labeled, unlabeled) indices, both ascending.

    ``dataset`` is a torchvision ``ImageFolder`` or anything with ``samples`` (path, target)
    and ``class_to_idx``. A file naming an image or class the dataset lacks is an error.
    """
    remaining = dict(labels)
    labeled, unlabeled = [], []
    unknown_classes: set[str] = set()
    for index, (path, _) in enumerate(dataset.samples):
        name = os.path.basename(path)
        label = remaining.pop(name, None)
        if label is None:
            dataset.samples[index] = (path, NO_LABEL)
            unlabeled.append(index)
        elif label not in dataset.class_to_idx:
            unknown_classes.add(label)
        else:
            dataset.samples[index] = (path, dataset.class_to_idx[label])
            labeled.append(index)
    if unknown_classes:
        raise BadInput(f"{source} names {len(unknown_classes)} unknown class(es): "
                       f"{_preview(sorted(unknown_classes))}")
    if remaining:
        raise BadInput(f"{source} names {len(remaining)} image(s) not in the training folder: "
                       f"{_preview(list(remaining))}")
    dataset.targets = [target for _, target in dataset.samples]
    if hasattr(dataset, "imgs"):
        dataset.imgs = dataset.samples
    return labeled, unlabeled


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (", …" if len(names) > limit else "")
