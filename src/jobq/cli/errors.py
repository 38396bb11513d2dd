"""How the CLI fails: the exit codes, the errors it reports as one line, and that line."""

from __future__ import annotations

import sys

from jobq.exceptions import ConfigurationError, InvalidJobError, JobqError

PROG = "jobq"
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An error the CLI reports as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """A :class:`CliError` for something the user passed wrongly (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line (just ``"TypeName"`` if the message is empty)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def print_error(message: str) -> None:
    """Write ``jobq: error: <message>`` to stderr, on one line."""
    sys.stderr.write(f"{PROG}: error: {' '.join(message.split())}\n")
    sys.stderr.flush()


def exit_code(exc: JobqError) -> int:
    """The exit code for a jobq error that reached the command line."""
    # What the user passed was wrong (URL, option, argument): a usage error.
    if isinstance(exc, ConfigurationError | InvalidJobError):
        return EXIT_USAGE
    return EXIT_RUNTIME
