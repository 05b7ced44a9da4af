"""``bce-eval``'s options: every subcommand and its help text (nothing imported beyond argparse and
the error type), and the settings they make (pydantic and the settings imported only then)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, TypeVar

from tasks.errors import InputError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flows.settings import EvaluateSettings

    M = TypeVar("M", bound=BaseModel)


def split_csv(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a binary classifier on Parquet data by BCE, per partition and overall"
    )
    _add_evaluate_options(p)


def _add_evaluate_options(p: Any) -> None:
    # argparse lists options in the order they are added: these calls keep --help's order
    _add_data_options(p)
    _add_run_options(p)
    _add_cache_options(p)
    _add_registry_options(p)
    _add_selection_options(p)
    _add_gate_options(p)


def _add_data_options(p: Any) -> None:
    """The data, its label, features and partitions, and the model (or stored scores) to evaluate."""
    p.add_argument("data", help="a Parquet file, a folder of Parquet files, or a hive-partitioned tree")
    p.add_argument("--label", required=True, help="the label column (0/1 or boolean)")
    p.add_argument(
        "--features",
        type=split_csv,
        default=[],
        help="feature columns A,B,... (default with --model-uri: the model's signature)",
    )
    p.add_argument(
        "--partition-by", type=split_csv, default=[], help="partition columns K1,K2 (default: the hive keys)"
    )
    p.add_argument(
        "--slice",
        action="append",
        default=[],
        metavar="SPEC",
        help="report a slicing in a table of its own (repeatable): a column 'region', numeric bins "
        "'age:18,30,45,65', a filter 'country=de', or a cross 'region*age:30,60'; overall is always there",
    )
    p.add_argument("--weight-col", help="weigh each row by this numeric column (finite, >= 0)")
    p.add_argument(
        "--late-labels",
        action="store_true",
        help="a null label has not arrived: report those rows as estimated (expected BCE) beside the labelled ones "
        "(a partition without any label is always estimated)",
    )
    p.add_argument(
        "--model-uri",
        help="evaluate this MLflow model (runs:/..., models:/name/1, models:/name@alias) instead of fitting: "
        "scikit-learn, XGBoost, LightGBM, CatBoost or any pyfunc",
    )
    p.add_argument("--score-col", help="evaluate predictions already stored in this column (no model)")
    p.add_argument(
        "--score-kind",
        choices=["probability", "logit"],
        default="probability",
        help="what --score-col, or a generic pyfunc model's output, holds: P(y=1) (clipped as log_loss clips) or a "
        "logit (exact BCE)",
    )


def _add_run_options(p: Any) -> None:
    """The MLflow run, the fit, how the rows are split into tasks and where they run, the audit pass."""
    p.add_argument("--experiment", default="bce-evaluation", help="MLflow experiment (default: bce-evaluation)")
    p.add_argument("--run-name", help="MLflow run name (default: data, model and time)")
    p.add_argument(
        "--C", dest="C", type=float, help="LogisticRegression's inverse regularisation strength (default 1.0)"
    )
    p.add_argument("--max-iter", type=int, help="LogisticRegression's max_iter (default 100)")
    p.add_argument(
        "--chunk-rows",
        type=int,
        help="rows per task, whole partitions (default 64,000,000; 4,000,000 with --auc exact, --audit or --dask)",
    )
    p.add_argument(
        "--fit",
        choices=["sklearn", "streaming"],
        default="sklearn",
        help="streaming: exact L-BFGS fit over chunks, for data larger than memory",
    )
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the partition work on Dask: a scheduler address (tcp://host:8786) or 'local'",
    )
    p.add_argument("--dask-workers", type=int, help="workers of --dask local (default 2)")
    p.add_argument(
        "--audit",
        action="store_true",
        help=(
            "one more pass: BCE three ways (exact, sklearn's and Keras' clipping), saturation, calibration split, "
            "largest losses"
        ),
    )


def _add_cache_options(p: Any) -> None:
    """The per-partition cache, and --auc, whose method is part of each cached partition's key."""
    p.add_argument("--full", action="store_true", help="recompute every partition, ignoring cached results")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the per-partition cache")
    p.add_argument(
        "--verify-cache",
        action="store_true",
        help="re-hash the bytes of every cached file's column chunks and recompute any partition whose bytes changed "
        "(for copies that keep every file attribute)",
    )
    p.add_argument(
        "--auc",
        choices=["binned", "exact"],
        default="binned",
        help="ROC AUC per partition: from 4096-bin histograms with a stated bound (default), or exact from ranks (a "
        "sort per partition)",
    )


def _add_registry_options(p: Any) -> None:
    reg = p.add_argument_group("registry")
    reg.add_argument("--register", metavar="NAME", help="register the fitted model as a new version of NAME")
    reg.add_argument("--alias", help="with --register: set this alias (e.g. champion) on the new version")


def _add_selection_options(p: Any) -> None:
    sel = p.add_argument_group("partition selection (for scheduled runs)")
    sel.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="keep hive partitions whose KEY is one of the values (repeatable)",
    )
    sel.add_argument("--date-key", help="hive key holding an ISO date (YYYY-MM-DD)")
    sel.add_argument(
        "--window-days", type=int, help="with --date-key: evaluate the last N days up to the scheduled time (or now)"
    )


def _add_gate_options(p: Any) -> None:
    gate = p.add_argument_group("quality gate (a failure exits 3 after logging the whole evaluation)")
    gate.add_argument("--max-bce", type=float, help="fail when the overall BCE exceeds this")
    gate.add_argument("--max-partition-bce", type=float, help="fail when any partition's BCE exceeds this")
    gate.add_argument("--max-regression", type=float, help="fail when BCE exceeds the baseline run's by more than this")
    gate.add_argument("--baseline-run", help="MLflow run id of the baseline evaluation (for --max-regression)")
    gate.add_argument(
        "--max-drift",
        type=float,
        metavar="K",
        help=(
            "fail when the overall or a partition's BCE leaves the band of its own series (median ± K robust σ over "
            "earlier runs; 3 flags without failing)"
        ),
    )
    gate.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="'FIGURE OP BOUND [SCOPE]'",
        help="a gate on any figure (repeatable): 'roc_auc >= 0.7 per partition', 'brier <= 0.2', "
        "'accuracy >= -0.01 vs baseline' (with --baseline-run), 'bce drift <= 3'; add 'on point' or 'on interval'",
    )
    gate.add_argument(
        "--min-rows", type=int, default=1, help="partitions with fewer rows are reported as too small, not judged"
    )
    gate.add_argument(
        "--min-class-rows",
        type=int,
        default=0,
        help="partitions with fewer positives or negatives are too small to judge",
    )
    gate.add_argument(
        "--judge-on",
        choices=["interval", "point"],
        default="interval",
        help="fail a partition when its whole 95%% interval is above the threshold (default), or its point BCE",
    )
    gate.add_argument(
        "--threshold", type=float, default=0.5, help="decide p >= this: precision, recall, F1, FPR (default 0.5)"
    )
    gate.add_argument(
        "--also-at",
        metavar="T1,T2",
        default=None,
        help="more thresholds: their confusion counts, precision, recall, F1 and FPR beside the threshold's",
    )
    gate.add_argument("--at-fpr", type=float, default=0.1, help="report the recall at this false-positive rate")
    gate.add_argument("--costs", default=None, metavar="fp=C,fn=C", help="the expected cost and the best threshold")
    gate.add_argument(
        "--fdr",
        type=float,
        default=0.05,
        metavar="LEVEL",
        help="'per slice' gates fail the slices Benjamini-Hochberg rejects at this false discovery rate (default 0.05)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bce-eval",
        description="Binary cross-entropy evaluation of binary classifiers, as Prefect flows logged to MLflow.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Prefect's lines about each flow and task run, full tracebacks and all warnings",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # argparse lists subcommands in the order they are added: these calls keep --help's order
    _add_evaluate(sub)
    sub.add_parser("demo", help="run the seed article's examples and the partitioned demo dataset")
    _add_circles(sub)
    _add_serve(sub)
    _add_compare(sub)
    _add_ui(sub)
    _add_example_models(sub)
    _add_stack(sub)
    return parser


def _add_circles(sub: Any) -> None:
    circles = sub.add_parser("circles", help="the seed's MLP on two circles, learning curves logged per epoch")
    circles.add_argument(
        "--epochs", type=int, default=200, help="training epochs of the MLP (default 200, as the seed)"
    )
    circles.add_argument("--experiment", default="bce-circles", help="MLflow experiment (default: bce-circles)")


def _add_serve(sub: Any) -> None:
    serve = sub.add_parser(
        "serve", help="serve the evaluation flow on a cron schedule (flow.serve); takes evaluate's options"
    )
    _add_evaluate_options(serve)
    serve.add_argument("--cron", required=True, help='cron schedule, e.g. "0 2 * * *" (every night at 02:00)')
    serve.add_argument("--name", default="nightly", help="deployment name (default: nightly)")


def _add_compare(sub: Any) -> None:
    cmp_ = sub.add_parser(
        "compare", help="champion vs challenger on the same data: the paired BCE difference with a 95%% interval"
    )
    cmp_.add_argument(
        "data", help="a Parquet file, a folder of Parquet files, or a hive-partitioned tree (local or s3://)"
    )
    cmp_.add_argument("--label", required=True, help="the label column (0/1 or boolean)")
    cmp_.add_argument("--champion", required=True, help="MLflow URI, e.g. models:/churn@champion")
    cmp_.add_argument("--challenger", required=True, help="MLflow URI, e.g. models:/churn/7")
    cmp_.add_argument(
        "--features", type=split_csv, default=[], help="feature columns A,B,... (default: the models' signatures)"
    )
    cmp_.add_argument(
        "--partition-by", type=split_csv, default=[], help="partition columns K1,K2 (default: the hive keys)"
    )
    cmp_.add_argument("--slice", action="append", default=[], metavar="SPEC", help="a paired table per slice")
    cmp_.add_argument("--weight-col", help="weigh each row by this numeric column (finite, >= 0)")
    cmp_.add_argument("--experiment", default="bce-comparison", help="MLflow experiment (default: bce-comparison)")
    cmp_.add_argument(
        "--promote", action="store_true", help="move the champion alias to the challenger when it is better by --margin"
    )
    cmp_.add_argument("--margin", type=float, default=0.0, help="required BCE improvement (default 0)")
    cmp_.add_argument("--min-rows", type=int, default=30, help="partitions with fewer rows get no verdict")
    cmp_.add_argument(
        "--max-regression",
        type=float,
        help="gate: exit 3 when the challenger is surely worse by more than this (paired interval)",
    )


def _add_ui(sub: Any) -> None:
    ui = sub.add_parser("ui", help="start MLflow's UI on the local store (127.0.0.1 by default)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument("--backend-store-uri", help="default: MLFLOW_TRACKING_URI, else the repo's mlflow/mlflow.db")


def _add_example_models(sub: Any) -> None:
    examples = sub.add_parser(
        "example-models",
        help="fit and register one example model per flavour on the demo data, to try --model-uri with",
    )
    examples.add_argument("--data", default="data/demo", help="the demo data's folder (default: data/demo)")
    examples.add_argument("--alias", default="champion", help="alias set on each new version (default: champion)")


def _add_stack(sub: Any) -> None:
    stack = sub.add_parser(
        "stack",
        help="the team stack on this machine: PostgreSQL, an S3 server, MLflow and Prefect servers, a worker, a Dask "
        "cluster",
    )
    stack.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="up: start what is not running and wait for it; down: stop what up started (data kept); status",
    )
    stack.add_argument(
        "--home",
        help="the stack's folder: databases, saved objects, logs, env file (default: BCE_EVAL_STACK_HOME, else .stack "
        "in the repo)",
    )


def build_settings(cls: "type[M]", values: dict[str, Any]) -> "M":
    """``cls(**values)``, a validation error as one :class:`InputError` line (:func:`flows.settings.build_settings`)."""
    from flows.settings import build_settings as build

    return build(cls, values)


def evaluate_settings(args: argparse.Namespace) -> "EvaluateSettings":
    """The settings of ``evaluate``/``serve``; every rule between options is the settings model's."""
    from flows.settings import EvaluateSettings

    params = {k: v for k, v in (("C", args.C), ("max_iter", args.max_iter)) if v is not None}
    where: dict[str, list[str]] = {}
    for item in args.where:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise InputError(f"--where {item!r}: expected KEY=V1,V2.")
        where.setdefault(key.strip(), []).extend(split_csv(values))
    values: dict[str, Any] = dict(
        data=args.data,
        label=args.label,
        features=args.features,
        partition_by=args.partition_by,
        slices=args.slice,
        weight_col=args.weight_col,
        late_labels=args.late_labels,
        model_uri=args.model_uri,
        score_col=args.score_col,
        score_kind=args.score_kind,
        model_params=params,
        experiment=args.experiment,
        run_name=args.run_name,
        chunk_rows=args.chunk_rows,
        threshold=args.threshold,
        also_at=args.also_at or [],
        at_fpr=args.at_fpr,
        costs=args.costs or {},
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
            max_drift=args.max_drift,
            rules=args.gate,
            min_rows=args.min_rows,
            min_class_rows=args.min_class_rows,
            judge_on=args.judge_on,
            fdr_level=args.fdr,
        ),
    )
    if args.dask_workers is not None:  # else the settings' default
        values["dask_workers"] = args.dask_workers
    return build_settings(EvaluateSettings, values)
