"""The model seam's loading side: load a logged model by its flavour.

A logged model is downloaded once (against the tracking URI given, never a process-wide one): its
``MLmodel`` file names its flavours and holds its signature (input names and types); the first
flavour in :data:`tasks.models.flavors.FLAVORS` that it has loads and checks it. Its identity for the cache
is a digest of its artifact files (what scores), never a pickle of the loaded object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.errors import InputError
from tasks.models.flavors import FLAVORS, ModelFlavor
from tasks.models.scoring import ScoreKind, Scorer, model_type_name

if TYPE_CHECKING:
    from tasks.data.dataset import Dataset


def _download(model_uri: str, tracking_uri: str, into: str) -> str:
    """The model's artifacts in a local folder, resolved against this tracking and registry URI."""
    from mlflow.exceptions import MlflowException

    from tasks.tracking.adapter import (
        MlflowTracker,  # (here: neither module imports the other at module level)
    )

    try:
        return MlflowTracker(tracking_uri).download_model(model_uri, into)
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--model-uri {model_uri}: cannot load the model ({first}).") from exc


@dataclass(frozen=True)
class ModelInputs:
    """The columns a logged model's signature names, with their MLflow types."""

    names: tuple[str, ...]
    types: tuple[str, ...]

    def by_name(self) -> dict[str, str]:
        return dict(zip(self.names, self.types))


@dataclass(frozen=True)
class LoadedModel:
    """A logged model, loaded and checked: what it is, what it takes, and how it is scored."""

    uri: str
    flavor: ModelFlavor
    #: the flavour's checked model (a scikit-learn estimator, or a :class:`tasks.models.scoring.BatchModel`)
    model: Any
    inputs: ModelInputs | None
    #: xxh3-128 of the artifact files: the model's identity for the cache
    digest: str
    #: the input example logged with the model, if any (a pyfunc's output is checked on it)
    example: Any = field(default=None, compare=False)

    @property
    def type_name(self) -> str:
        inner = getattr(self.model, "model", None) or getattr(self.model, "booster", None)
        return model_type_name(inner if inner is not None else self.model)

    def scorer(self, features: tuple[str, ...] | list[str], text_features: tuple[str, ...] | set[str] = ()) -> Scorer:
        """How the pass scores this model on ``features`` (``text_features`` go in as text)."""
        try:
            return self.flavor.scorer(
                self.model, tuple(features), self.digest, bool(set(text_features) & set(features))
            )
        except InputError as exc:
            if self.uri in str(exc):
                raise
            raise InputError(f"model {self.uri}: {exc}") from exc

    def features(self, given: tuple[str, ...] | list[str] = ()) -> list[str]:
        """The columns it is scored on: ``given`` (``--features``), else its signature's, else none."""
        return list(given) or (list(self.inputs.names) if self.inputs else [])

    def tags(self, scorer: Scorer) -> dict[str, str]:
        """What was evaluated, for the MLflow run: flavour, artifact digest, how scores were obtained."""
        return {"model_flavor": self.flavor.name, "model_digest": self.digest, "score_method": scorer.description}


def _artifact_digest(local: str) -> str:
    """xxh3-128 over the model's files (relative path and bytes, in path order)."""
    import os

    import xxhash

    h = xxhash.xxh3_128()
    for folder, dirs, files in sorted(os.walk(local)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, local).encode() + b"\0")
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def _inputs_of(mlmodel: Any) -> ModelInputs | None:
    sig = mlmodel.signature
    if sig is None or sig.inputs is None:
        return None
    names = sig.inputs.input_names()
    if not names or not all(isinstance(n, str) for n in names):
        return None
    types = tuple(
        getattr(getattr(spec, "type", None), "name", str(getattr(spec, "type", ""))) for spec in sig.inputs.inputs
    )
    return ModelInputs(tuple(names), types)


def _flavor_of(flavors: set[str], model_uri: str) -> ModelFlavor:
    for flavor in FLAVORS:
        if flavor.name in flavors:
            return flavor
    raise InputError(
        f"--model-uri {model_uri}: its flavours {sorted(flavors)} are not supported; "
        f"bce-eval loads {', '.join(f.name for f in FLAVORS)} models."
    )


def load_model(model_uri: str, tracking_uri: str, score_kind: ScoreKind = "probability") -> LoadedModel:
    """Load a binary 0/1 classifier from MLflow (``runs:/…``, ``models:/name/1``, ``models:/name@alias``).

    One download: the flavour, the signature, the input example and the digest come from it.
    ``score_kind`` says what a generic pyfunc's output is. Raises :class:`InputError` naming the
    URI when it cannot be loaded, no flavour here reads it, or it is not such a classifier.
    """
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="bce-eval-model-") as tmp:
        local = _download(model_uri, tracking_uri, tmp)
        mlmodel = Model.load(local)
        flavor = _flavor_of(set(mlmodel.flavors), model_uri)
        model = flavor.load(local, model_uri, score_kind)
        try:
            example = mlmodel.load_input_example(local)
        except (OSError, ValueError, KeyError, MlflowException):  # unreadable: the probe reads data rows instead
            example = None
        return LoadedModel(model_uri, flavor, model, _inputs_of(mlmodel), _artifact_digest(local), example)


def check_model_output(loaded: LoadedModel, dataset: "Dataset") -> None:
    """Refuse, before the pass, a generic pyfunc whose output is labels or not probabilities.

    It is called on the model's logged input example, or else on the first 256 rows of the
    dataset's first file (a pyfunc's output can only be seen by calling it). Other flavours were
    checked when loaded.
    """
    import polars as pl

    from tasks.data.dataset import scan_files

    probe = getattr(loaded.model, "probe", None)
    if probe is None:
        return
    features = list(dataset.features)
    example = loaded.example
    if example is not None and hasattr(example, "columns") and set(features) <= set(example.columns):
        sample = pl.from_pandas(example[features])
    else:
        sample = scan_files(dataset, dataset.files[:1]).select(features).head(256).collect()
    probe(sample)


def model_inputs(model_uri: str, tracking_uri: str) -> ModelInputs | None:
    """The input columns and types of the logged model's signature, if it has one with names."""
    return load_model(model_uri, tracking_uri).inputs


def model_feature_names(model_uri: str, tracking_uri: str) -> list[str] | None:
    """The input column names in the logged model's signature, if it has one."""
    inputs = model_inputs(model_uri, tracking_uri)
    return list(inputs.names) if inputs is not None else None
