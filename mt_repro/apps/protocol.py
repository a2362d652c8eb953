"""One cell of a benchmark protocol (``mt-repro protocol usb cifar10 --labels 40 --method
fixmatch --seed 0``): its settings (``mt_repro.config.protocol``), the labeled images the
protocol's own split function chooses for the seed, written as a label file into the run
directory, and the run on the one engine.

USB draws its split over the training targets in the published order (torchvision's CIFAR
readers: data_batch_1 … data_batch_5); the images here are named ``<i>_<class>.png`` by that
order (``mt_repro.data.cifar10``), so the split's indices name the same images. As in USB, the
unlabeled stream holds every training image, the labeled ones with their labels hidden
(``unlabeled_includes_labeled``, USB's ``include_lb_to_ulb``), and the images are normalised with
USB's statistics (CIFAR-10 with ImageNet's: ``normalisation``, ``mt_repro.data.normalisation``).
A known difference from USB's own runs: the unlabeled stream is drawn without replacement one
pass at a time (USB's sampler draws its permutations over all ``num_train_iter`` steps at once).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mt_repro.config.protocol import ProtocolConfig, load_protocol, protocol_config
from mt_repro.core.errors import BadInput
from mt_repro.data.labels import write_label_file
from mt_repro.data.registry import get_dataset
from mt_repro.data.usb_splits import usb_split
from mt_repro.engine import runs
from mt_repro.engine.launch import GridRun
from mt_repro.engine.trainer import CONFIG_FILE, SUMMARY_FILE
from mt_repro.engine.threads import use_threads

LABEL_FILE = "protocol_labels.txt"


def published_order(train) -> tuple[list[str], list[int]]:
    """The training images' file names and classes in the published order: the dataset's own
    ``published_order`` (its items' indices in that order) where it has one (a part joined from
    several files: SVHN's train+extra), else from the images' names, ``<i>_<class>.png``."""
    own = getattr(train, "published_order", None)
    if own is not None:
        return ([Path(train.samples[k][0]).name for k in own], [train.samples[k][1] for k in own])
    indexed = []
    for path, target in train.samples:
        name = Path(path).name
        head = name.split("_", 1)[0]
        if not head.isdigit():
            raise BadInput(f"image {name!r} is not named <index>_<class>.png: the protocol's split needs "
                           "the published order of the images")
        indexed.append((int(head), name, target))
    indexed.sort()
    if [i for i, _, _ in indexed] != list(range(len(indexed))):
        raise BadInput(f"the {len(indexed)} training images are not numbered 0..{len(indexed) - 1}: "
                       "the protocol's split needs the whole published training set")
    return [name for _, name, _ in indexed], [target for _, _, target in indexed]


def extra_images(config: ProtocolConfig) -> int:
    """How many images of the dataset's ``extra`` file the cell trains on (SVHN's train+extra),
    counted in the data given: published numbers say whether they used them, and the cell's
    summary says it for ``compare --published``. Only a part that joins an ``extra`` file is
    opened: any other would be read (STL-10's 2.76 GB unlabeled file) to count nothing."""
    if "extra" not in config.train_subdir.split("+"):
        return 0
    spec = get_dataset(config.dataset)
    part = spec.open_part(spec.root(config.data_dir), config.train_subdir, None, config.damaged_images)
    return int(getattr(part, "part_sizes", {}).get("extra", 0))


def _with_split(config: ProtocolConfig, labels: Path) -> ProtocolConfig:
    return config.replace(labels=str(labels.resolve()), extra_unlabeled=extra_images(config)).validate()


def write_protocol_labels(config: ProtocolConfig, path: Path) -> Path:
    """The label file of the cell's split: ``usb_split`` of the training targets, ``n_labels``
    labels for the run's seed."""
    spec = get_dataset(config.dataset)
    part = load_protocol(config.protocol).split_part(config.dataset) or config.train_subdir
    train = spec.open_part(spec.root(config.data_dir), part, None, config.damaged_images)
    names, targets = published_order(train)
    labeled, _ = usb_split(targets, config.n_labels, spec.num_classes, config.seed)
    write_label_file(path, {names[i]: train.classes[targets[i]] for i in labeled.tolist()})
    return path


def default_out(protocol: str, dataset: str, n_labels: int, method: str, seed: int) -> Path:
    return default_grid_root(protocol) / cell_name(dataset, n_labels, method, seed)


def default_grid_root(protocol: str) -> Path:
    return Path("results") / "protocol" / protocol


def cell_name(dataset: str, n_labels: int, method: str, seed: int) -> str:
    return f"{dataset}_{n_labels}_{method}_{seed}"


def _cell_config(protocol: str, dataset: str, n_labels: int, method: str, seed: int, *,
                 data_dir: str | Path | None, overrides: Sequence[str], device: str) -> ProtocolConfig:
    values: dict[str, Any] = {"device": device}
    if data_dir is not None:
        values["data_dir"] = str(Path(data_dir).resolve())
    return protocol_config(protocol, dataset, method, n_labels, seed, overrides=overrides, **values)


def run_cell(protocol: str, dataset: str, n_labels: int, method: str, seed: int, *,
             data_dir: str | Path | None = None, out: str | Path | None = None, overrides: Sequence[str] = (),
             device: str = "auto", overwrite: bool = False, progress: bool = True,
             threads: int | None = None) -> dict[str, Any]:
    """Train one cell (``threads``: torch's, None: chosen from the network's size); returns the
    run's summary."""
    config = _cell_config(protocol, dataset, n_labels, method, seed, data_dir=data_dir, overrides=overrides,
                          device=device)
    out = Path(out) if out is not None else default_out(protocol, dataset, n_labels, method, seed)
    runs.refuse_existing_run(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    config = _with_split(config, write_protocol_labels(config, out / LABEL_FILE))
    use_threads(config, given=threads)
    return runs.train(config, out, overwrite=overwrite, progress=progress)


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: its name, its run directory and its checked settings."""

    label: str
    directory: Path
    config: ProtocolConfig

    @property
    def images_per_step(self) -> int:
        return self.config.batch_size


def grid_cells(protocol: str, dataset: str, labels: Sequence[int], methods: Sequence[str], seeds: Sequence[int], *,
               data_dir: str | Path | None = None, out: str | Path | None = None, overrides: Sequence[str] = (),
               device: str = "auto", single: bool = False) -> list[Cell]:
    """The cells labels × methods × seeds, each in ``<out>/<dataset>_<labels>_<method>_<seed>``
    (``single``: one cell in ``out`` itself, as ``run_cell`` puts it), every cell's settings
    checked; nothing is written."""
    if single and out is not None:
        (n, method, seed), = [(n, m, s) for n in labels for m in methods for s in seeds]
        directories = {(n, method, seed): Path(out)}
    else:
        root = Path(out) if out is not None else default_grid_root(protocol)
        directories = {(n, m, s): root / cell_name(dataset, n, m, s) for n in labels for m in methods for s in seeds}
    return [Cell(f"{protocol} {dataset} {n} labels {method} seed {seed}", directory,
                 _cell_config(protocol, dataset, n, method, seed, data_dir=data_dir, overrides=overrides, device=device))
            for (n, method, seed), directory in directories.items()]


def grid_runs(protocol: str, dataset: str, labels: Sequence[int], methods: Sequence[str], seeds: Sequence[int], *,
              data_dir: str | Path | None = None, out: str | Path | None = None, overrides: Sequence[str] = (),
              device: str = "auto") -> list[GridRun]:
    """The cells labels × methods × seeds as a grid for ``mt_repro.engine.launch``, each in
    ``<out>/<dataset>_<labels>_<method>_<seed>`` (the directory ``run_cell`` would use), every
    cell's settings checked before anything is written. A cell without a run yet gets its label
    file now; a finished one is left as it is; an interrupted one resumes with the data given now."""
    cells = grid_cells(protocol, dataset, labels, methods, seeds, data_dir=data_dir, out=out, overrides=overrides,
                       device=device)
    grid = []
    for cell in cells:
        directory, label, config = cell.directory, cell.label, cell.config
        if (directory / SUMMARY_FILE).is_file():
            grid.append(GridRun(directory, None, label))
            continue
        moved = {"data_dir": config.data_dir} if data_dir is not None else {}
        if (directory / CONFIG_FILE).is_file():   # interrupted: resumed from its checkpoint
            grid.append(GridRun(directory, None, label, resume_overrides=moved))
            continue
        runs.refuse_existing_run(directory)
        directory.mkdir(parents=True, exist_ok=True)
        grid.append(GridRun(directory, _with_split(config, write_protocol_labels(config, directory / LABEL_FILE)),
                            label))
    return grid
