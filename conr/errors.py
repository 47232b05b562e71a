"""The errors a user can fix, in one module that imports nothing.

Every one subclasses ValueError, OSError or FloatingPointError, so the command line
(conr/cli.py) prints its message as one line and exits with status 2. The modules
that raise them re-export them (``conr.config.ConfigError``, ``conr.engine.NonFiniteLossError``,
``conr.io.OutputError`` ...), so either import works. ``NotFittedError`` belongs to the
estimator's interface and stays in conr/estimator.py.
"""

__all__ = ["ConfigError", "NonFiniteLossError", "OutputError", "RunLockedError", "MissingDependencyError",
           "BadImageError", "UnsafeCheckpointError"]


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the fix."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped before saving bad weights."""


class OutputError(OSError):
    """The output folder cannot take the run's files; the message says why and what to do."""


class RunLockedError(OSError):
    """Another live process is writing to the run folder."""


class MissingDependencyError(ValueError):
    """An optional package a chosen setting needs is missing or broken; the message says what to install."""


class BadImageError(ValueError):
    """Unreadable image files with on_bad_image='fail'."""


class UnsafeCheckpointError(ValueError):
    """A checkpoint that holds code or objects other than tensors, numbers, strings and
    containers: conr refuses it without running anything (a pickle can run any command)."""
