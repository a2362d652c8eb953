"""Typed settings, validated once where they enter (a file, ``--set``, a run's ``config.json``).

* ``train``: ``TrainConfig``, the PyTorch half's vocabulary (the original ``pytorch/main.py``
  flags): the ResNet runs and the digits demo;
* ``convnet``: ``ConvNetConfig`` and the original TensorFlow runners as data (``Experiment``);
* ``paper``: the original PyTorch runners as data (``PaperConfig``);
* ``methods``: the methods' settings files; ``recipes``: the named pieces of each half's
  training procedure; ``compose``: the one place a run's settings are put together;
  ``saved``: settings as a run directory keeps them; ``coerce``: typed values from text.
"""
from mt_repro.config.convnet import ConvNetConfig, Experiment, load_experiment
from mt_repro.config.paper import PaperConfig, load_paper_config
from mt_repro.config.recipes import Recipe
from mt_repro.config.train import TrainConfig

__all__ = ["ConvNetConfig", "Experiment", "PaperConfig", "Recipe", "TrainConfig", "load_experiment",
           "load_paper_config"]
