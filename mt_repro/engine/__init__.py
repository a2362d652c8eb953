"""The one training engine: ``trainer`` (the loop), ``runs`` (start and resume run directories),
``recipes`` (a run's pieces by name: ``optimizers``, ``schedules``, ``timelines``, ``ema``),
``evaluation``, ``checkpoint``, ``meters``, ``fast_mode`` and ``distributed``."""
