"""The one way this package makes a Prefect task from a plain function."""

from __future__ import annotations

from typing import Any, Callable

from tasks.errors import InputError, StorageUnavailable, Stopped


def is_transient(exc: BaseException) -> bool:
    """Failures worth a retry: the network, a server, a locked database. Not bad input, not bugs."""
    if isinstance(exc, (InputError, StorageUnavailable)):
        return False  # StorageUnavailable: the store's client already retried with backoff
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"MlflowException", "RequestException", "OperationalError", "HTTPError", "RestException", "TrackingError"})


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classified, not swallowed: the state stays failed
        return is_transient(exc)
    return False


class Carried:
    """A task argument that reaches a Dask worker process as it is.

    ``quote(x)`` keeps Prefect from walking a large argument, but it is a tuple subclass and Dask
    sends tuples to another process as plain tuples: the task there got ``(x,)``. The Dask runner
    (:func:`dask_task_runner`) sends quoted arguments as ``Carried`` (which Prefect does not walk
    either), and every task made by :func:`as_task` unwraps it.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Carried, (self.value,))


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Carried) else value


def as_task(fn: Callable[..., Any], *, name: str, retries: int = 0, **kwargs: Any) -> Any:
    """A thin ``@task`` around ``fn``: no input hashing (inputs are large frames and models).

    The Prefect task is made when first used (called, submitted, given options), so a module of
    plain functions and their tasks imports without Prefect: the model helper process
    (:mod:`tasks.model_prefetch`) calls the plain functions only and never pays for it.
    """
    return _LazyTask(fn, name, retries, kwargs)


class _LazyTask:
    """A Prefect task made on first use; every call and attribute goes to it."""

    def __init__(self, fn: Callable[..., Any], name: str, retries: int, kwargs: dict[str, Any]) -> None:
        self._args = (fn, name, retries, kwargs)
        self._task: Any = None

    def _made(self) -> Any:
        if self._task is None:  # two threads making it at once both make an equal task: harmless
            self._task = _make_task(*self._args)
        return self._task

    @property
    def prefect_task(self) -> Any:
        """The Prefect task itself, for a task runner's ``submit``."""
        return self._made()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._made()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:  # submit, map, with_options, fn, name, ...
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self._made(), attr)


def _make_task(fn: Callable[..., Any], name: str, retries: int, kwargs: dict[str, Any]) -> Any:
    import functools

    from prefect import task
    from prefect.cache_policies import NO_CACHE

    @functools.wraps(fn)
    def call(*args: Any, **kw: Any) -> Any:
        try:
            return fn(*map(_unwrap, args), **{k: _unwrap(v) for k, v in kw.items()})
        except Stopped as exc:
            # work the flow no longer needs (only the submitted listing gets a stop): Cancelled says
            # so in the UI, where Failed would read as a second error beside the one that ended the flow
            from prefect.states import Cancelled

            return Cancelled(message=str(exc))

    kwargs = dict(kwargs)
    if retries:
        kwargs.setdefault("retry_delay_seconds", [2, 5, 15][:retries] + [15] * max(0, retries - 3))
        kwargs["retry_condition_fn"] = _retry_if_transient
    return task(call, name=name, retries=retries, cache_policy=NO_CACHE, persist_result=False, **kwargs)


def dask_task_runner(**kwargs: Any) -> Any:
    """Prefect's ``DaskTaskRunner`` (same arguments), sending ``quote()``d arguments as :class:`Carried`."""
    from prefect.utilities.annotations import quote
    from prefect_dask import DaskTaskRunner

    class CarryingDaskTaskRunner(DaskTaskRunner):
        def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
            carried = {k: Carried(v.unwrap()) if isinstance(v, quote) else v for k, v in parameters.items()}
            return super().submit(task, carried, wait_for, dependencies)

    return CarryingDaskTaskRunner(**kwargs)
