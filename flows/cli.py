"""``bce-eval``: the command line. Each subcommand imports only what it needs.

Exit codes: 0 success, 2 bad input (one line naming the file, column or value), 3 a quality gate
failed, 1 an internal error (the traceback is in the debug log, or shown with ``--verbose``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any, Callable, Sequence

from tasks.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, InputError


def _csv(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a binary classifier on Parquet data by BCE, per partition and overall")
    p.add_argument("data", help="a Parquet file, a folder of Parquet files, or a hive-partitioned tree")
    p.add_argument("--label", required=True, help="the label column (0/1 or boolean)")
    p.add_argument("--features", type=_csv, default=[], help="feature columns A,B,... (default with --model-uri: the model's signature)")
    p.add_argument("--partition-by", type=_csv, default=[], help="partition columns K1,K2 (default: the hive keys)")
    p.add_argument("--model-uri", help="evaluate this MLflow model (runs:/..., models:/name/1, models:/name@alias) instead of fitting")
    p.add_argument("--score-col", help="evaluate predictions already stored in this column (no model)")
    p.add_argument("--score-kind", choices=["probability", "logit"], default="probability", help="what --score-col holds")
    p.add_argument("--experiment", default="bce-evaluation", help="MLflow experiment (default: bce-evaluation)")
    p.add_argument("--run-name", help="MLflow run name (default: data, model and time)")
    p.add_argument("--C", dest="C", type=float, help="LogisticRegression's inverse regularisation strength (default 1.0)")
    p.add_argument("--max-iter", type=int, help="LogisticRegression's max_iter (default 100)")
    p.add_argument("--chunk-rows", type=int, default=4_000_000, help="rows scored per pass (default 4,000,000)")


def _evaluate_settings(args: argparse.Namespace) -> Any:
    from flows.settings import EvaluateSettings

    if args.score_col and args.model_uri:
        raise InputError("pass either --score-col or --model-uri, not both.")
    if not args.features and not args.model_uri and not args.score_col:
        raise InputError("--features is required when fitting a model (or pass --model-uri / --score-col).")
    params = {k: v for k, v in (("C", args.C), ("max_iter", args.max_iter)) if v is not None}
    return EvaluateSettings(
        data=args.data,
        label=args.label,
        features=args.features,
        partition_by=args.partition_by,
        model_uri=args.model_uri,
        score_col=args.score_col,
        score_kind=args.score_kind,
        model_params=params,
        experiment=args.experiment,
        run_name=args.run_name,
        chunk_rows=args.chunk_rows,
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    settings = _evaluate_settings(args)
    from flows.evaluate import evaluate_flow
    from tasks.report import format_summary
    from tasks.tracking import ui_command

    ev = evaluate_flow(settings)
    args._output.append(format_summary(ev, os.path.basename(os.path.normpath(settings.data)), 5, ui_command(ev.tracking_uri)))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import demo_flow

    args._output.append(demo_flow())
    return 0


def _cmd_circles(args: argparse.Namespace) -> int:
    from flows.circles import circles_flow
    from flows.settings import CirclesSettings

    out = circles_flow(CirclesSettings(epochs=args.epochs, experiment=args.experiment))
    args._output.append(f"{out['line']}\n  MLflow run {out['run_id']} (training {out['seconds']:.2f} s)")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from tasks.tracking import default_artifact_location, redact_uri, resolve_tracking_uri

    uri = args.backend_store_uri or resolve_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    artifacts = default_artifact_location(uri)
    if artifacts:
        cmd += ["--default-artifact-root", artifacts]
    print(f"MLflow UI for {redact_uri(uri)} on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bce-eval", description="Binary cross-entropy evaluation of binary classifiers, as Prefect flows logged to MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show full tracebacks and all warnings")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_evaluate(sub)
    sub.add_parser("demo", help="run the seed article's examples and the partitioned demo dataset")
    circles = sub.add_parser("circles", help="the seed's MLP on two circles, learning curves logged per epoch")
    circles.add_argument("--epochs", type=int, default=200)
    circles.add_argument("--experiment", default="bce-circles")
    ui = sub.add_parser("ui", help="start MLflow's UI on the local store (127.0.0.1 by default)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--backend-store-uri", help="default: MLFLOW_TRACKING_URI, else the repo's mlflow/mlflow.db")
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "evaluate": _cmd_evaluate,
    "demo": _cmd_demo,
    "circles": _cmd_circles,
    "ui": _cmd_ui,
}
_NEEDS_PREFECT = {"evaluate", "demo", "circles"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bce-eval``; returns the exit code (the console script exits with it)."""
    args = parser_args = build_parser().parse_args(argv)
    args._output = []
    if not args.verbose:
        warnings.simplefilter("ignore")
    from flows.runtime import PrefectServer, debug_log_path, install_log_filters, prepare_environment

    prepare_environment()
    if args.command not in _NEEDS_PREFECT:
        return _COMMANDS[args.command](args)
    code, message = 0, None
    with PrefectServer() as server:
        try:
            server.wait()
            install_log_filters(args.verbose)
            code = _COMMANDS[args.command](parser_args)
        except InputError as exc:
            code, message = EXIT_BAD_INPUT, f"bce-eval: error: {exc}"
        except KeyboardInterrupt:
            code, message = 130, "bce-eval: interrupted"
        except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback in the log
            if args.verbose:
                raise
            import logging
            import traceback

            logging.getLogger("bce_eval").debug("internal error\n%s", traceback.format_exc())
            with open(debug_log_path(), "a", encoding="utf-8") as fh:
                fh.write(traceback.format_exc())
            first = str(exc).splitlines()[0] if str(exc) else ""
            code, message = EXIT_INTERNAL, f"bce-eval: internal error: {type(exc).__name__}: {first} (traceback in {debug_log_path()})"
    # after the server has stopped, so these are the last lines
    for text in args._output:
        print(text, flush=True)
    if message:
        sys.stdout.flush()
        print(message, file=sys.stderr, flush=True)
    return code


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
