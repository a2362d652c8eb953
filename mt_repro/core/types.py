"""Types and vocabularies shared between the layers: what the data pipeline hands a method, what
a method hands back to the engine."""
from __future__ import annotations

from dataclasses import dataclass

import torch

NO_LABEL = -1  # the target of an unlabeled sample (the original's NO_LABEL)

# Per-sample inputs a method may ask the training data for, besides the two views; they reach
# ``Method.losses`` in ``Batch.extras`` under these names.
SAMPLE_EXTRAS = {
    "indices": "each sample's position in the training set (per-sample memories)",
    "clean_input": "the image without augmentation or noise (the evaluation input)",
    "strong_input": "the image through the strong augmentation (the weak translation and flip, then "
                    "RandAugment + Cutout: mt_repro.data.randaugment), then the pipeline's "
                    "normalisation: FixMatch's and UDA's strong view",
    "moco_v1_views": "two views of the image through MoCo v1's augmentation (mt_repro.data.contrastive), "
                     "then the pipeline's normalisation: N x 2 x C x H x W, the query's first",
    "moco_v2_views": "the same with MoCo v2's augmentation (colour jitter with probability 0.8, blur)",
}


@dataclass
class Batch:
    """One training minibatch: the student's and the teacher's view of the same images (the
    same tensor where the noise lives inside the model), targets (``NO_LABEL`` for unlabeled
    samples) and the sample extras the method asked for."""

    student_input: torch.Tensor
    teacher_input: torch.Tensor
    targets: torch.Tensor
    extras: dict[str, torch.Tensor]


@dataclass(frozen=True)
class StepContext:
    """Where a training step stands, as the run's schedule sees it: the integer epoch,
    the SGD steps already taken, and the consistency weight the schedule gives this step."""

    epoch: int
    global_step: int
    consistency_weight: float


@dataclass
class StepResult:
    """What a method's step returns: the loss to minimise and the values to log."""

    loss: torch.Tensor
    values: dict[str, float]
    labeled_minibatch_size: int
