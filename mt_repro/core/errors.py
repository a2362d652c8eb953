"""Errors a user can act on, each with the exit code the CLI returns for it.

Exit codes: 0 ok, 1 a run that failed (diverged, crashed), 2 bad input (files, flags, configs).
"""


class MtReproError(Exception):
    """Base class: the message is printed as one line, ``mt-repro: error: <message>``."""

    exit_code = 1


class BadInput(MtReproError):
    """Missing, corrupt or inconsistent input given by the user: exit code 2."""

    exit_code = 2


class RunFailed(MtReproError):
    """A run that started correctly and then failed (e.g. the loss diverged): exit code 1."""

    exit_code = 1


class NonFiniteLoss(RunFailed):
    """A training step whose loss is not finite, or above the original's explosion guard."""

    def __init__(self, loss: float, values: dict[str, float]):
        parts = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k.endswith("loss") and v is not None)
        super().__init__(f"loss is {loss}" + (f" ({parts})" if parts else ""))
        self.loss = loss
