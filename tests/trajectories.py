"""Golden trajectories of the training engine: what a set of short runs computed, step by step.

Each spec below is a short run (a few steps of the paper's ConvNet recipe on small synthetic
SVHN and CIFAR-10 files, or two epochs of a registered method on the digits). ``trajectory``
runs one and returns its per-step logged values, its evaluations, and statistics of its final
student and teacher weights. ``golden/engine_trajectories.json`` holds what the engine computed
for every spec when the file was recorded (``python tests/trajectories.py``);
``tests/test_trajectories.py`` requires today's engine to compute the same.
"""
from __future__ import annotations

import json
import math
import platform
import sys
import tempfile
from pathlib import Path

import torch

GOLDEN = Path(__file__).parent / "golden" / "engine_trajectories.json"
TIMING = ("batch_time", "data_time")

# The ConvNet recipe, shrunk: width 1/16, minibatches of 20, five steps.
CONVNET_TINY = {"width": 0.0625, "batch_size": 20, "training_length": 5, "evaluation_span": 2,
                "print_span": 1, "rampup_length": 2, "rampdown_length": 2, "device": "cpu"}
# name: (experiment, dataset, method, n_labeled, overrides)
CONVNET_SPECS = {
    "svhn_mean_teacher_mixed": ("svhn_final_eval", "svhn", "mean_teacher", 100, {}),
    "svhn_mean_teacher_vary_two_heads_mixture_kl": (
        "svhn_final_eval", "svhn", "mean_teacher", 100,
        {"n_labeled_per_batch": "vary", "num_logits": 2, "logit_distance_cost": 0.01,
         "consistency_trust": 0.5, "flip_horizontally": True}),
    "svhn_mean_teacher_vary_kl": ("svhn_final_eval", "svhn", "mean_teacher", 100,
                                  {"n_labeled_per_batch": "vary", "consistency_trust": 1.0}),
    "svhn_mean_teacher_labeled_only": ("svhn_final_eval", "svhn", "mean_teacher", "all",
                                       {"n_labeled_per_batch": 20}),
    "svhn_mean_teacher_extra": ("svhn_final_eval", "svhn", "mean_teacher", 100, {"n_extra_unlabeled": 40}),
    "svhn_pi_mixed": ("svhn_final_eval", "svhn", "pi_model", 100, {}),
    "svhn_pi_vary": ("svhn_final_eval", "svhn", "pi_model", 100, {"n_labeled_per_batch": "vary"}),
    "svhn_supervised": ("svhn_supervised_final_eval", "svhn", "supervised", 100, {"n_labeled_per_batch": 20}),
    "cifar10_mean_teacher_vary": ("cifar10_final_eval", "cifar10", "mean_teacher", 100, {}),
    "cifar10_pi_vary": ("cifar10_final_eval", "cifar10", "pi_model", 100, {}),
    "cifar10_supervised": ("cifar10_supervised_final_eval", "cifar10", "supervised", 100,
                           {"n_labeled_per_batch": 20}),
}
# Two epochs of each method on the digits (data seed 0, 100 labels), as `mt-repro digits` runs it.
DIGITS_METHODS = ("supervised", "mean_teacher", "entropy_minimization", "ict", "mixmatch", "mutual_learning",
                  "pi_model", "pseudo_label", "pseudo_label_epoch", "self_training", "temporal_ensembling", "vat")
DIGITS_SPECS = {f"digits_{m}": (m, "two_stream", "faithful") for m in DIGITS_METHODS}
DIGITS_SPECS["digits_mean_teacher_uniform"] = ("mean_teacher", "uniform", "faithful")
DIGITS_SPECS["digits_mean_teacher_fast"] = ("mean_teacher", "two_stream", "fast")
SPECS = [*CONVNET_SPECS, *DIGITS_SPECS]


def fingerprint() -> dict:
    """What decides the rounding of a run: the CPU's vector unit and the thread count."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_num_threads": torch.get_num_threads(), "torch": torch.__version__}


def _data(root: Path) -> dict[str, Path]:
    from mt_repro.data import synthetic

    svhn = root / "svhn"
    if not svhn.exists():
        synthetic.write_svhn_mat(svhn, n_train=200, n_test=40, n_extra=60, seed=1)
    tarball = root / "cifar-10-python.tar.gz"
    if not tarball.exists():
        synthetic.write_cifar_tarball(tarball, n_train=200, n_test=40)
    return {"svhn": svhn, "cifar10": tarball}


def _rows(path: Path) -> list[dict]:
    from mt_repro.logs.runlog import read_rows

    return [{k: v for k, v in row.items() if not k.startswith(TIMING) and not k.endswith(("/avg", "/sum"))}
            for row in read_rows(path)]


def _evaluations(path: Path) -> list[dict]:
    from mt_repro.logs.runlog import read_rows

    keep = ("step", "epoch", "error1/avg", "class_loss/avg", "class_cost/avg", "top1/avg", "top5/avg")
    return [{k: v for k, v in row.items() if k in keep} for row in read_rows(path)]


def weight_statistics(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per tensor: the sum and the sum of squares, in float64."""
    return {name: [tensor.double().sum().item(), tensor.double().square().sum().item()]
                  for name, tensor in state.items() if tensor.is_floating_point()}


def trajectory(name: str, workdir: Path) -> dict:
    """Run spec ``name`` in ``workdir``; its logged steps, evaluations and final weights."""
    run_dir = workdir / name
    if name in CONVNET_SPECS:
        return _convnet_trajectory(name, workdir, run_dir)
    return _digits_trajectory(name, workdir, run_dir)


def _convnet_trajectory(name: str, workdir: Path, run_dir: Path) -> dict:
    import os

    from mt_repro.config.compose import convnet_run
    from mt_repro.engine import runs

    experiment, dataset, method, n_labeled, overrides = CONVNET_SPECS[name]
    os.environ.setdefault("MT_REPRO_CACHE_DIR", str(workdir / "cache"))
    config = convnet_run(experiment, n_labeled=n_labeled, method=method,
                         run={"data_dir": str(_data(workdir)[dataset])}, overrides={**CONVNET_TINY, **overrides})
    runs.train(config, run_dir, progress=False)
    return _results(run_dir)


def _digits_trajectory(name: str, workdir: Path, run_dir: Path) -> dict:
    from mt_repro.apps.digits_demo import demo_configs
    from mt_repro.config.compose import load_demo_config
    from mt_repro.data import digits
    from mt_repro.data.labels import write_label_file
    from mt_repro.engine import runs

    method, sampling, mode = DIGITS_SPECS[name]
    label_file = workdir / "digits_100_0.txt"
    write_label_file(label_file, digits.label_file_entries(100, 0))
    config = demo_configs(load_demo_config(), method, 100, label_file, 0, 2, run_dir, sampling, mode)
    config = config.replace(print_freq=1).validate()
    runs.train(config, progress=False)
    return _results(Path(config.out_dir))


def _results(out: Path) -> dict:
    from mt_repro.engine.checkpoint import load_checkpoint, without_prefix

    state = load_checkpoint(out / "checkpoints" / "last.ckpt")
    return {"train": _rows(out / "training.jsonl"),
            "validation": _evaluations(out / "validation.jsonl"),
            "ema_validation": _evaluations(out / "ema_validation.jsonl"),
            "student": weight_statistics(without_prefix(state["state_dict"])),
            "teacher": weight_statistics(without_prefix(state["ema_state_dict"]))}


def record() -> None:
    """Run every spec and write ``GOLDEN``."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in SPECS:
            print(name, file=sys.stderr)
            runs[name] = trajectory(name, Path(tmp))
    GOLDEN.write_text(json.dumps({
        "description": "Per-step logged values, evaluations and final weight statistics (sum, sum of "
                       "squares per tensor) of short seeded CPU runs of the training engine; "
                       "see tests/trajectories.py for the runs.",
        **fingerprint(), "machine": platform.machine(), "runs": runs}, allow_nan=True) + "\n")


def close(ours: float, theirs: float, rtol: float, scale: float = 0.0) -> bool:
    return abs(ours - theirs) <= rtol * max(abs(theirs), scale) + 1e-12 or (math.isnan(ours) and math.isnan(theirs))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    record()
