"""The one exception type that means "the user's input is wrong"."""

from __future__ import annotations


class InputError(ValueError):
    """Malformed input: the message names the file, column or value at fault and how to fix it.

    The CLI prints it as one line and exits with :data:`EXIT_BAD_INPUT`; anything else is a bug.
    """


class GateFailed(Exception):
    """The evaluation was logged whole, but a quality gate failed; the message names the partitions."""

    def __init__(self, message: str, evaluation: object = None) -> None:
        super().__init__(message)
        self.evaluation = evaluation


class TrackingError(Exception):
    """MLflow could not be reached or refused the run after retries; the message says where the results are."""


class StorageUnavailable(Exception):
    """The object store did not answer after the client's own bounded retries; the message names the object."""


class Stopped(Exception):
    """Work stopped because the flow no longer needs it (the flow failed or was interrupted first): not a failure of its
    own."""


EXIT_BAD_INPUT = 2
EXIT_TRACKING = 4
EXIT_GATE_FAILED = 3
EXIT_INTERNAL = 1
EXIT_STORAGE = 5


def is_transient(exc: BaseException) -> bool:
    """Failures worth a retry: the network, a server, a locked database. Not bad input, not bugs."""
    if isinstance(exc, (InputError, StorageUnavailable)):
        return False  # StorageUnavailable: the store's client already retried with backoff
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(
        names
        & {"MlflowException", "RequestException", "OperationalError", "HTTPError", "RestException", "TrackingError"}
    )
