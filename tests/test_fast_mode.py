"""Fast mode computes what faithful mode computes: batched augmentation equals the per-image
transforms given the same parameters, and training steps fed the same minibatches give the
same losses (float32 on the CPU; bf16 tolerance where a GPU with bf16 runs the test, and on a
CPU with native bf16 arithmetic, checked in a process with the machine's own kernels)."""
from __future__ import annotations

import collections
import copy
import json
import logging
import math
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision import transforms

from conftest import assert_one_line_error, digits_demo_config
from mt_repro.config import TrainConfig
from mt_repro.config.methods import method_settings
from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.core.rng import capture_rng_state, restore_rng_state, seed_everything
from mt_repro.core.metrics import hundred_less
from mt_repro.core.types import OnHost, StepResult, read_logged
from mt_repro.data import cifar10, digits, synthetic
from mt_repro.data.batch_augment import epoch_generator, translate_flip
from mt_repro.data.cifar10 import CIFAR10_STATS
from mt_repro.data.device_loader import DeviceBatches
from mt_repro.data.labels import write_label_file
from mt_repro.data.loaders import training_data
from mt_repro.data.transforms import translate_with_reflect
from mt_repro.engine import fast_mode, runs
from mt_repro.engine.trainer import Trainer
from mt_repro.methods.registry import method_names

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def faithful_cifar_view(pixels: np.ndarray, dx: int, dy: int, flip: bool) -> torch.Tensor:
    """Faithful mode's CIFAR-10 view with given parameters: translate, flip (PIL), ToTensor, Normalize."""
    image = Image.fromarray(translate_with_reflect(pixels, dx, dy))
    if flip:
        image = transforms.functional.hflip(image)
    return transforms.Normalize(**CIFAR10_STATS)(transforms.ToTensor()(image))


@pytest.mark.parametrize("device", DEVICES)
def test_batched_cifar_augmentation_equals_the_per_image_transforms(device):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    augment = cifar10.batch_augment()
    params = augment.draw(len(images), 3, 32, 32, epoch_generator(3, 1))
    # Every offset in -4..4 and both flips occur.
    assert set(params.dx.tolist()) == set(range(-4, 5)) and params.flip.any() and not params.flip.all()
    batched = augment(torch.from_numpy(images).to(device), params).cpu()
    expected = torch.stack([faithful_cifar_view(p, int(dx), int(dy), bool(f))
                            for p, dx, dy, f in zip(images, params.dx, params.dy, params.flip)])
    assert batched.dtype == torch.float32 and batched.shape == (40, 3, 32, 32)
    if device == "cpu":
        assert torch.equal(batched, expected)
    else:  # CUDA divides by a scalar as a multiplication by its reciprocal: within an ulp
        torch.testing.assert_close(batched, expected, rtol=2e-7, atol=1e-6)


def test_translation_extremes_and_oversized_shifts():
    images = torch.arange(2 * 5 * 5, dtype=torch.uint8).reshape(2, 5, 5, 1)
    dx, dy = torch.tensor([4, -4]), torch.tensor([-4, 4])
    out = translate_flip(images, dx, dy)
    for i in range(2):
        assert np.array_equal(out[i].numpy(), translate_with_reflect(images[i].numpy(), int(dx[i]), int(dy[i])))
    with pytest.raises(ValueError, match="too large"):
        translate_flip(images, torch.tensor([5, 0]), torch.tensor([0, 0]))


def test_batched_digits_augmentation_equals_digits_augment():
    images, _ = digits.load_all()
    sample = images[:30, :, :, None]
    augment = digits.batch_augment()
    params = augment.draw(len(sample), 1, 8, 8, epoch_generator(0, 0))
    assert params.flip is None and params.noise.shape == (30, 1, 8, 8)
    source = torch.from_numpy(sample.copy())
    batched = augment(source, params)
    assert torch.equal(source, torch.from_numpy(sample))  # the images in memory stay as they were
    expected = torch.stack([
        digits.to_tensor(translate_with_reflect(img, int(dx), int(dy))) + digits.NOISE_STD * noise
        for img, dx, dy, noise in zip(sample, params.dx, params.dy, params.noise)])
    assert torch.equal(batched, expected)
    assert torch.equal(augment.normalise(torch.from_numpy(sample)),
                       torch.stack([digits.to_tensor(img) for img in sample]))


def digits_config(tmp_path, **changes) -> TrainConfig:
    label_file = tmp_path / "labels.txt"
    write_label_file(label_file, digits.label_file_entries(100, 0))
    values = dict(dataset="digits", train_subdir="train", eval_subdir="test", arch="digits_convnet",
                  labels=str(label_file), workers=0, batch_size=64, labeled_batch_size=16, epochs=2,
                  lr=0.05, nesterov=True, ema_decay=0.99, consistency=30.0, consistency_rampup=1,
                  logit_distance_cost=0.01, seed=0, device="cpu", evaluation_epochs=1, print_freq=1)
    values.update(changes)
    return TrainConfig(**values)


def test_device_batches_keep_the_faithful_minibatches_and_are_deterministic(tmp_path):
    config = digits_config(tmp_path, mode="fast")
    seed_everything(0)
    fast = training_data(config)
    seed_everything(0)
    faithful = training_data(config.replace(mode="faithful"))
    assert isinstance(fast.train_loader, DeviceBatches)
    assert len(fast.train_loader) == len(faithful.train_loader) == 1197 // 48

    def epoch(loader, seed):
        seed_everything(seed)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(0)
        return list(loader)

    fast_batches, faithful_batches = epoch(fast.train_loader, 5), epoch(faithful.train_loader, 5)
    # The same sampler: the same unlabeled order for the epoch and the same first pass over the
    # 100 labeled images (6 minibatches of 16); later labeled passes are drawn from numpy's
    # generator, which faithful mode's augmentation also draws from, so they differ from there.
    assert type(fast.train_loader.batch_sampler) is type(faithful.train_loader.batch_sampler)
    for i, ((fast_views, fast_targets), (_, faithful_targets)) in enumerate(zip(fast_batches, faithful_batches)):
        if i < 100 // 16:
            assert torch.equal(fast_targets, faithful_targets)
        assert fast_targets[:48].eq(-1).all() and fast_targets[48:].ge(0).all()
        assert fast_views[0].shape == (64, 1, 8, 8) and not torch.equal(*fast_views)
    again = epoch(fast.train_loader, 5)
    assert all(torch.equal(a[0][0], b[0][0]) for a, b in zip(fast_batches, again))
    fast.train_loader.set_epoch(1)
    seed_everything(5)
    assert not torch.equal(next(iter(fast.train_loader))[0][0], fast_batches[0][0][0])


def test_device_batches_supply_sample_extras(tmp_path):
    config = digits_config(tmp_path, mode="fast", method="temporal_ensembling")
    data = training_data(config, extras=("indices",))
    data.train_loader.set_epoch(0)
    (views, targets, extras) = next(iter(data.train_loader))
    assert extras["indices"].shape == (64,)
    images, _ = digits.load_all()
    train = digits.test_and_training_indices()[1]
    assert torch.equal(data.train_loader.images[extras["indices"]][..., 0],
                       torch.from_numpy(images[train][extras["indices"].numpy()]))


def networks_of(method) -> list[torch.nn.Module]:
    """The method's networks: student, teacher and those it keeps beside them (peers, heads,
    weight averages)."""
    return [value for value in vars(method).values() if isinstance(value, torch.nn.Module)]


def zero_dropout(trainer: Trainer) -> None:
    """Dropout masks follow the memory layout (channels-last in fast mode): with the same
    generator state, faithful and fast would still drop different units."""
    for model in networks_of(trainer.method):
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0


@pytest.mark.parametrize("method", ["mean_teacher", "fixmatch"])
@pytest.mark.parametrize("device", DEVICES)
def test_fast_steps_give_the_faithful_losses_on_the_same_minibatches(tmp_path, device, method, caplog,
                                                                   monkeypatch):
    """Both trainers start from the same weights and take the same ten minibatches (fast mode's
    own: with its on-device augmentation's parameters, or loaded per image where the method
    needs a strong view); their losses and weights must agree to float32 tolerance on the CPU,
    bf16 tolerance on a GPU with bf16 autocast. (Every method is compared one step at a time,
    from the same state, by the test after this one: over ten free-running steps several of them
    amplify float32 rounding beyond this tolerance, faithful mode's own included.)"""
    if method == "fixmatch":
        # An untrained network's predictions are near ties, whose arg-max (FixMatch's hard
        # pseudo-label) bf16 rounding flips: its per-image path is compared in float32.
        monkeypatch.setattr(fast_mode, "bf16_supported", lambda device: False)
    trainers = {}
    for mode in ("faithful", "fast"):
        seed_everything(0)
        with caplog.at_level(logging.INFO, logger="mt_repro"):
            options = "threshold=0.0" if method == "fixmatch" else None   # every pseudo-label kept: its term engaged
            trainers[mode] = Trainer(digits_config(tmp_path, mode=mode, device=device, method=method,
                                                   method_options=options), tmp_path / mode, progress=False).build()
        zero_dropout(trainers[mode])
    assert trainers["fast"].speedups.channels_last
    per_image = method == "fixmatch"   # its strong view is made image by image
    assert isinstance(trainers["fast"].data.train_loader, DeviceBatches) is not per_image
    assert any("loaded per image" in r.getMessage() for r in caplog.records) is per_image
    bf16 = trainers["fast"].speedups.autocast_dtype is torch.bfloat16
    if os.environ.get("MT_REPRO_EXPECT_BF16") == "1" and method != "fixmatch":   # (run by the bf16-CPU test below)
        assert bf16
    steps = trainers["fast"].data.steps_per_epoch
    losses = {"faithful": [], "fast": []}
    for i, batch in zip(range(10), trainers["fast"].data.epoch(0)):
        for mode, trainer in trainers.items():
            trainer.train_mode()
            result = trainer.step(batch, 0, i, steps)[1]
            losses[mode].append([result.values[k] for k in ("loss", "class_loss", "cons_loss")]
                                + [result.values.get("res_loss", 0.0)])
    tolerance = dict(rtol=3e-2, atol=3e-3) if bf16 else dict(rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(losses["fast"], losses["faithful"], **tolerance)
    assert losses["fast"][0] != losses["fast"][-1]  # it trained
    fast_state = trainers["fast"].method.teacher.state_dict()
    for name, value in trainers["faithful"].method.teacher.state_dict().items():
        torch.testing.assert_close(fast_state[name].float(), value.float(),
                                   **(dict(rtol=5e-2, atol=5e-3) if bf16 else dict(rtol=1e-4, atol=1e-5)))


def give_state(source: Trainer, target: Trainer) -> None:
    """Everything a step starts from, ``source``'s, copied into ``target``: the step count,
    weights, optimizer and the method's memories (ensembles, pseudo-labels, queues, peers)."""
    method, into = source.method, target.method
    target.state = copy.copy(source.state)
    into.student.load_state_dict(method.student.state_dict())
    into.teacher.load_state_dict(method.teacher.state_dict())
    target.optimizer.load_state_dict(copy.deepcopy(source.optimizer.state_dict()))
    into.load_state_dict(copy.deepcopy(method.state_dict()))


# Settings that engage each term within the compared steps: thresholds that some but not all of
# the predictions pass there (measured: 4-23 % of FixMatch's and 6-23 % of UDA's unlabeled images
# in the second epoch, 5-40 of Pseudo-Label's 48; none at the demo's 0.95 and 0.8), and VAT at a ξ where
# its direction is arithmetic. Its power iteration differentiates KL(p ‖ f(x + ξd)), of order ξ²:
# at its paper's ξ = 1e-6 the direction carries float32 rounding error of its own, and the same
# state's fast and faithful costs differed by up to 19 % (1e-2 at ξ = 1e-4, 1.6e-3 at 1e-3,
# 1.6e-4 at 1e-2: as 1/ξ).
SAME_STATE_OPTIONS = {"fixmatch": "threshold=0.3", "uda": "threshold=0.3", "pseudo_label": "threshold=0.15",
                      "pseudo_label_epoch": "threshold=0.15", "vat": "xi=0.1"}


@pytest.mark.parametrize("method", method_names())
def test_every_method_takes_the_faithful_step_from_the_same_state(tmp_path, method, monkeypatch):
    """Each registered method with its digits-demo settings (and SAME_STATE_OPTIONS), along
    faithful mode's trajectory: the first five steps of its first and of its second epoch, when
    memories kept across epochs (ensembles, epoch pseudo-labels, queues) are filled. Before each,
    the fast trainer is given the faithful one's state and random generators, then both take the
    step on the same minibatch. The losses must agree to float32 tolerance, and each tensor's
    update to 5 % of its size.

    One step from one state, because over a free-running trajectory these methods amplify
    float32 rounding: a 1e-6 relative change of faithful mode's own starting weights moved
    the epoch Pseudo-Label's losses by 5e-4 within six steps, as far as fast mode's
    channels-last kernels move them. The update tolerance: channels-last batch norm sums its
    gradients in another order (on this CPU 10x the error of the NCHW kernel against float64),
    and where a batch-norm parameter's gradient nearly cancels, as across the several student
    passes of FixMatch, MixMatch, the Π-model or mutual learning, its update differed by up to
    1.6 %; a missing or wrong term differs by its whole size."""
    monkeypatch.setattr(fast_mode, "bf16_supported", lambda device: False)
    trainers = {}
    # a variant of the demo's, NAME[options] (its options over those of the method's [digits] table)
    variant = f"{method}[{SAME_STATE_OPTIONS[method]}]" if method in SAME_STATE_OPTIONS else method
    for mode in ("faithful", "fast"):
        config = digits_demo_config(tmp_path, variant, mode)
        seed_everything(0)
        trainers[mode] = Trainer(config, tmp_path / mode, progress=False).build()
        zero_dropout(trainers[mode])
    faithful, fast = trainers["faithful"], trainers["fast"]
    assert fast.speedups.channels_last and not faithful.speedups.channels_last
    steps = fast.data.steps_per_epoch
    seed_everything(1)
    for epoch in (0, 1):
        for i, batch in enumerate(fast.data.epoch(epoch)):
            if i >= 5:   # the rest of the epoch: faithful mode alone
                faithful.train_mode()
                faithful.step(batch, epoch, i, steps)
                continue
            compare_one_step(method, faithful, fast, batch, epoch, i, steps)
        faithful.method.end_of_epoch(epoch + 1)


def compare_one_step(method: str, faithful: Trainer, fast: Trainer, batch, epoch: int, i: int, steps: int) -> None:
    give_state(faithful, fast)
    start = [{name: value.clone() for name, value in network.state_dict().items()}
             for network in networks_of(faithful.method)]
    generators = capture_rng_state()
    losses = {}
    for mode, trainer in (("faithful", faithful), ("fast", fast)):
        restore_rng_state(generators)
        trainer.train_mode()
        values = trainer.step(batch, epoch, i, steps)[1].values
        losses[mode] = {name: float(value) for name, value in values.items() if "loss" in name}
    where = f"{method}, epoch {epoch} step {i}"
    assert losses["fast"].keys() == losses["faithful"].keys() and "loss" in losses["fast"]
    np.testing.assert_allclose(list(losses["fast"].values()), list(losses["faithful"].values()),
                               rtol=1e-4, atol=1e-6, err_msg=f"{where}: {losses}")
    for before, network, reference in zip(start, networks_of(fast.method), networks_of(faithful.method)):
        after = network.state_dict()
        for name, value in reference.state_dict().items():
            if value.is_floating_point():
                update = value - before[name]
                difference = (after[name] - value).norm()
                assert difference <= 0.05 * update.norm() + 1e-7, \
                    f"{where}: {name} updated by {update.norm():.3g}, fast mode's differs by {difference:.3g}"


NATIVE = {**os.environ, "MT_REPRO_TEST_NATIVE_ISA": "1"}
for _pin in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES"):
    NATIVE.pop(_pin, None)   # this session's AVX2 pin (conftest.py) hides a CPU's bf16 arithmetic


def test_fast_mode_on_a_cpu_with_bf16_arithmetic_uses_it_within_the_bf16_tolerance():
    """CPUs with AVX512-BF16 or AMX train fast mode in bf16 autocast (oneDNN's native bf16):
    the loss and weight test above, run with the machine's own kernels, must then take its
    bf16 branch and pass at the same tolerance as a GPU's bf16."""
    probe = subprocess.run([sys.executable, "-c", "import torch; from mt_repro.engine import fast_mode; "
                            "print(fast_mode.bf16_supported(torch.device('cpu')))"],
                           env=NATIVE, capture_output=True, text=True, check=True)
    if probe.stdout.strip() != "True":
        pytest.skip("this CPU has no native bf16 arithmetic: fast mode computes in float32 on it")
    test = "tests/test_fast_mode.py::test_fast_steps_give_the_faithful_losses_on_the_same_minibatches"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", test,
                           "-k", "cpu"], env={**NATIVE, "MT_REPRO_EXPECT_BF16": "1"}, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-3000:]   # both methods


def test_ema_update_with_foreach_matches_the_per_tensor_loop():
    from mt_repro.engine.ema import update_after_step as update_teacher

    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(7, 5), torch.nn.Linear(7, 5)
    expected = [t.detach().clone().mul_(0.9).add_(s.detach(), alpha=1 - 0.9)
                for t, s in zip(teacher.parameters(), student.parameters())]
    with torch.no_grad():
        update_teacher(student, teacher, 0.9, 100)
    assert all(torch.equal(t, e) for t, e in zip(teacher.parameters(), expected))


def test_fast_mode_falls_back_to_float32_without_bf16_and_says_so(monkeypatch):
    monkeypatch.setattr(fast_mode, "bf16_supported", lambda device: False)   # (whatever this CPU has)
    notes = []
    speedups = fast_mode.speedups_for("fast", False, torch.device("cpu"), note=notes.append)
    assert speedups.autocast_dtype is None and speedups.channels_last and speedups.precision == "float32"
    assert len(notes) == 1 and "no bf16 support" in notes[0] and "float32" in notes[0]
    assert fast_mode.speedups_for("faithful", False, torch.device("cpu"), note=notes.append) is fast_mode.FAITHFUL
    assert len(notes) == 1


def test_a_fast_run_trains_resumes_and_reports_the_fallback(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(fast_mode, "bf16_supported", lambda device: False)
    config = digits_config(tmp_path, mode="fast", epochs=2, checkpoint_epochs=1)
    with caplog.at_level(logging.INFO, logger="mt_repro"):
        summary = runs.train(config, tmp_path / "run", progress=False)
    assert any("no bf16 support" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert summary["global_step"] == 2 * 24 and summary["teacher_error1"] < 90
    resumed = runs.resume(tmp_path / "run", overrides={"epochs": 3}, progress=False)
    assert resumed["global_step"] == 3 * 24


@pytest.mark.parametrize("changes, message", [
    ({"mode": "turbo"}, "mode 'turbo' is not one of faithful, fast"),
    ({"compile": True}, "compile is a fast-mode setting"),
    ({"mode": "fast", "compile": True, "compile_mode": "turbo"}, "compile_mode 'turbo' is not one of default"),
    ({"mode": "fast", "compile_mode": "max-autotune"}, "compile_mode 'max-autotune' is a setting of compile"),
])
def test_bad_mode_settings(tmp_path, changes, message):
    with pytest.raises(BadInput, match=message):
        digits_config(tmp_path, **changes).validate()


def test_cli_mode_option(tmp_path, cli):
    code, _, err = cli("digits", "--mode", "turbo")
    assert code == 2 and "turbo" in err
    synthetic.write_cifar_tarball(tmp_path / "c.tar.gz", n_train=200, n_test=20)
    labels = synthetic.balanced_labels(tmp_path / "c.tar.gz", 4)
    (tmp_path / "l.txt").write_text("".join(f"{k} {v}\n" for k, v in labels.items()))
    code, out, err = cli(
        "cifar10", "--labels", "1000", "--data", tmp_path / "c.tar.gz", "--label-file", tmp_path / "l.txt",
        "--gpus", "1", "--epochs", "1", "--mode", "fast", "--set", "arch=cifar_shakeshake_mini",
        "--set", "batch_size=32", "--set", "labeled_batch_size=8", "--set", "lr_rampdown_epochs=2",
        "--set", "workers=0", "--device", "cpu", "--out", tmp_path / "run", "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["mode"] == "fast"
    assert "mt-repro: warning: cpu has no bf16 support" in err
    assert_one_line_error(cli("cifar10", "--labels", "1000", "--data", tmp_path / "c.tar.gz",
                              "--label-file", tmp_path / "l.txt", "--compile"), "compile", "fast")


# --- what makes the host wait for the device --------------------------------------------------
class DeviceReads(TorchDispatchMode):
    """Counts, by where in mt_repro they happen, the operations that make the host wait for the
    device on a GPU: reading a tensor's value (``.item()``, ``float()``, ``bool()``, ``int()``)
    and those whose output size depends on values (boolean-mask indexing, ``nonzero``). On the
    CPU they cost nothing, but they are the same calls: counting them here tells what a GPU
    step would wait for."""

    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
             torch.ops.aten.masked_select.default}

    def __init__(self):
        super().__init__()
        self.where: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.READS or (func is torch.ops.aten.index.Tensor and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)):
            stack = traceback.extract_stack()
            ours = [i for i, f in enumerate(stack) if f"{os.sep}mt_repro{os.sep}" in f.filename]
            # A DataLoader's own work (its sampler's seed: ``.item()`` of a CPU generator draw)
            # is the host's, on a GPU machine too: no wait for the device.
            if not (ours and any(LOADER_FILES in f.filename for f in stack[ours[-1] + 1:])):
                frame = stack[ours[-1]] if ours else None
                self.where[f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"] += 1
        return func(*args, **(kwargs or {}))


LOADER_FILES = os.path.join("torch", "utils", "data", "")


def one_epoch_of(tmp_path, name: str, **changes):
    """A fast-mode digits run of method ``name`` for one epoch (supervised-only on the 100
    labeled images, the others on all with 32 labeled in each minibatch of 128)."""
    supervised = name == "supervised"
    # a method with one head says so in its digits settings (mean_teacher_usb)
    changes.setdefault("logit_distance_cost", method_settings(name).table("digits").get("logit_distance_cost", 0.01))
    return digits_config(tmp_path, mode="fast", method=name, epochs=1, print_freq=5,
                         batch_size=16 if supervised else 128,
                         labeled_batch_size=None if supervised else 32, exclude_unlabeled=supervised, **changes)


@pytest.mark.parametrize("name", method_names())
def test_fast_mode_reads_the_device_only_at_log_rows(tmp_path, name):
    config = one_epoch_of(tmp_path, name)
    seed_everything(0)
    trainer = Trainer(config, tmp_path / "run", progress=False).build()
    assert trainer.deferred_readout
    read_sizes = []
    read_steps = trainer.read_steps

    def counted(pending, bar=None):
        read_sizes.append(len(pending))
        read_steps(pending, bar)

    trainer.read_steps = counted
    reads = DeviceReads()
    with reads:
        trainer.train_one_epoch(0)
    steps = trainer.data.steps_per_epoch
    rows = [i for i in range(steps) if trainer.timeline.log_row(i, i + 1)]
    # one read per log row, the steps since the last one; the epoch's last steps at its end
    expected = [b - a for a, b in zip([-1] + rows, rows)] + [steps - 1 - rows[-1]]
    assert [n for n in read_sizes if n] == [n for n in expected if n] and sum(read_sizes) == steps
    assert not reads.where, f"{name}'s fast-mode step waits for the device at {dict(reads.where)}"
    assert trainer.state.global_step == steps and len(trainer.training_log.rows()) == len(rows)


@pytest.mark.parametrize("mode", ["faithful", "fast"])
def test_a_diverged_loss_fails_the_run_naming_its_step_in_both_modes(tmp_path, mode):
    """Faithful mode checks each step's loss before the step is taken, as the original; fast
    mode at the next log row, naming the same step and how many were taken after it."""
    trainer = Trainer(digits_config(tmp_path, mode=mode, epochs=1, print_freq=5), tmp_path / "run",
                      progress=False).build()
    losses = trainer.method.losses

    def diverging(batch, step):
        result = losses(batch, step)
        if step.global_step == 6:   # the 7th step's loss
            result.loss = result.loss * math.inf
            result.logged["loss"] = result.loss.detach()
        return result

    trainer.method.losses = diverging
    with pytest.raises(RunFailed, match=r"training diverged at step 7 \(epoch 0\): loss is inf") as failed:
        trainer.train_one_epoch(0)
    if mode == "fast":   # read with the log row of step 11 (rows after steps 1, 6, 11, …)
        assert trainer.state.global_step == 11 and "4 more step(s) were taken" in str(failed.value)
    else:
        assert trainer.state.global_step == 6 and "more step" not in str(failed.value)


def test_logged_values_read_at_once_equal_those_read_one_by_one():
    torch.manual_seed(0)
    results = []
    for _ in range(3):
        logged = {"a": torch.randn(()), "b": torch.randn((), dtype=torch.bfloat16), "c": 0.25,
                  "d": torch.randint(0, 100, ()), "e": torch.randn((), dtype=torch.float64),
                  "f": OnHost(torch.randn(()) * 100, hundred_less)}
        results.append(StepResult(torch.randn(()), logged, torch.tensor(16)))
    expected = [{**{k: (100.0 - v.tensor.item()) if isinstance(v, OnHost) else float(v) for k, v in r.logged.items()},
                 "labeled_minibatch_size": 16.0} for r in results]
    rows = read_logged(results)
    assert rows == expected and all(type(v) is float for row in rows for v in row.values())
    assert [r.values for r in results] == expected   # kept: not read again


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: CUDA's own check of what makes the host wait")
@pytest.mark.parametrize("name", method_names())
def test_on_a_gpu_fast_steps_between_log_rows_never_make_the_host_wait(tmp_path, name):
    """CUDA's sync debug mode raises on anything that waits for the device (a value read, a
    copy from pageable memory, a synchronisation): the fast-mode step of every method, from the
    loader's minibatches to the teacher's update, makes none (per-sample memories included);
    reading their logged values afterwards gives what each step computed."""
    config = one_epoch_of(tmp_path, name, device="cuda")
    trainer = Trainer(config, tmp_path / "run", progress=False).build()
    steps = trainer.data.steps_per_epoch
    batches = trainer.data.epoch(0)
    trainer.train_mode()
    trainer.step(next(batches), 0, 0, steps)   # first use: cuDNN's and the allocators' set-up
    torch.cuda.synchronize()
    results = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, batch in zip(range(1, 6), batches):
            results.append(trainer.step(batch, 0, i, steps)[1])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    rows = read_logged(results)
    labeled = config.labeled_batch_size or config.batch_size
    assert len(rows) == 5 and all(math.isfinite(row["loss"]) and row["labeled_minibatch_size"] == labeled for row in rows)
