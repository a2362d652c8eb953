"""What differs between the original's two halves, as data: the named pieces of a training
procedure. The engine looks every piece up by its name (``mt_repro.engine.recipes``); a settings
class names the recipe whose hyperparameters it holds.

* ``pytorch`` (``pytorch/main.py``, Table 4): SGD; learning rate per step from the fractional
  epoch, consistency weight per integer epoch; a teacher initialised like the student and
  updated after each SGD step with the warm-up average; augmentation in the data pipeline (two
  views); runs measured in epochs; Mean Teacher's costs summed and divided by the minibatch.
* ``tensorflow`` (``tensorflow/mean_teacher/model.py``, Tables 1-3): TensorFlow 1.x's Adam with
  per-step betas; every ramp per step; a teacher copied from the data-initialised student and
  updated by a plain EMA before each step; the noise inside the model (one input, a fresh draw
  per pass); runs measured in steps; Mean Teacher's costs per sample, summed and averaged over
  the three kinds.
* ``usb`` (USB/TorchSSL's classic-CV protocol, ``semilearn``; not the paper's): SGD with Nesterov
  momentum and no weight decay on biases and normalisation weights; the learning rate a cosine
  ``lr·cos(7πk/16K)`` of the steps taken, the consistency weight a linear warm-up (a method's
  setting); a teacher copied from the student and, after each step, the plain EMA of its
  parameters with its buffers copied from the student's; augmentation in the data pipeline;
  runs measured in steps, checkpointed between epochs; the PyTorch half's costs, as each method
  forms them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    optimizer: str        # sgd | tf_adam
    schedule: str         # per_epoch | per_step: learning rate, consistency weight, EMA decay, betas
    timeline: str         # epochs | steps: length, evaluations, checkpoints, log rows
    teacher_init: str     # separate | copy
    teacher_update: str   # after_step | before_step
    noise: str            # pipeline | model
    costs: str            # pytorch | tensorflow: how Mean Teacher's, the Pi model's and supervised costs are formed

    @property
    def teacher_statistics_copied(self) -> bool:
        """Whether the teacher's update copies the student's buffers (batch norm's running
        statistics) into it after each step, as USB's ``EMAHook`` does: the teacher's own
        training-mode passes then change nothing that outlives the step."""
        return self.teacher_update == "ema_after_step"


PYTORCH = Recipe("pytorch", optimizer="sgd", schedule="per_epoch", timeline="epochs", teacher_init="separate",
                 teacher_update="after_step", noise="pipeline", costs="pytorch")
TENSORFLOW = Recipe("tensorflow", optimizer="tf_adam", schedule="per_step", timeline="steps", teacher_init="copy",
                    teacher_update="before_step", noise="model", costs="tensorflow")
USB = Recipe("usb", optimizer="sgd_no_decay_1d", schedule="cosine_steps", timeline="steps_whole_epochs",
             teacher_init="student_copy", teacher_update="ema_after_step", noise="pipeline", costs="pytorch")
RECIPES = {recipe.name: recipe for recipe in (PYTORCH, TENSORFLOW, USB)}
