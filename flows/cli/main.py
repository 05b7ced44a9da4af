"""``bce-eval``: the command line. Each subcommand imports only what it needs.

Exit codes: 0 success, 2 bad input (one line naming the file, column or value), 3 a quality gate
failed, 4 MLflow unreachable after retries (results saved locally), 5 object storage unreachable,
130 Ctrl-C, 1 an internal error (the traceback is in the debug log, or shown with ``--verbose``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from flows.cli.interrupt import EXIT_INTERRUPTED, INTERRUPTED, InterruptBound
from flows.cli.parser import build_parser, build_settings
from flows.cli.parser import evaluate_settings as _evaluate_settings
from flows.cli.preflight import check_before_server, check_serve
from tasks.errors import (
    EXIT_BAD_INPUT,
    EXIT_GATE_FAILED,
    EXIT_INTERNAL,
    EXIT_STORAGE,
    EXIT_TRACKING,
    GateFailed,
    InputError,
    StorageUnavailable,
    TrackingError,
)
from tasks.extras import require_extra


def _cmd_evaluate(args: argparse.Namespace) -> int:
    settings = _evaluate_settings(args)
    from flows.evaluate import flow_for
    from tasks.review.summary import format_summary
    from tasks.tracking.access import ui_command

    state = flow_for(settings)(settings, return_state=True)
    ev = state.result(raise_on_failure=False)
    if isinstance(ev, BaseException):
        raise ev  # bad input, tracking outage, internal error: mapped to an exit code by main()
    args._output.append(
        format_summary(
            ev, os.path.basename(os.path.normpath(settings.data)), 5, ui_command(ev.tracking_uri), settings.experiment
        )
    )
    if not ev.gate_passed:
        args._error = f"bce-eval: {ev.gate.message}"
        return EXIT_GATE_FAILED
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import demo_flow

    args._output.append(demo_flow())
    return 0


def _cmd_circles(args: argparse.Namespace) -> int:
    from flows.circles import circles_flow
    from flows.settings import CirclesSettings

    out = circles_flow(build_settings(CirclesSettings, {"epochs": args.epochs, "experiment": args.experiment}))
    args._output.append(
        "\n".join(
            [f"{out.line} (training {out.seconds:.2f} s)", *_run_lines(out.run_id, args.experiment, out.experiment_id)]
        )
    )
    return 0


def _run_lines(run_id: str, experiment: str, experiment_id: str) -> list[str]:
    """Where a command logged its MLflow run and how to open it, as ``evaluate``'s summary says it."""
    from tasks.redact import redact_uri
    from tasks.tracking.access import ui_hint
    from tasks.tracking.adapter import resolve_tracking_uri

    uri = resolve_tracking_uri()  # the flow's: it resolved it in this process, from the same environment
    return [
        f"  MLflow run {run_id} in experiment '{experiment}' (id {experiment_id}) at {redact_uri(uri)}",
        f"  {ui_hint(uri)}",
    ]


def _cmd_compare(args: argparse.Namespace) -> int:
    from flows.compare import compare_flow
    from flows.settings import CompareSettings

    settings = build_settings(
        CompareSettings,
        dict(
            data=args.data,
            label=args.label,
            champion=args.champion,
            challenger=args.challenger,
            features=args.features,
            partition_by=args.partition_by,
            slices=args.slice,
            weight_col=args.weight_col,
            experiment=args.experiment,
            promote=args.promote,
            margin=args.margin,
            min_rows=args.min_rows,
            max_regression=args.max_regression,
        ),
    )
    out = compare_flow(settings, return_state=True).result(raise_on_failure=False)
    if isinstance(out, BaseException):
        raise out  # bad input, tracking outage, internal error: mapped to an exit code by main()
    args._output.append(_comparison_summary(args, out))
    if not out.gate_passed:
        args._error = f"bce-eval: {out.gate_message}"
        return EXIT_GATE_FAILED
    return 0


def _comparison_summary(args: argparse.Namespace, out: Any) -> str:
    o = out.overall
    lines = [
        f"Champion {args.champion} vs challenger {args.challenger} on {o['n_rows']:,} rows",
        f"  BCE champion {o['bce_champion']:.4f}, challenger {o['bce_challenger']:.4f}; "
        f"difference {o['bce_diff']:+.5f} (95% CI [{o['bce_diff_low']:+.5f}, {o['bce_diff_high']:+.5f}]): "
        f"{o['verdict']}",
    ]
    for r in out.table.sort("bce_diff").head(10).iter_rows(named=True):
        if "partition" in r and args.partition_by or len(out.table) > 1:
            lines.append(
                f"    {r.get('partition', 'all'):<30} {r['bce_diff']:+.5f} [{r['bce_diff_low']:+.5f}, "
                f"{r['bce_diff_high']:+.5f}] {r['verdict']}"
            )
    for key, table in out.slices.items():
        counts = table.group_by("verdict").len().sort("verdict").iter_rows()
        lines.append(f"  slicing {key}: {table.height} slice(s): " + ", ".join(f"{n} {v}" for v, n in counts))
    lines.append(f"  promotion: {'done' if out.promoted else 'no'} ({out.reason})")
    lines.extend(_run_lines(out.run_id, args.experiment, out.experiment_id))
    return "\n".join(lines)


def _cmd_serve(args: argparse.Namespace) -> int:
    from tasks.data.storage import data_location

    settings = _evaluate_settings(args).model_copy(update={"data": data_location(args.data)})
    # refuse now, with one line, what would otherwise fail every scheduled run
    checked = check_serve(settings)
    from flows.evaluate import evaluate_flow

    print(checked, flush=True)
    print(f"serving deployment bce-evaluate/{args.name} on cron {args.cron!r} (Ctrl-C to stop)", flush=True)
    # Prefect's own hint omits the API URL, which a second shell lacks when this started a temporary server
    prefect = Path(sys.executable).parent / "prefect"
    api = os.environ.get("PREFECT_API_URL", "")
    print(
        f"  run it now from another shell: PREFECT_API_URL={api} {prefect} deployment run 'bce-evaluate/{args.name}'",
        flush=True,
    )
    evaluate_flow.serve(
        name=args.name,
        cron=args.cron,
        parameters={"settings": settings.model_dump(mode="json")},
        tags=["bce-eval", "scheduled"],
        description=f"Scheduled BCE evaluation of {settings.data}",
        print_starting_message=False,
    )
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from flows.cli.ui import run_ui
    from tasks.tracking.adapter import default_artifact_location, resolve_tracking_uri

    uri = args.backend_store_uri or resolve_tracking_uri()
    return run_ui(uri, default_artifact_location(uri), args.host, args.port)


def _cmd_stack(args: argparse.Namespace) -> int:
    from flows.stack.control import (
        StackPorts,
        default_home,
        stack_status,
        start_stack,
        stop_stack,
    )

    home = Path(args.home) if args.home else default_home()
    if args.action == "up":
        require_extra("stack", "bce-eval stack up")
        start_stack(home.resolve(), StackPorts())
    elif args.action == "down":
        stop_stack(home.resolve())
    else:
        for name, running in stack_status(home.resolve()).items():
            print(f"  {name:16} {'running' if running else 'stopped'}")
    return 0


def _cmd_example_models(args: argparse.Namespace) -> int:
    from tasks.models.examples import EXAMPLES, register_example_models
    from tasks.tracking.adapter import resolve_tracking_uri

    if not os.path.isdir(args.data):
        raise InputError(f"{args.data}: no such folder; pass the demo data's folder (data/demo) with --data.")
    print(f"fitting and registering {len(EXAMPLES)} example models on {args.data} ...", flush=True)
    versions = register_example_models(args.data, resolve_tracking_uri(), alias=args.alias)
    for name, version in versions.items():
        print(f"  models:/{name}@{args.alias}  (version {version}): {EXAMPLES[name]}")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "evaluate": _cmd_evaluate,
    "demo": _cmd_demo,
    "circles": _cmd_circles,
    "compare": _cmd_compare,
    "serve": _cmd_serve,
    "ui": _cmd_ui,
    "example-models": _cmd_example_models,
    "stack": _cmd_stack,
}
_NEEDS_PREFECT = {"evaluate", "demo", "circles", "compare", "serve"}
# what each command will import anyway; loaded while Prefect's temporary server starts
_PRELOAD = [
    "polars",
    "sklearn.linear_model",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.models",
    "matplotlib.pyplot",
    "flows.evaluate",
]
# what a helper process loads instead, when it loads the model (flows.cli.model_preload)
_HELPER_LOADS = {"sklearn.linear_model", "mlflow.sklearn"}


@contextlib.contextmanager
def _model_helper(args: argparse.Namespace, server: Any) -> Iterator[bool]:
    """With a Prefect server already up, ``evaluate --model-uri`` loads the model in a helper
    process on the second core meanwhile (:mod:`flows.cli.model_preload`); yields whether it does.
    With a temporary server, that core is busy starting it: everything loads here while it starts."""
    if args.command != "evaluate" or not args.model_uri or server.starting:
        yield False
        return
    from flows.cli.model_preload import start_model_preload
    from flows.preloaded import models_preloaded_by

    helper = start_model_preload(args.model_uri, args.score_kind)
    try:
        with models_preloaded_by(helper):
            yield helper is not None
    finally:
        if helper is not None:
            helper.stop()


def _prepare(args: argparse.Namespace, server: Any, helping: bool) -> None:
    """Check what needs no server, load the libraries the command needs, then wait for the server."""
    from flows.cli.console import install_log_filters
    from flows.cli.process import end_heartbeats_promptly, preload, resume_collection

    check_before_server(args, None if server.starting else os.environ.get("PREFECT_API_URL"))
    preload([m for m in _PRELOAD if not helping or m not in _HELPER_LOADS])
    if server.starting and getattr(args, "model_uri", None):
        preload(["skops.io"])  # how MLflow 3 stores scikit-learn models: loaded while the server starts
    if args.command in {"evaluate", "demo"}:
        from tasks.metrics.lanes import warm_up

        warm_up()
    install_log_filters(args.verbose, temporary_server=server.starting)
    if args._own_process:  # what the console script may change for the whole process, and main() as a library may not
        end_heartbeats_promptly()
        resume_collection()
    server.wait()


def main(argv: Sequence[str] | None = None, own_process: bool = False) -> int:
    """``bce-eval ARGS``; returns the exit code. ``own_process``: called by the console script
    (:func:`run`), which exits after it, so it may tune the whole process for a one-shot command."""
    args = parser_args = build_parser().parse_args(argv)
    args._output, args._own_process = [], own_process
    if not args.verbose:
        warnings.simplefilter("ignore")
    from flows.cli.process import prepare_environment, resume_collection

    prepare_environment()
    if args.command not in _NEEDS_PREFECT:
        if own_process:
            resume_collection()
        try:
            return _COMMANDS[args.command](args)
        except InputError as exc:
            print(f"bce-eval: error: {exc}", file=sys.stderr, flush=True)
            return EXIT_BAD_INPUT
    # the console script's Ctrl-C ends the command within a bound (main() as a library leaves SIGINT alone)
    with InterruptBound() if own_process else contextlib.nullcontext() as bound:
        code, message = _run_with_prefect(args, parser_args)
        # after the server has stopped, so these are the last lines
        with bound.last_lines(code) if bound else contextlib.nullcontext():
            for text in args._output:
                print(text, flush=True)
            if message:
                from tasks.redact import redact_text

                sys.stdout.flush()
                print(redact_text(message), file=sys.stderr, flush=True)
    return code


def _run_with_prefect(args: argparse.Namespace, parser_args: argparse.Namespace) -> tuple[int, str | None]:
    """The command, with the Prefect server (a temporary one when none is configured) stopped after it:
    its exit code and last line."""
    from flows.cli.prefect_server import PrefectServer

    try:
        with PrefectServer() as server, _model_helper(args, server) as helping:
            _prepare(args, server, helping)
            code = _COMMANDS[args.command](parser_args)
        return code, getattr(parser_args, "_error", None)
    except InputError as exc:
        return EXIT_BAD_INPUT, f"bce-eval: error: {exc}"
    except GateFailed as exc:
        return EXIT_GATE_FAILED, f"bce-eval: {exc}"
    except TrackingError as exc:
        return EXIT_TRACKING, f"bce-eval: error: {exc}"
    except StorageUnavailable as exc:
        return EXIT_STORAGE, f"bce-eval: error: {exc}"
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED, INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback in the log
        return _internal_error(args, exc)
    except BaseException as exc:
        if not _is_rust_panic(exc):
            raise  # SystemExit, GeneratorExit, a termination signal: not errors of the command
        return _internal_error(args, exc)


def _is_rust_panic(exc: BaseException) -> bool:
    # a panic in Polars (or another Rust extension) reaches Python as pyo3's PanicException, which
    # derives from BaseException: an internal error like any other, not a reason for a traceback
    return type(exc).__name__ == "PanicException" and type(exc).__module__ == "pyo3_runtime"


def _internal_error(args: argparse.Namespace, exc: BaseException) -> tuple[int, str]:
    """The last resort: the traceback to the debug log, one line naming the error for the user."""
    from flows.cli.process import debug_log_path

    if args.verbose:
        raise exc
    import logging
    import traceback

    logging.getLogger("bce_eval").debug("internal error\n%s", traceback.format_exc())
    with open(debug_log_path(), "a", encoding="utf-8") as fh:
        fh.write(traceback.format_exc())
    first = str(exc).splitlines()[0] if str(exc) else ""
    return EXIT_INTERNAL, f"bce-eval: internal error: {type(exc).__name__}: {first} (traceback in {debug_log_path()})"


def run() -> None:
    """The ``bce-eval`` console script: :func:`main` in a process of its own, which it exits."""
    from flows.cli.process import pause_collection_for_imports

    pause_collection_for_imports()
    sys.exit(main(own_process=True))


if __name__ == "__main__":
    run()
