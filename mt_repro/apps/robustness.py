"""``mt-repro evaluate CKPT --corruptions``: a checkpoint's student and teacher under the common
corruptions (measured by :mod:`mt_repro.engine.robustness`, which says how), against a baseline
checkpoint if one is given; the results written as JSON (read back by ``mt-repro report``) and
CSV."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from mt_repro.apps import evaluate
from mt_repro.core.errors import BadInput
from mt_repro.core.fileio import write_text_atomic
from mt_repro.data.normalisation import described, normalised
from mt_repro.engine.robustness import NETWORKS, Robustness, chosen_corruptions, measure
from mt_repro.engine.trainer import CHECKPOINT_DIR, resolve_device
from mt_repro.legacy.reading import Warn, stderr_warning


def evaluate_corruptions(checkpoint: str | Path, data_dir: str | Path | None = None, *, dataset: str | None = None,
                         published: str | Path | None = None, baseline: str | Path | None = None,
                         baseline_network: str | None = None, names: list[str] | None = None, seed: int = 0,
                         frost_dir: str | os.PathLike | None = None, arch: str | None = None,
                         batch_size: int = 256, device: str = "auto", trust: bool = False,
                         warn: Warn = stderr_warning, progress: Callable[[str], None] | None = None) -> Robustness:
    """Student and teacher of ``checkpoint`` on the test part of ``dataset`` (default: the run's,
    as ``mt-repro evaluate``), clean and under each corruption of ``names`` (default: all there
    are: those of the ``published`` directory, else all that can be generated) at the 5
    severities; with ``baseline`` (another checkpoint, same images) also CE, mCE and relative
    mCE, each network against the baseline's of the same name or its ``baseline_network``.
    ``progress`` is told each corruption as it starts."""
    spec, data_dir = evaluate.dataset_of(checkpoint, dataset, data_dir)
    evaluate.check_batches(batch_size, 0)
    if baseline_network not in (None, *NETWORKS):
        raise BadInput(f"--baseline-network must be one of {', '.join(NETWORKS)}, got {baseline_network!r}")
    if baseline_network is not None and baseline is None:
        raise BadInput("--baseline-network names a network of --baseline: give --baseline CKPT too")
    names = chosen_corruptions(names, None if published is None else Path(published), frost_dir)
    run_device = resolve_device(device)
    models = {"": evaluate.load_networks(checkpoint, spec, arch, run_device, trust, warn)}
    if baseline is not None:
        models["baseline"] = evaluate.load_networks(baseline, spec, None, run_device, trust, warn)
    trained = {loaded.normalisation for loaded in models.values()}
    if len(trained) > 1:
        raise BadInput(f"{checkpoint} was trained on images normalised with {described(models[''].normalisation)}, "
                       f"the baseline {baseline} with {described(models['baseline'].normalisation)}: one set of "
                       "corrupted images cannot feed both as each was trained")
    spec = normalised(spec, models[""].normalisation)   # the images as the networks were trained on them
    networks = {f"{key}/{name}": model for key, loaded in models.items() for name, model in loaded.networks.items()}
    with evaluate.cannot_take_images(models[""].arch, spec.name):
        measured = measure(networks, spec, data_dir, names, published=published, seed=seed, frost_dir=frost_dir,
                           batch_size=batch_size, device=run_device, progress=progress)

    def result(key: str, path) -> Robustness:
        return Robustness(str(path), models[key].arch, spec.name, measured.images, measured.source,
                          {n: replace(measured.errors[f"{key}/{n}"], network=n) for n in NETWORKS})

    robustness = result("", checkpoint)
    if baseline is not None:
        robustness.baseline, robustness.baseline_network = result("baseline", baseline), baseline_network
    return robustness


def write_results(result: Robustness, out_dir: Path, stem: str) -> list[Path]:
    """``STEM.json`` (the record ``mt-repro report`` reads) and ``STEM.csv`` (every error) in
    ``out_dir``."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.csv"]
        write_text_atomic(paths[0], json.dumps(result.to_json(), indent=1) + "\n")
        write_text_atomic(paths[1], result.csv_text())
    except OSError as exc:
        raise BadInput(f"cannot write the corruption results to {out_dir}: {exc.strerror or exc}") from None
    return paths


def default_out_dir(checkpoint: str | Path) -> Path:
    """Where the results go: ``RUN/corruptions/`` for a checkpoint in ``RUN/checkpoints/``,
    else a ``corruptions/`` folder beside the checkpoint."""
    checkpoint = Path(checkpoint)
    parent = checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
    return parent / "corruptions"
