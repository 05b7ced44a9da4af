"""What the CLI checks before the flow runs: at once, while the Prefect server starts (a typo in a
path, the options, the local footers), and before ``serve`` (everything a scheduled run would refuse)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from flows.settings import EvaluateSettings


def check_serve(settings: "EvaluateSettings") -> str:
    """What every scheduled run would refuse, refused now; returns a line describing what was checked.

    The same calls the flow makes before reading any data: the model loads and is a binary 0/1
    classifier taking the features, the baseline run is an evaluation, and the data's footers have
    the columns and partitions (the date window is taken up to now). Raises :class:`InputError`.
    """
    from tasks.dataset import discover_dataset
    from tasks.model import check_model_output, load_model
    from tasks.tracking import resolve_tracking_uri

    features = list(settings.features)
    loaded = None
    if settings.model_uri:
        loaded = load_model(settings.model_uri, resolve_tracking_uri(), settings.score_kind)
        features = loaded.features(features)
    dataset = discover_dataset(
        settings.data, settings.label, features, settings.partition_by,
        [settings.score_col] if settings.score_col else [],
        settings.where, settings.date_key, settings.window_days,
        model_types=loaded.inputs.by_name() if loaded and loaded.inputs else None, model_name=settings.model_uri or "",
    )
    if loaded is not None:
        loaded.scorer(dataset.features, dataset.text_features)  # the model takes these columns
        check_model_output(loaded, dataset)
    if settings.gates.baseline_run_id:
        from tasks.gates import read_baseline

        read_baseline(settings.gates.baseline_run_id, resolve_tracking_uri())
    by = f", partitioned by {','.join(dataset.partition_by)}" if dataset.partition_by else ""
    return (
        f"checked {settings.data}: {dataset.num_rows:,} rows in {len(dataset.files)} file(s){by}; "
        f"label {dataset.label!r}, " + (f"features {','.join(dataset.features)}" if dataset.features else f"scores {settings.score_col!r}")
    )


def check_before_server(
    args: argparse.Namespace, server_url: str | None, make_settings: Callable[[argparse.Namespace], "EvaluateSettings"]
) -> None:
    """Say at once what starts, then check what needs no server while the Prefect server starts.

    A typo in a local path is reported within a fraction of a second (before pydantic, Polars or
    Prefect are imported); then the options against each other, and the local data's footers
    against the label and feature columns. Object storage and models are checked by the flow.
    """
    from tasks.redact import redact_uri

    data = getattr(args, "data", None)
    if server_url:
        print(f"bce-eval {args.command}: {'checking ' + data + ', ' if data else ''}using the Prefect server at {redact_uri(server_url)}", flush=True)
    else:
        print(f"bce-eval {args.command}: {'checking ' + data + ' while ' if data else ''}a temporary Prefect server starts", flush=True)
    if not data or "://" in data:
        return
    from tasks.storage import LocalStorage

    LocalStorage().entry(data)  # InputError naming the path
    if args.command != "evaluate":  # serve: check_serve reads the footers (and the model) itself
        return
    settings = make_settings(args)
    from tasks.dataset import discover_dataset

    if settings.model_uri and not settings.features:
        return  # the columns come from the model's signature: the flow checks them once it is loaded
    dataset = discover_dataset(settings.data, settings.label, list(settings.features), settings.partition_by,
                               [settings.score_col] if settings.score_col else [], settings.where, settings.date_key, settings.window_days)
    print(f"  {len(dataset.files)} file(s), {dataset.num_rows:,} rows; loading the libraries", flush=True)
