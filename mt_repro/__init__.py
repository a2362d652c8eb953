"""Mean Teacher (Tarvainen & Valpola, NIPS 2017) reproduced on current PyTorch."""

__version__ = "0.1.0"
