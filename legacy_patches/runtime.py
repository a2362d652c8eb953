"""What code patched by ``mt-repro patch-legacy`` imports at run time.

* ``legacy_to_msgpack(df, path, compress=None, append=False)``: replaces
  ``DataFrame.to_msgpack`` (removed in pandas 1.0). Writes the same pandas <= 0.25 msgpack
  format through ``mt_repro.logs.pandas_msgpack`` (no second encoder here), and a ``.csv`` of
  the same table beside it.
* ``legacy_read_msgpack(path)``: replaces ``pandas.read_msgpack``.
* ``LEGACY_DEVICE``: the device ``.cuda()`` was rewritten to with ``--cpu``: ``cuda`` when a GPU
  is visible, else ``cpu``; the environment variable ``MT_REPRO_LEGACY_DEVICE`` overrides it.
* ``legacy_device_count()``: ``torch.cuda.device_count()``, but at least 1.

torch is imported only when ``LEGACY_DEVICE`` or ``legacy_device_count`` is used.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["LEGACY_DEVICE", "legacy_device_count", "legacy_read_msgpack", "legacy_to_msgpack"]

DEVICE_ENV = "MT_REPRO_LEGACY_DEVICE"


def _codec():
    try:
        from mt_repro.logs import pandas_msgpack
    except ImportError as exc:  # pragma: no cover - only with a broken install
        raise RuntimeError("legacy_patches.runtime needs mt_repro.logs.pandas_msgpack (install "
                           f"mt-repro completely): {exc}") from None
    return pandas_msgpack


def csv_path(path: str | os.PathLike) -> Path:
    """``training.msgpack`` → ``training.csv``; any other name gets ``.csv`` appended."""
    path = Path(path)
    return path.with_suffix(".csv") if path.suffix == ".msgpack" else path.with_name(path.name + ".csv")


def legacy_to_msgpack(frame, path_or_buf=None, compress=None, append=False, **kwargs):
    """``frame.to_msgpack(path, compress=..., append=...)`` as pandas <= 0.25 did it, for a
    DataFrame written to a path; also writes ``csv_path(path)`` (the whole table, appended
    parts included). With no path it returns the bytes, as pandas did (DataFrame or Series).
    The keyword arguments pandas passed to its encoder (``encoding``, ``use_bin_type``...) are
    accepted and ignored."""
    import pandas as pd

    codec = _codec()
    if path_or_buf is None:
        return codec.encode_legacy(frame, compress=compress)
    if not isinstance(path_or_buf, (str, os.PathLike)):
        raise TypeError("legacy_to_msgpack writes to a file path or returns bytes (path None); "
                        f"got {type(path_or_buf).__name__}")
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"legacy_to_msgpack writes DataFrames to files; got {type(frame).__name__} "
                        "(convert it with .to_frame())")
    codec.write_legacy_log(frame, path_or_buf, compress=compress, append=append)
    table = codec.read_legacy_log(path_or_buf) if append else frame
    _write_csv(table, csv_path(path_or_buf))


def legacy_read_msgpack(path_or_buf, **kwargs):
    """``pandas.read_msgpack(path)`` for files written by pandas <= 0.25 or by
    :func:`legacy_to_msgpack`."""
    return _codec().read_legacy_log(path_or_buf)


def _write_csv(frame, path: Path) -> None:
    from mt_repro.core.fileio import atomic_write  # a reader never sees half a table

    with atomic_write(path, "w", newline="") as handle:
        frame.to_csv(handle)


def legacy_device_count() -> int:
    """The GPU count the original scaled batch sizes and learning rates by, but at least 1."""
    import torch

    return max(1, torch.cuda.device_count())


def _device():
    import torch

    forced = os.environ.get(DEVICE_ENV)
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def __getattr__(name: str):
    if name == "LEGACY_DEVICE":
        value = _device()
        globals()["LEGACY_DEVICE"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
