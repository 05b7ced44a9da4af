"""``bce-eval``: the command line. Each subcommand imports only what it needs.

Exit codes: 0 success, 2 bad input (one line naming the file, column or value), 3 a quality gate
failed, 4 MLflow unreachable after retries (results saved locally), 1 an internal error (the
traceback is in the debug log, or shown with ``--verbose``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from tasks.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_TRACKING, GateFailed, InputError, TrackingError

if TYPE_CHECKING:  # the CLI imports pydantic and the settings only when a command needs them
    from pydantic import BaseModel, ValidationError

    from flows.settings import EvaluateSettings

    M = TypeVar("M", bound=BaseModel)


def _csv(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a binary classifier on Parquet data by BCE, per partition and overall")
    _add_evaluate_options(p)


def _add_evaluate_options(p: Any) -> None:
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
    p.add_argument("--chunk-rows", type=int, help="rows per task, whole partitions (default 64,000,000; 4,000,000 with --auc exact, --audit or --dask)")
    p.add_argument("--fit", choices=["sklearn", "streaming"], default="sklearn", help="streaming: exact L-BFGS fit over chunks, for data larger than memory")
    p.add_argument("--dask", metavar="ADDRESS", help="run the partition work on Dask: a scheduler address (tcp://host:8786) or 'local'")
    p.add_argument("--dask-workers", type=int, help="workers of --dask local (default 2)")
    p.add_argument("--audit", action="store_true", help="one more pass: BCE three ways (exact, sklearn's and Keras' clipping), saturation, calibration split, largest losses")
    p.add_argument("--full", action="store_true", help="recompute every partition, ignoring cached results")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the per-partition cache")
    p.add_argument(
        "--verify-cache", action="store_true",
        help="re-hash the bytes of every cached file's column chunks and recompute any partition whose bytes changed "
        "(for copies that keep every file attribute)",
    )
    p.add_argument("--auc", choices=["binned", "exact"], default="binned", help="ROC AUC per partition: from 4096-bin histograms with a stated bound (default), or exact from ranks (a sort per partition)")
    reg = p.add_argument_group("registry")
    reg.add_argument("--register", metavar="NAME", help="register the fitted model as a new version of NAME")
    reg.add_argument("--alias", help="with --register: set this alias (e.g. champion) on the new version")
    sel = p.add_argument_group("partition selection (for scheduled runs)")
    sel.add_argument("--where", action="append", default=[], metavar="KEY=V1,V2", help="keep hive partitions whose KEY is one of the values (repeatable)")
    sel.add_argument("--date-key", help="hive key holding an ISO date (YYYY-MM-DD)")
    sel.add_argument("--window-days", type=int, help="with --date-key: evaluate the last N days up to the scheduled time (or now)")
    gate = p.add_argument_group("quality gate (a failure exits 3 after logging the whole evaluation)")
    gate.add_argument("--max-bce", type=float, help="fail when the overall BCE exceeds this")
    gate.add_argument("--max-partition-bce", type=float, help="fail when any partition's BCE exceeds this")
    gate.add_argument("--max-regression", type=float, help="fail when BCE exceeds the baseline run's by more than this")
    gate.add_argument("--baseline-run", help="MLflow run id of the baseline evaluation (for --max-regression)")
    gate.add_argument("--min-rows", type=int, default=1, help="partitions with fewer rows are reported as too small, not judged")
    gate.add_argument("--min-class-rows", type=int, default=0, help="partitions with fewer positives or negatives are too small to judge")
    gate.add_argument("--judge-on", choices=["interval", "point"], default="interval", help="fail a partition when its whole 95%% interval is above the threshold (default), or its point BCE")


# settings whose CLI option is not "--" + the field name with dashes
_OPTION_OF_SETTING = {
    "data": "DATA",
    "register_name": "--register",
    "register_alias": "--alias",
    "cache": "--no-cache",
    "gates.baseline_run_id": "--baseline-run",
    "model_params.C": "--C",
}


def _option_name(loc: tuple[Any, ...]) -> str:
    path = ".".join(str(p) for p in loc)
    return _OPTION_OF_SETTING.get(path) or "--" + str(loc[-1]).replace("_", "-")


def settings_error(exc: "ValidationError") -> InputError:
    """The first error of a pydantic ``ValidationError`` as one :class:`InputError` line.

    A rule between settings (a model validator) already words its message for the user; a field
    error gets the option's name and the value in front of pydantic's message (not its
    "Value error, ..." prefix, error count or documentation URL).
    """
    err = exc.errors(include_url=False)[0]
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        return InputError(str(err["ctx"]["error"]))
    msg = err["msg"].rstrip(".")
    msg = msg[:1].lower() + msg[1:]
    if not err["loc"]:
        return InputError(f"{msg}.")
    return InputError(f"{_option_name(tuple(err['loc']))} {err['input']!r}: {msg}.")


def build_settings(cls: "type[M]", values: dict[str, Any]) -> "M":
    """``cls(**values)``, with a validation error turned into one :class:`InputError` line."""
    from pydantic import ValidationError

    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise settings_error(exc) from None


def _evaluate_settings(args: argparse.Namespace) -> "EvaluateSettings":
    """The settings of ``evaluate``/``serve``; every rule between options is the settings model's."""
    from flows.settings import EvaluateSettings

    params = {k: v for k, v in (("C", args.C), ("max_iter", args.max_iter)) if v is not None}
    where: dict[str, list[str]] = {}
    for item in args.where:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise InputError(f"--where {item!r}: expected KEY=V1,V2.")
        where.setdefault(key.strip(), []).extend(_csv(values))
    values: dict[str, Any] = dict(
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
        auc=args.auc,
        full=args.full,
        audit=args.audit,
        cache=not args.no_cache,
        verify_cache=args.verify_cache,
        fit=args.fit,
        dask=args.dask,
        register_name=args.register,
        register_alias=args.alias,
        where=where,
        date_key=args.date_key,
        window_days=args.window_days,
        gates=dict(
            max_bce=args.max_bce,
            max_partition_bce=args.max_partition_bce,
            max_regression=args.max_regression,
            baseline_run_id=args.baseline_run,
            min_rows=args.min_rows,
            min_class_rows=args.min_class_rows,
            judge_on=args.judge_on,
        ),
    )
    if args.dask_workers is not None:  # else the settings' default
        values["dask_workers"] = args.dask_workers
    return build_settings(EvaluateSettings, values)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    settings = _evaluate_settings(args)
    from flows.evaluate import flow_for
    from tasks.report import format_summary
    from tasks.tracking import ui_command

    state = flow_for(settings)(settings, return_state=True)
    ev = state.result(raise_on_failure=False)
    if isinstance(ev, BaseException):
        raise ev  # bad input, tracking outage, internal error: mapped to an exit code by main()
    args._output.append(format_summary(ev, os.path.basename(os.path.normpath(settings.data)), 5, ui_command(ev.tracking_uri)))
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
    args._output.append(f"{out.line}\n  MLflow run {out.run_id} (training {out.seconds:.2f} s)")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from flows.compare import compare_flow
    from flows.settings import CompareSettings

    settings = build_settings(
        CompareSettings,
        dict(
            data=args.data, label=args.label, champion=args.champion, challenger=args.challenger,
            features=args.features, partition_by=args.partition_by, experiment=args.experiment,
            promote=args.promote, margin=args.margin, min_rows=args.min_rows, max_regression=args.max_regression,
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
        f"difference {o['bce_diff']:+.5f} (95% CI [{o['bce_diff_low']:+.5f}, {o['bce_diff_high']:+.5f}]): {o['verdict']}",
    ]
    for r in out.table.sort("bce_diff").head(10).iter_rows(named=True):
        if "partition" in r and args.partition_by or len(out.table) > 1:
            lines.append(f"    {r.get('partition', 'all'):<30} {r['bce_diff']:+.5f} [{r['bce_diff_low']:+.5f}, {r['bce_diff_high']:+.5f}] {r['verdict']}")
    lines.append(f"  promotion: {'done' if out.promoted else 'no'} ({out.reason})")
    lines.append(f"  MLflow run {out.run_id}")
    return "\n".join(lines)


def check_serve(settings: "EvaluateSettings") -> str:
    """What every scheduled run would refuse, refused now; returns a line describing what was checked.

    The same calls the flow makes before reading any data: the model loads and is a binary 0/1
    classifier taking the features, the baseline run is an evaluation, and the data's footers have
    the columns and partitions (the date window is taken up to now). Raises :class:`InputError`.
    """
    from tasks.dataset import discover_dataset
    from tasks.model import load_model, model_feature_names
    from tasks.scoring import make_scorer

    features = list(settings.features)
    model = None
    if settings.model_uri:
        model = load_model(settings.model_uri)
        features = features or (model_feature_names(settings.model_uri) or [])
    dataset = discover_dataset(
        settings.data, settings.label, features, settings.partition_by,
        [settings.score_col] if settings.score_col else [],
        settings.where, settings.date_key, settings.window_days,
    )
    if model is not None:
        make_scorer(model, dataset.features)  # the model takes these columns
    if settings.gates.baseline_run_id:
        from tasks.gates import read_baseline
        from tasks.tracking import resolve_tracking_uri

        read_baseline(settings.gates.baseline_run_id, resolve_tracking_uri())
    by = f", partitioned by {','.join(dataset.partition_by)}" if dataset.partition_by else ""
    return (
        f"checked {settings.data}: {dataset.num_rows:,} rows in {len(dataset.files)} file(s){by}; "
        f"label {dataset.label!r}, " + (f"features {','.join(dataset.features)}" if dataset.features else f"scores {settings.score_col!r}")
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = _evaluate_settings(args).model_copy(update={"data": os.path.abspath(args.data)})
    # refuse now, with one line, what would otherwise fail every scheduled run
    checked = check_serve(settings)
    from flows.evaluate import evaluate_flow

    print(checked, flush=True)
    print(f"serving deployment bce-evaluate/{args.name} on cron {args.cron!r} (Ctrl-C to stop)", flush=True)
    evaluate_flow.serve(
        name=args.name,
        cron=args.cron,
        parameters={"settings": settings.model_dump(mode="json")},
        tags=["bce-eval", "scheduled"],
        description=f"Scheduled BCE evaluation of {settings.data}",
    )
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
    serve = sub.add_parser("serve", help="serve the evaluation flow on a cron schedule (flow.serve); takes evaluate's options")
    _add_evaluate_options(serve)
    serve.add_argument("--cron", required=True, help='cron schedule, e.g. "0 2 * * *" (every night at 02:00)')
    serve.add_argument("--name", default="nightly", help="deployment name (default: nightly)")
    cmp_ = sub.add_parser("compare", help="champion vs challenger on the same data: the paired BCE difference with a 95%% interval")
    cmp_.add_argument("data")
    cmp_.add_argument("--label", required=True)
    cmp_.add_argument("--champion", required=True, help="MLflow URI, e.g. models:/churn@champion")
    cmp_.add_argument("--challenger", required=True, help="MLflow URI, e.g. models:/churn/7")
    cmp_.add_argument("--features", type=_csv, default=[])
    cmp_.add_argument("--partition-by", type=_csv, default=[])
    cmp_.add_argument("--experiment", default="bce-comparison")
    cmp_.add_argument("--promote", action="store_true", help="move the champion alias to the challenger when it is better by --margin")
    cmp_.add_argument("--margin", type=float, default=0.0, help="required BCE improvement (default 0)")
    cmp_.add_argument("--min-rows", type=int, default=30, help="partitions with fewer rows get no verdict")
    cmp_.add_argument("--max-regression", type=float, help="gate: exit 3 when the challenger is surely worse by more than this (paired interval)")
    ui = sub.add_parser("ui", help="start MLflow's UI on the local store (127.0.0.1 by default)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--backend-store-uri", help="default: MLFLOW_TRACKING_URI, else the repo's mlflow/mlflow.db")
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "evaluate": _cmd_evaluate,
    "demo": _cmd_demo,
    "circles": _cmd_circles,
    "compare": _cmd_compare,
    "serve": _cmd_serve,
    "ui": _cmd_ui,
}
_NEEDS_PREFECT = {"evaluate", "demo", "circles", "compare", "serve"}
# what each command will import anyway; loaded while Prefect's temporary server starts
_PRELOAD = ["polars", "sklearn.linear_model", "mlflow", "mlflow.sklearn", "mlflow.models", "matplotlib.pyplot", "flows.evaluate"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bce-eval``; returns the exit code (the console script exits with it)."""
    args = parser_args = build_parser().parse_args(argv)
    args._output = []
    if not args.verbose:
        warnings.simplefilter("ignore")
    from flows.runtime import PrefectServer, debug_log_path, install_log_filters, preload, prepare_environment

    prepare_environment()
    if args.command not in _NEEDS_PREFECT:
        return _COMMANDS[args.command](args)
    code, message = 0, None
    with PrefectServer() as server:
        try:
            preload(_PRELOAD)
            if args.command in {"evaluate", "demo"}:
                from tasks.kernels import warm_up

                warm_up()
            install_log_filters(args.verbose)
            if server.starting and args.command in {"evaluate", "serve"} and args.model_uri:
                from tasks.model import prefetch_model

                prefetch_model(args.model_uri)  # in time otherwise spent waiting for the server
            server.wait()
            code = _COMMANDS[args.command](parser_args)
            message = getattr(parser_args, "_error", None)
        except InputError as exc:
            code, message = EXIT_BAD_INPUT, f"bce-eval: error: {exc}"
        except GateFailed as exc:
            code, message = EXIT_GATE_FAILED, f"bce-eval: {exc}"
        except TrackingError as exc:
            code, message = EXIT_TRACKING, f"bce-eval: error: {exc}"
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
        from tasks.tracking import redact_text

        sys.stdout.flush()
        print(redact_text(message), file=sys.stderr, flush=True)
    return code


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
