"""The networks: the original's ResNets (``resnet``), the paper's 13-layer ConvNet
(``convnet13``) and the digits demo's small ConvNet (``digits``), registered by name
(``registry``)."""
from mt_repro.models.registry import ModelInfo, create_model, get_model, list_models, parameter_count

__all__ = ["ModelInfo", "create_model", "get_model", "list_models", "parameter_count"]
