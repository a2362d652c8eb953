"""Robustness to the common corruptions of Hendrycks & Dietterich (2019), the CIFAR-10-C
benchmark: networks measured on a dataset's test images, clean and corrupted, and the
benchmark's measures. ``mt_repro.apps.robustness`` (``mt-repro evaluate --corruptions``) loads
the checkpoints; the digits demo measures its runs with ``measure`` too.

The corrupted test images come from the published CIFAR-10-C / CIFAR-100-C files when their
directory is given (:mod:`mt_repro.data.cifar10_c`), else they are generated from the dataset's
own test images (:mod:`mt_repro.data.corruptions`, seeded: every network measured with the same
seed sees the same corrupted images).

The measures, as the benchmark defines them, with E(c, s) a network's top-1 error (%) under
corruption c at severity s and E(clean) its error on the clean test images:

* corruption error of c: the mean of E(c, s) over the 5 severities; **mean corruption error**:
  its mean over the 15 standard corruptions (the 4 extra ones, held out by the benchmark for
  validation, are reported beside it, never in it). On CIFAR-10-C this unnormalised mean is what
  papers call "mCE".
* against a **baseline** network B (the benchmark's AlexNet; here any checkpoint):
  CE(c) = 100 sum_s E(c, s) / sum_s E_B(c, s) and **mCE** its mean over the standard
  corruptions; relative CE(c) = 100 sum_s (E(c, s) - E(clean)) / sum_s (E_B(c, s) - E_B(clean))
  and **relative mCE** its mean: how much of the baseline's loss to corruption remains.
  A corruption whose baseline sum is 0 has no CE (the mean is then over the others, and says so).
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from mt_repro.core.errors import BadInput
from mt_repro.core.tables import aligned
from mt_repro.data import cifar10_c, corruptions
from mt_repro.data.registry import DatasetSpec
from mt_repro.engine.evaluation import evaluate_model

NETWORKS = ("student", "teacher")
RAW_IMAGE_BYTES = 2 << 30     # the clean test images held as uint8 to corrupt them: CIFAR-10's are 30 MB
RESULT_VERSION = 1


@dataclass
class CorruptionErrors:
    """One network's top-1 error (%): clean, and under each corruption at severities 1..5."""
    network: str
    clean: float
    errors: dict[str, list[float]] = field(default_factory=dict)

    def corruption_error(self, name: str) -> float:
        return statistics.fmean(self.errors[name])

    def _mean_over(self, names: Iterable[str]) -> float:
        present = [self.corruption_error(n) for n in names if n in self.errors]
        return statistics.fmean(present) if present else math.nan

    @property
    def mean_corruption_error(self) -> float:
        """Over the standard corruptions evaluated (all 15 unless some were left out)."""
        return self._mean_over(corruptions.STANDARD)

    @property
    def extra_mean_error(self) -> float:
        return self._mean_over(corruptions.EXTRA)


def ce(errors: CorruptionErrors, baseline: CorruptionErrors) -> dict[str, float]:
    """CE(c) against the baseline, in %, for the corruptions both hold (NaN where the
    baseline's errors sum to 0)."""
    return {name: _ratio(sum(values), sum(baseline.errors[name]))
            for name, values in errors.errors.items() if name in baseline.errors}


def relative_ce(errors: CorruptionErrors, baseline: CorruptionErrors) -> dict[str, float]:
    """Relative CE(c): the rise above each network's own clean error, against the baseline's."""
    return {name: _ratio(sum(e - errors.clean for e in values),
                         sum(e - baseline.clean for e in baseline.errors[name]))
            for name, values in errors.errors.items() if name in baseline.errors}


def _ratio(numerator: float, denominator: float) -> float:
    return 100.0 * numerator / denominator if denominator != 0 else math.nan


def mean_over_standard(values: dict[str, float]) -> float:
    """The mean of per-corruption values over the standard corruptions that have one."""
    kept = [v for name, v in values.items() if name in corruptions.STANDARD and not math.isnan(v)]
    return statistics.fmean(kept) if kept else math.nan


def mce(errors: CorruptionErrors, baseline: CorruptionErrors) -> float:
    return mean_over_standard(ce(errors, baseline))


def relative_mce(errors: CorruptionErrors, baseline: CorruptionErrors) -> float:
    return mean_over_standard(relative_ce(errors, baseline))


@dataclass
class Robustness:
    """What ``evaluate --corruptions`` measured for one checkpoint (and its baseline)."""
    checkpoint: str
    arch: str
    dataset: str
    images: int                       # test images per corruption and severity
    source: str                       # "generated, seed S" or the published files' directory
    networks: dict[str, CorruptionErrors]
    baseline: "Robustness | None" = None
    baseline_network: str | None = None   # None: each network against the baseline's network of its name

    def against(self, network: str) -> CorruptionErrors | None:
        if self.baseline is None:
            return None
        return self.baseline.networks[self.baseline_network or network]

    def lines(self) -> list[str]:
        names = [n for n in corruptions.CORRUPTIONS if n in next(iter(self.networks.values())).errors]
        out = [f"{self.checkpoint} ({self.arch}) on the {self.dataset} test images under common corruptions "
               f"({self.source}): {self.images} images per corruption and severity, top-1 error %"]
        for network, result in self.networks.items():
            base = self.against(network)
            header = ["corruption"] + [f"s{s}" for s in corruptions.SEVERITIES] + ["mean"]
            header += ["CE", "rel. CE"] if base is not None else []
            rows = [["clean"] + [""] * len(corruptions.SEVERITIES) + [f"{result.clean:.2f}"]
                    + ([f"{base.clean:.2f} (base)", ""] if base is not None else [])]
            ces = ce(result, base) if base is not None else {}
            relatives = relative_ce(result, base) if base is not None else {}
            for name in names:
                extra = " (extra)" if name in corruptions.EXTRA else ""
                row = [name + extra] + [f"{e:.2f}" for e in result.errors[name]] + [f"{result.corruption_error(name):.2f}"]
                if base is not None:
                    row += [_percent(ces.get(name, math.nan)), _percent(relatives.get(name, math.nan))]
                rows.append(row)
            out += ["", f"{network}:"] + aligned([header] + rows, indent="  ")
            summary = (f"  clean error {result.clean:.2f} %, mean corruption error {result.mean_corruption_error:.2f} % "
                       f"({_count(result, corruptions.STANDARD)} standard corruptions)")
            if any(n in result.errors for n in corruptions.EXTRA):
                summary += f", extra corruptions {result.extra_mean_error:.2f} %"
            out.append(summary)
            if base is not None:
                which = f"the baseline's {self.baseline_network or network}"
                out.append(f"  against {which} ({self.baseline.checkpoint}): mCE {_percent(mce(result, base))}, "
                           f"relative mCE {_percent(relative_mce(result, base))}"
                           + _undefined_note(ces, relatives))
        return out

    def csv_text(self) -> str:
        lines = ["network,corruption,severity,error"]
        for network, result in self.networks.items():
            lines.append(f"{network},clean,0,{result.clean:.4f}")
            for name in corruptions.CORRUPTIONS:
                for severity, error in zip(corruptions.SEVERITIES, result.errors.get(name, [])):
                    lines.append(f"{network},{name},{severity},{error:.4f}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        record = {"version": RESULT_VERSION, "checkpoint": self.checkpoint, "arch": self.arch,
                  "dataset": self.dataset, "images": self.images, "source": self.source,
                  "networks": {k: asdict(v) for k, v in self.networks.items()},
                  "baseline_network": self.baseline_network}
        record["baseline"] = None if self.baseline is None else self.baseline.to_json()
        if self.baseline is not None:   # the derived measures, for whoever reads the file alone
            record["against_baseline"] = {
                network: {"mce": _finite(mce(result, self.against(network))),
                          "relative_mce": _finite(relative_mce(result, self.against(network)))}
                for network, result in self.networks.items()}
        return record


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _count(result: CorruptionErrors, names: tuple[str, ...]) -> int:
    return sum(n in result.errors for n in names)


def _percent(value: float) -> str:
    return "undefined" if math.isnan(value) else f"{value:.1f} %"


def _undefined_note(ces: dict[str, float], relatives: dict[str, float]) -> str:
    undefined = sorted({n for d in (ces, relatives) for n, v in d.items() if math.isnan(v) and n in corruptions.STANDARD})
    if not undefined:
        return ""
    return f" (without {', '.join(undefined)}: the baseline lost nothing to them, so no ratio)"


# --- reading a result back (mt-repro report) ---------------------------------------------------
def from_json(record, source: str) -> Robustness:
    """A ``Robustness`` from its ``to_json`` record (a file of ``write_results``), checked."""
    def bad(what: str) -> BadInput:
        return BadInput(f"{source} is not a result of mt-repro evaluate --corruptions: {what}")

    if not isinstance(record, dict) or record.get("version") != RESULT_VERSION:
        raise bad(f"no version {RESULT_VERSION} record")
    for key, kind in (("checkpoint", str), ("arch", str), ("dataset", str), ("source", str), ("images", int)):
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise bad(f"{key} is not a {kind.__name__}")
    networks = record.get("networks")
    if not isinstance(networks, dict) or not networks or any(k not in NETWORKS for k in networks):
        raise bad(f"networks must be some of {', '.join(NETWORKS)}")
    parsed = {}
    for name, value in networks.items():
        if not isinstance(value, dict) or not _is_number(value.get("clean")) or not isinstance(value.get("errors"), dict):
            raise bad(f"the {name}'s errors are not numbers")
        errors = value["errors"]
        for corruption, levels in errors.items():
            if corruption not in corruptions.CORRUPTIONS or not isinstance(levels, list) \
                    or len(levels) != len(corruptions.SEVERITIES) or not all(_is_number(v) for v in levels):
                raise bad(f"the {name}'s {str(corruption)[:40]!r} is not a known corruption with 5 errors")
        parsed[name] = CorruptionErrors(name, float(value["clean"]), {k: [float(v) for v in levels]
                                                                      for k, levels in errors.items()})
    baseline_network = record.get("baseline_network")
    if baseline_network not in (None, *NETWORKS):
        raise bad("baseline_network is not a network")
    baseline = record.get("baseline")
    if baseline is not None and (not isinstance(baseline, dict) or baseline.get("baseline") is not None):
        raise bad("its baseline is not a result without a baseline")
    result = Robustness(record["checkpoint"], record["arch"], record["dataset"], record["images"], record["source"],
                        parsed, None if baseline is None else from_json(baseline, source), baseline_network)
    if result.baseline is not None and any(result.against(n) is None for n in parsed):
        raise bad("its baseline lacks a network it is compared with")
    return result


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- measuring ---------------------------------------------------------------------------------
@dataclass
class CleanImages:
    """A test part as uint8 N x H x W x C images (what the corruptions take), its labels and
    how to give a corrupted image to the dataset's evaluation transform."""
    images: np.ndarray
    labels: np.ndarray
    restore: Callable[[np.ndarray], object]
    exact: bool      # restore gives back the very images (PIL); else they were rounded to 256 levels


def clean_images(spec: DatasetSpec, dataset) -> CleanImages:
    """The images of ``dataset`` (a part opened without a transform) as one uint8 array: PIL
    images (CIFAR-10, SVHN, ...) as they decode, float images in [0, 1] (the digits) rounded to
    256 levels. All must have one size (the corruptions' parameters are set by it)."""
    count = len(dataset)
    if count == 0:
        raise BadInput(f"{spec.name}: no test images to corrupt")
    first, _ = dataset[0]
    pil_mode = first.mode if isinstance(first, Image.Image) else None
    sample = _as_uint8(first)
    if count * sample.nbytes > RAW_IMAGE_BYTES:
        raise BadInput(f"{spec.name}'s {count} test images of {sample.shape[1]}x{sample.shape[0]} would take "
                       f"{count * sample.nbytes / 2**30:.1f} GiB to corrupt (at most {RAW_IMAGE_BYTES / 2**30:.0f})")
    images = np.empty((count, *sample.shape), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    for index in range(count):
        image, label = dataset[index]
        array = _as_uint8(image)
        if array.shape != sample.shape:
            raise BadInput(f"{spec.name}'s test images differ in size ({sample.shape} and {array.shape} at image "
                           f"{index}): the corruptions need images of one size")
        images[index], labels[index] = array, label
    if pil_mode is not None:
        def restore(array: np.ndarray):
            return Image.fromarray(array[..., 0] if pil_mode == "L" else array, mode=pil_mode)
    else:
        def restore(array: np.ndarray):
            return array.astype(np.float32) / 255.0
    return CleanImages(images, labels, restore, exact=pil_mode is not None)


def _as_uint8(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        array = np.asarray(image)
        return array[..., None] if array.ndim == 2 else array
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise BadInput(f"images of shape {array.shape} cannot be corrupted: they must be H x W x 1 or 3")
    if array.dtype == np.uint8:
        return array
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def corrupted_sets(clean: CleanImages, names: list[str], *, published: Path | None, seed: int,
                   frost_dir: str | os.PathLike | None, num_classes: int):
    """(corruption, severity, uint8 images, their labels) for every corruption of ``names`` and
    severity, each made (or read) once, in the benchmark's order."""
    for name in names:
        if published is not None:
            images, labels = cifar10_c.read_corruption(published, name, num_classes=num_classes)
            _check_same_test_set(published, name, labels, clean)
            for severity in corruptions.SEVERITIES:
                yield name, severity, images[severity - 1], labels
        else:
            for severity in corruptions.SEVERITIES:
                yield name, severity, corruptions.corrupt(clean.images, name, severity, seed, frost_dir), clean.labels


def _check_same_test_set(directory: Path, name: str, labels: np.ndarray, clean: CleanImages) -> None:
    """The published files hold the test set in the order of CIFAR's test batch, which a by-image
    tree does not keep: the labels are compared as counts per class, then used as they are."""
    if len(labels) != len(clean.labels) or not np.array_equal(np.bincount(labels, minlength=clean.labels.max() + 1),
                                                              np.bincount(clean.labels, minlength=labels.max() + 1)):
        raise BadInput(f"{directory / (name + '.npy')} holds {len(labels)} images per severity whose labels are not "
                       f"those of the test set evaluated ({len(clean.labels)} images): is it the corrupted copy "
                       "of this dataset's test set?")


def network_errors(models: dict[str, torch.nn.Module], batches_of: Callable[[], Iterable],
                   device: torch.device) -> dict[str, float]:
    """Top-1 error (%) of each model on the (inputs, targets) batches ``batches_of()`` gives."""
    return {name: evaluate_model(model, batches_of(), device)["error1/avg"] for name, model in models.items()}


def tensor_batches(images: np.ndarray, labels: np.ndarray, transform, restore, batch_size: int):
    """The images through the evaluation transform, ``batch_size`` at a time, made once."""
    inputs = torch.stack([transform(restore(image)) for image in images])
    targets = torch.as_tensor(labels)

    def batches():
        return ((inputs[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, len(inputs), batch_size))
    return batches


def severity_curves(result: Robustness) -> list[tuple[str, list[float]]]:
    """(label, error at severity 0 = clean, 1..5): the mean over the standard corruptions of
    each network, and of the baseline's."""
    curves = []
    for label, robustness in (("", result), ("baseline ", result.baseline)):
        if robustness is None:
            continue
        for network, errors in robustness.networks.items():
            standard = [n for n in corruptions.STANDARD if n in errors.errors]
            if not standard:
                continue
            means = [statistics.fmean(errors.errors[n][s - 1] for n in standard) for s in corruptions.SEVERITIES]
            curves.append((f"{label}{network}", [errors.clean, *means]))
    return curves


@dataclass
class Measured:
    errors: dict[str, CorruptionErrors]   # by the key of each network measured
    images: int                           # per corruption and severity
    source: str


def measure(networks: dict[str, torch.nn.Module], spec: DatasetSpec, data_dir, names: list[str] | None, *,
            published: str | Path | None, seed: int, frost_dir, batch_size: int, device: torch.device,
            progress: Callable[[str], None] | None = None) -> Measured:
    """The errors of every network (in eval mode, on ``device``) on the test part of ``spec``,
    clean and under ``names`` (None: all there are) at the 5 severities; each corrupted set
    made once for all of them."""
    published = None if published is None else Path(published)
    names = chosen_corruptions(names, published, frost_dir)
    if published is not None:
        cifar10_c.check_corruption_files(published, names, num_classes=spec.num_classes)
    root = spec.root(data_dir)
    # The test part without its transform: the corruptions take the decoded images.
    clean = clean_images(spec, spec.open_part(root, spec.eval_part, None))
    transform = spec.eval_transform()
    if clean.exact:
        clean_batches = tensor_batches(clean.images, clean.labels, transform, clean.restore, batch_size)
    else:  # the images as they are, not rounded to 256 levels: the error `evaluate` reports
        clean_batches = _unrounded(spec, root, transform, batch_size)
    errors = {key: CorruptionErrors(key, error) for key, error in network_errors(networks, clean_batches, device).items()}
    told = None
    for name, severity, images, labels in corrupted_sets(clean, names, published=published, seed=seed,
                                                         frost_dir=frost_dir, num_classes=spec.num_classes):
        if progress is not None and name != told:
            progress(f"{name} ({names.index(name) + 1} of {len(names)})")
            told = name
        batches = tensor_batches(images, labels, transform, clean.restore, batch_size)
        for key, error in network_errors(networks, batches, device).items():
            errors[key].errors.setdefault(name, []).append(error)
    source = (f"generated by mt_repro.data.corruptions, seed {seed}" if published is None
              else f"published files in {published}")
    return Measured(errors, len(clean.labels), source)


def _unrounded(spec: DatasetSpec, root, transform, batch_size: int):
    dataset = spec.open_part(root, spec.eval_part, transform)

    def batches():
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return batches


def chosen_corruptions(names: list[str] | None, published: Path | None, frost_dir) -> list[str]:
    """``names`` checked (each known and available), in the benchmark's order; None: all there
    are, those of the ``published`` directory or all that can be generated."""
    available = cifar10_c.corruptions_in(published) if published is not None else corruptions.generatable(frost_dir)
    if names is None:
        if not available:
            raise BadInput(f"{published} holds no corruption files beside {cifar10_c.LABELS}")
        return list(available)
    for name in names:
        if name not in corruptions.CORRUPTIONS:
            raise BadInput(f"unknown corruption {name!r}: the corruptions are {', '.join(corruptions.CORRUPTIONS)}")
        if name not in available:
            where = (f"{published} has no {name}.npy" if published is not None
                     else "frost needs the benchmark's frost photographs: --frost-images DIR")
            raise BadInput(f"corruption {name} is not available: {where}")
    return [n for n in corruptions.CORRUPTIONS if n in names]
