"""A model the CLI loads ahead, in a helper process (:mod:`flows.cli.model_preload`), handed to the
flow's load step: the CLI sets it around the flow call it makes; a flow run anywhere else (a
deployment's worker, a user's own flow) has none and loads the model itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Protocol

from tasks.models.loading import LoadedModel, load_model


class ModelSource(Protocol):
    """What hands over a model loaded ahead: the model if it is exactly the one asked for, once."""

    def take(self, model_uri: str, tracking_uri: str, score_kind: str) -> LoadedModel | None: ...


#: the model source of the flow call being made in this context (Prefect copies the context into
#: the threads that run a flow's tasks)
_SOURCE: ContextVar[ModelSource | None] = ContextVar("bce_eval_model_source", default=None)


@contextlib.contextmanager
def models_preloaded_by(source: ModelSource | None) -> Iterator[None]:
    """Within the block, the flows' load step asks ``source`` first."""
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def load_model_preloaded_first(model_uri: str, tracking_uri: str, score_kind: Any = "probability") -> LoadedModel:
    """The model a preloading source hands over (:func:`models_preloaded_by`), else :func:`load_model`'s."""
    source = _SOURCE.get()
    loaded = source.take(model_uri, tracking_uri, score_kind) if source is not None else None
    return loaded if loaded is not None else load_model(model_uri, tracking_uri, score_kind)
