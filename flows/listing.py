"""The dataset's listing on a thread of its own, beside the model's loading: shared by the flows.

(No ``from __future__ import annotations``, as in the flow modules it serves.)
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from flows.steps import list_files_task


@contextmanager
def listing_in_background(params: dict[str, Any]) -> Iterator[PrefectFuture]:
    """Submit ``list-files`` with ``params`` (:func:`tasks.data.dataset.read_dataset_files`) on a thread of
    its own and yield its future; on leaving, wait for it.

    When the body raises (a model that does not load, Ctrl-C), the listing stops at its next batch
    of files (its task run ends Cancelled) and the error goes on without waiting for a
    listing nothing will read: on an object store, minutes for a hundred thousand files.
    """
    stop = threading.Event()
    with ThreadPoolTaskRunner(max_workers=1) as background:
        future = background.submit(list_files_task, {**params, "stop": stop})
        try:
            yield future
        except BaseException:
            stop.set()
            raise
