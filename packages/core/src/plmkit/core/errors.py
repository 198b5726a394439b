"""The errors plmkit raises for bad input. The `plmkit` command turns these, and only these, into one
`plmkit: error: ...` line with exit code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "MethodError",
    "ModelNotFoundError",
    "NonFiniteError",
    "PlmkitError",
    "RunError",
    "RunExistsError",
    "TaskError",
]


class PlmkitError(Exception):
    """Input plmkit cannot use as given; the message names the file, option, value or step at fault."""


class ConfigError(PlmkitError, ValueError):
    """A config file or flag that cannot be used as given."""


class DataError(PlmkitError, ValueError):
    """Bad or missing data: the message names the file, split, column or label at fault."""


class MethodError(PlmkitError, ValueError):
    """Unknown method, unknown option, or an option value outside its range."""


class TaskError(PlmkitError, ValueError):
    """Unknown task, unknown task option, or a task the chosen model cannot serve."""


class ModelNotFoundError(PlmkitError, ValueError):
    """An alias, folder or hub id that cannot be resolved (offline, misspelt, or missing extra)."""


class RunError(PlmkitError):
    """A run folder that is not one, or a checkpoint that cannot be resumed."""


class RunExistsError(RunError, FileExistsError):
    """The output folder holds a previous run and neither overwriting nor resuming was asked for."""


class NonFiniteError(PlmkitError, FloatingPointError):
    """Training produced a NaN or infinite loss or gradient; the message names the step and the loss term."""
