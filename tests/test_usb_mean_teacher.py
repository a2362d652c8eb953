"""``mean_teacher_usb`` takes USB's Mean Teacher steps with its consistency's input corrected.

``golden/usb_mean_teacher.json`` holds the losses of five steps and the EMA model's logits
after them, recorded by running USB's own ``MeanTeacher`` (its file
``semilearn/algorithms/meanteacher/meanteacher.py`` with ``outs_x_ulb_s`` read for the
consistency's input in place of ``outs_x_ulb_w``) outside this repository, as
``benchmarks/bench_against_usb.py`` runs it: ``train_step``, then its ``ParamUpdateHook`` and
``EMAHook``. The test takes the same steps with mt-repro's trainer for the same protocol cell,
on the same minibatches and from the same weights.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mt_repro.apps.protocol import write_protocol_labels
from mt_repro.config.protocol import protocol_config
from mt_repro.core.errors import BadInput
from mt_repro.core.rng import seed_everything
from mt_repro.core.types import NO_LABEL, Batch
from mt_repro.data import synthetic
from mt_repro.engine.trainer import Trainer
from mt_repro.methods import registry
from mt_repro.models.registry import create_model

GOLDEN = json.loads((Path(__file__).parent / "golden" / "usb_mean_teacher.json").read_text())
# One thread, as the recording: there the losses were USB's to the last bit on the machine that
# recorded them. A thread count or CPU whose kernels round otherwise starts a drift that training
# amplifies (2 threads: 4e-7 at the fourth step, 7e-5 at the fifth).
RTOL = 3e-4


def recorded_minibatches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(labeled images, their labels, the unlabeled images' teacher view, their student view) of
    each step, drawn as the recording drew them."""
    setting = GOLDEN["settings"]
    labeled, unlabeled = setting["labeled_batch"], setting["labeled_batch"] * setting["uratio"]
    generator = torch.Generator().manual_seed(setting["minibatch_seed"])

    def images(count):
        return torch.randn(count, 3, 32, 32, generator=generator)

    return [(images(labeled), torch.randint(0, 10, (labeled,), generator=generator), images(unlabeled),
             images(unlabeled)) for _ in range(len(GOLDEN["steps"]))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """mt-repro's trainer for the recording's cell after the recorded steps, and its losses."""
    tmp = tmp_path_factory.mktemp("usb_mt")
    setting = GOLDEN["settings"]
    tarball = synthetic.write_cifar_tarball(tmp / "cifar-10-python.tar.gz", n_train=200, n_test=20)
    config = protocol_config("usb", "cifar10", "mean_teacher_usb", 40, 0, data_dir=str(tarball), device="cpu",
                             overrides=(f"labeled_batch_size={setting['labeled_batch']}",
                                        f"batch_size={setting['labeled_batch'] * (1 + setting['uratio'])}",
                                        f"training_length={setting['num_train_iter']}", "workers=0"))
    labels = write_protocol_labels(config, tmp / "labels.txt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield from _steps(config, labels, tmp, setting)
    finally:
        torch.set_num_threads(threads)


def _steps(config, labels, tmp, setting):
    seed_everything(0)
    trainer = Trainer(config.replace(labels=str(labels)).validate(), tmp / "run", progress=False).build()
    torch.manual_seed(setting["weights_seed"])
    weights = create_model("wrn_28_2", 10).state_dict()
    trainer.method.student.load_state_dict(weights)
    trainer.method.teacher.load_state_dict(weights)
    trainer.train_mode()
    rows = []
    for step, (x_lb, y_lb, x_ulb_w, x_ulb_s) in enumerate(recorded_minibatches()):
        targets = torch.cat([y_lb, torch.full((len(x_ulb_w),), NO_LABEL, dtype=y_lb.dtype)])
        batch = Batch(torch.cat([x_lb, x_ulb_s]), torch.cat([x_lb, x_ulb_w]), targets, {})
        _, result = trainer.step(batch, 0, step, trainer.config.training_length)
        rows.append(result.values)
    yield trainer, rows


def test_its_losses_are_usbs_step_for_step(trained):
    _, rows = trained
    for ours, theirs in zip(rows, GOLDEN["steps"], strict=True):
        assert ours["class_loss"] == pytest.approx(theirs["sup_loss"], rel=RTOL)
        assert ours["cons_loss"] == pytest.approx(theirs["unsup_loss"] * ours["cons_weight"], rel=RTOL, abs=1e-12)
        assert ours["loss"] == pytest.approx(theirs["total_loss"], rel=RTOL)


def test_the_reported_teacher_is_usbs_ema_model_after_those_steps(trained):
    """Its parameters and, copied from the student, its running statistics (the labeled
    passes' alone): the logits of the evaluated network on probe images."""
    trainer, _ = trained
    probe = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(GOLDEN["settings"]["probe_seed"]))
    teacher = trainer.method.teacher.eval()
    with torch.no_grad():
        logits = teacher(probe)[0]
    torch.testing.assert_close(logits, torch.tensor(GOLDEN["teacher_logits"]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overrides, message", [
    ("consistency_type=kl", "mean_teacher_usb's consistency is USB's squared softmax difference: set "
                            "consistency_type mse (got 'kl')"),
    ("logit_distance_cost=0.01", "mean_teacher_usb trains one head, as USB's network has"),
])
def test_settings_the_step_cannot_honour_are_refused(overrides, message):
    config = protocol_config("usb", "cifar10", "mean_teacher_usb", 40, 0, overrides=(overrides,))
    with pytest.raises(BadInput, match=re.escape(message)):
        registry.check_config(config)
