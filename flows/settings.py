"""The one settings model per flow (built by the CLI, or by a deployment's parameters)."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from tasks.data.slicing import Slicing, parse_slicing
from tasks.errors import InputError
from tasks.judge.gates import GateSettings
from tasks.metrics.decisions import Decisions


def split_commas(v: Any) -> Any:
    """``"a,b"`` → ``["a", "b"]``, so a deployment's parameters may spell column lists either way."""
    if isinstance(v, str):
        return [c.strip() for c in v.split(",") if c.strip()]
    return v


def parse_costs(v: Any) -> Any:
    """``"fp=1,fn=5"`` → ``{"fp": 1.0, "fn": 5.0}``: the cost of a false positive and of a false negative."""
    if isinstance(v, str):
        pairs = [p.partition("=") for p in v.split(",") if p.strip()]
        try:
            v = {k.strip(): float(x) for k, sep, x in pairs if sep}
        except ValueError:
            v = None
        if v is None or set(v) != {"fp", "fn"} or len(pairs) != 2:
            raise ValueError("--costs: expected fp=COST,fn=COST (e.g. fp=1,fn=5), the cost of each kind of error.")
    if v and (set(v) != {"fp", "fn"} or min(v.values()) < 0):
        raise ValueError("--costs: give both fp and fn, each a cost ≥ 0 (e.g. fp=1,fn=5).")
    return v


def check_slice_specs(v: list[str]) -> list[str]:
    """Each ``--slice`` spec reads (:func:`tasks.data.slicing.parse_slicing`'s one line when one does not)."""
    for text in v:
        try:
            parse_slicing(text)
        except InputError as exc:
            raise ValueError(str(exc)) from None
    return v


class EvaluateSettings(BaseModel):
    """Parameters of one evaluation: what data, which model, where the results go."""

    data: str = Field(description="A Parquet file, a folder of them, or a hive-partitioned tree.")
    label: str = Field(description="The 0/1 (or boolean) label column.")
    features: list[str] = Field(default_factory=list, description="Feature columns, in the model's order.")
    partition_by: list[str] = Field(default_factory=list, description="Partition columns (default: hive keys).")
    slices: list[str] = Field(
        default_factory=list,
        description="Slicings, each reported in a table of its own: a column ('region'), numeric bins "
        "('age:18,30,45,65'), a value filter ('country=de'), or a cross of them ('region*age:30,60').",
    )
    weight_col: str | None = Field(default=None, description="Weigh each row by this numeric column (finite, >= 0).")
    late_labels: bool = Field(
        default=False,
        description="A null label has not arrived yet: a partition with some labels is realized on them and estimated "
        "on the rest (a partition without any label is always estimated).",
    )
    model_uri: str | None = Field(default=None, description="Evaluate this MLflow model instead of fitting one.")
    score_col: str | None = Field(default=None, description="Evaluate predictions stored in this column.")
    score_kind: Literal["logit", "probability"] = "probability"
    model_params: dict[str, Any] = Field(default_factory=dict, description="LogisticRegression overrides.")
    experiment: str = "bce-evaluation"
    run_name: str | None = None
    chunk_rows: int | None = Field(
        default=None,
        gt=0,
        description="Rows per task (whole partitions). Default: 4,000,000 where a task holds its rows "
        "(--auc exact, --audit) or spreads work over Dask workers; else 64,000,000 (the streaming pass holds one "
        "batch).",
    )
    fit: Literal["sklearn", "streaming"] = Field(
        default="sklearn", description="sklearn: in memory; streaming: exact L-BFGS over chunks, bounded memory."
    )
    dask: str | None = Field(
        default=None, description="Run the partition work on Dask: a scheduler address, or 'local' for a local cluster."
    )
    dask_workers: int = Field(default=2, ge=1, description="Workers of a local Dask cluster.")
    audit: bool = Field(
        default=False, description="One more pass: BCE three ways, saturation, calibration split, largest losses."
    )
    cache: bool = Field(
        default=True,
        description="Reuse and store per-partition results (keyed by model, file content, metric version).",
    )
    full: bool = Field(default=False, description="Ignore cached results (they are still written).")
    verify_cache: bool = Field(
        default=False,
        description="Re-hash the bytes of every cached file's column chunks and recompute any partition whose bytes "
        "changed (for copies that keep every file attribute).",
    )
    auc: Literal["binned", "exact"] = Field(
        default="binned",
        description="ROC AUC per partition from 4096-bin histograms with a stated bound, or exact from ranks (a sort "
        "per partition). Overall AUC is always binned.",
    )
    sample_rows: int = Field(default=5000, gt=0, description="Rows sampled for the row-level plots.")
    threshold: float = Field(default=0.5, ge=0, le=1, description="Decide p ≥ this: precision, recall, F1, FPR.")
    at_fpr: float = Field(default=0.1, gt=0, lt=1, description="Report the recall at this false-positive rate.")
    also_at: list[float] = Field(
        default_factory=list,
        description="More thresholds whose decision figures are reported beside the threshold's (at_<t>/precision…).",
    )
    costs: dict[str, float] = Field(
        default_factory=dict, description="Costs of errors, 'fp=1,fn=5': the expected cost and the best threshold."
    )
    max_partition_metrics: int = Field(
        default=1000, ge=0, description="Per-partition MLflow metrics up to this many partitions."
    )
    register_name: str | None = Field(
        default=None, description="Register the fitted model as a new version of this name."
    )
    register_alias: str | None = Field(default=None, description="Alias to set on the new version (e.g. champion).")
    gates: GateSettings = Field(default_factory=GateSettings)
    where: dict[str, list[str]] = Field(
        default_factory=dict, description="Keep hive partitions whose key has one of these values."
    )
    date_key: str | None = Field(
        default=None, description="Hive key holding an ISO date, for a window of recent partitions."
    )
    window_days: int | None = Field(
        default=None, ge=1, description="Days up to the scheduled time (or now) to evaluate."
    )

    _split = field_validator("features", "partition_by", mode="before")(split_commas)
    _slicings_read = field_validator("slices")(check_slice_specs)
    _costs_read = field_validator("costs", mode="before")(parse_costs)
    _also_read = field_validator("also_at", mode="before")(
        lambda v: [v] if isinstance(v, int | float) else split_commas(v)
    )

    @field_validator("also_at")
    @classmethod
    def _thresholds_in_range(cls, values: list[float]) -> list[float]:
        """Each further threshold is a probability, as the threshold is."""
        bad = [v for v in values if not 0 <= v <= 1]
        if bad:
            raise ValueError(f"--also-at {bad[0]!r}: not a threshold between 0 and 1; pass probabilities like 0.3,0.7.")
        return values

    @model_validator(mode="after")
    def _settings_agree(self) -> "EvaluateSettings":
        """Rules between two settings, checked here so the CLI, ``serve`` and a deployment's runs all get them.

        Each message names the CLI options, then the settings a deployment's parameters spell.
        Rules on a setting that has a default (``dask_workers``, ``score_kind``) compare with that
        default: a dumped-and-reloaded settings object (a served deployment) must still be valid.
        """
        for rule in (self._model_rules, self._fit_rules, self._run_rules, self._slice_rules):
            message = rule()
            if message:
                raise ValueError(message)
        return self

    def _model_rules(self) -> str | None:
        """What is evaluated: a model, stored scores, or a fit, and the columns around it."""
        fits = not self.model_uri and not self.score_col
        if self.score_col and self.model_uri:
            return "pass either --score-col or --model-uri, not both (settings: score_col or model_uri)."
        if fits and not self.features:
            return (
                "--features is required when fitting a model (or pass --model-uri / --score-col) "
                "(settings: features, or model_uri / score_col)."
            )
        if self.label in self.features:
            return (
                f"--features includes the label column {self.label!r}; drop it from --features (settings: features "
                "contains label)."
            )
        if self.score_col is not None and self.score_col == self.label:
            return (
                f"--score-col {self.score_col!r} is the label column; pass the column holding the predictions "
                "(settings: score_col equals label)."
            )
        if self.score_kind != "probability" and not self.score_col and not self.model_uri:
            return (
                f"--score-kind {self.score_kind} says what --score-col (or a pyfunc model's output) holds; pass "
                "--score-col "
                "COLUMN or --model-uri, or drop --score-kind (settings: score_kind needs score_col or model_uri)."
            )
        return None

    def _fit_rules(self) -> str | None:
        """Options that only mean something when this run fits the model."""
        fits = not self.model_uri and not self.score_col
        if self.register_alias and not self.register_name:
            return "--alias needs --register NAME (settings: register_alias needs register_name)."
        if self.register_name and not fits:
            return (
                "--register registers a fitted model; it cannot be used with --model-uri or --score-col "
                "(settings: register_name with model_uri or score_col)."
            )
        if self.fit == "streaming" and not fits:
            return (
                "--fit streaming fits a model; it cannot be used with --model-uri or --score-col "
                "(settings: fit=streaming with model_uri or score_col)."
            )
        if self.model_params and not fits:
            given = ", ".join(f"{k}={v}" for k, v in sorted(self.model_params.items()))
            return (
                f"--C / --max-iter configure the fitted LogisticRegression (given: {given}); they cannot be used with "
                "--model-uri or --score-col (settings: model_params with model_uri or score_col)."
            )
        return None

    def _slice_rules(self) -> str | None:
        """A gate on slices needs a slicing to judge: without one it would pass, having judged nothing."""
        on_slices = [g for g in self.gates.all_gates() if g.scope == "slice"]
        if on_slices and not self.slices:
            g = on_slices[0]
            return (
                f"--gate '{g.figure} {g.op} {g.bound:g} per slice' judges slices, but no --slice is declared: add "
                "--slice COLUMN, or judge it 'per partition' (settings: a per-slice gate needs slices)."
            )
        return None

    def _run_rules(self) -> str | None:
        """Partition selection, the cluster and the cache."""
        if self.window_days is not None and not self.date_key:
            return (
                "--window-days needs --date-key KEY, the hive key holding each partition's date (settings: "
                "window_days needs date_key)."
            )
        if self.date_key and self.window_days is None:
            return (
                "--date-key needs --window-days N, the number of days up to the scheduled time to evaluate "
                "(settings: date_key needs window_days)."
            )
        if self.dask_workers != type(self).model_fields["dask_workers"].default and self.dask != "local":
            where = (
                f"--dask {self.dask} is a running cluster with its own workers" if self.dask else "no --dask was given"
            )
            return (
                f"--dask-workers sizes the cluster of --dask local, but {where}; drop --dask-workers or pass --dask "
                "local "
                "(settings: dask_workers needs dask='local')."
            )
        if self.auc == "exact" and (self.slices or self.weight_col):
            return (
                "--auc exact ranks the rows of each partition; with --slice or --weight-col ROC AUC comes from "
                "histograms within a stated bound: drop --auc exact (settings: auc=exact with slices or weight_col)."
            )
        if self.verify_cache and not self.cache:
            return (
                "--verify-cache checks the per-partition cache; it cannot be used with --no-cache (settings: "
                "verify_cache needs cache=true)."
            )
        return None

    @property
    def slicings(self) -> tuple[Slicing, ...]:
        """The declared slicings, parsed (each ``--slice``)."""
        return tuple(parse_slicing(text) for text in self.slices)

    @property
    def decisions(self) -> Decisions:
        """The threshold, the FPR recall is read at and the costs, for the decision figures."""
        return Decisions(self.threshold, self.at_fpr, self.costs.get("fp"), self.costs.get("fn"), tuple(self.also_at))

    def rows_per_task(self, holds_rows: bool) -> int:
        """``chunk_rows``, or its default: small when a task holds its rows or Dask spreads the work."""
        if self.chunk_rows:
            return self.chunk_rows
        return 4_000_000 if holds_rows or self.dask else 64_000_000


class CirclesSettings(BaseModel):
    """Parameters of the seed's two-circles experiment."""

    epochs: int = Field(default=200, ge=1, description="Training epochs (one partial_fit pass each).")
    random_state: int = Field(default=1, description="Seed of the network's initialisation and shuffling.")
    experiment: str = "bce-circles"
    run_name: str | None = None
    data_dir: str | None = Field(default=None, description="Where the Parquet split is written (default data/circles).")


class CompareSettings(BaseModel):
    """Parameters of a champion/challenger comparison on the same data."""

    data: str
    label: str
    champion: str = Field(description="MLflow URI of the champion (e.g. models:/churn@champion).")
    challenger: str = Field(description="MLflow URI of the challenger (e.g. models:/churn/7).")
    features: list[str] = Field(default_factory=list)
    partition_by: list[str] = Field(default_factory=list)
    slices: list[str] = Field(default_factory=list, description="Slicings, each with its paired table (see evaluate).")
    weight_col: str | None = Field(default=None, description="Weigh each row by this numeric column (finite, >= 0).")
    late_labels: bool = Field(
        default=False,
        description="A null label has not arrived yet: a partition with some labels is realized on them and estimated "
        "on the rest (a partition without any label is always estimated).",
    )
    experiment: str = "bce-comparison"
    run_name: str | None = None
    promote: bool = Field(
        default=False, description="Move the champion alias to the challenger if it is better by margin."
    )
    margin: float = Field(
        default=0.0, ge=0, description="Required BCE improvement (the interval's upper bound below −margin)."
    )
    alias: str = "champion"
    min_rows: int = Field(default=30, ge=2, description="Partitions with fewer rows get no verdict.")
    max_regression: float | None = Field(
        default=None,
        ge=0,
        description="Gate: fail when the challenger is surely worse (95% paired interval) by more than this, overall "
        "or in a partition.",
    )
    chunk_rows: int = Field(default=4_000_000, gt=0)

    _split = field_validator("features", "partition_by", mode="before")(split_commas)
    _slicings_read = field_validator("slices")(check_slice_specs)

    @property
    def slicings(self) -> tuple[Slicing, ...]:
        """The declared slicings, parsed (each ``--slice``)."""
        return tuple(parse_slicing(text) for text in self.slices)

    @model_validator(mode="after")
    def _settings_agree(self) -> "CompareSettings":
        """Rules between two settings (messages name the CLI options, then the settings)."""
        if self.champion.strip() == self.challenger.strip():
            raise ValueError(
                f"--champion and --challenger are the same model ({self.champion}); pass two different models "
                "(settings: champion equals challenger)."
            )
        if self.margin and not self.promote:
            raise ValueError(
                "--margin is the improvement --promote requires; pass --promote or drop --margin "
                "(settings: margin needs promote)."
            )
        if self.label in self.features:
            raise ValueError(
                f"--features includes the label column {self.label!r}; drop it from --features (settings: features "
                "contains label)."
            )
        return self


M = TypeVar("M", bound=BaseModel)


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
    loc = tuple(p for p in loc if not isinstance(p, int))  # an item of a list setting: the list's option
    path = ".".join(str(p) for p in loc)
    return _OPTION_OF_SETTING.get(path) or "--" + str(loc[-1]).replace("_", "-")


def settings_error(exc: ValidationError) -> InputError:
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


def build_settings(cls: type[M], values: dict[str, Any]) -> M:
    """``cls(**values)``, with a validation error turned into one :class:`InputError` line."""
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise settings_error(exc) from None
