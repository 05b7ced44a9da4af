"""What one MLflow run holds, as the tracking adapter takes it: its values, tables, figures (PNG
bytes, encoded here once), texts, model and dataset inputs. :mod:`tasks.review.run_content`,
:mod:`tasks.review.comparison_content` and :mod:`tasks.seed.circles_run` fill it in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DatasetRef:
    """A dataset input of a run: where it is, a digest of its content, its schema, its role."""

    source: str
    name: str
    digest: str
    schema: Any = None  # a few rows (pandas) whose column types become the dataset's schema
    context: str = "evaluation"


@dataclass
class RunContent:
    """Everything one run logs to MLflow (written by :class:`tasks.tracking.adapter.MlflowTracker`)."""

    experiment: str
    run_name: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    partition_metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    tables: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)  # artifact path -> PNG
    model: Any = None
    model_input_example: Any = None
    model_output_example: Any = None
    datasets: list[DatasetRef] = field(default_factory=list)
    text_artifacts: dict[str, str] = field(default_factory=dict)
    register: tuple[str, str | None] | None = None  # (registered model name, alias)
    results_path: str | None = None  # where the computed results were saved before logging


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG, encoded once: the report embeds the same bytes the run logs as its artifact."""
    cached = getattr(fig, "_bce_eval_png", None)
    if cached is None:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        cached = fig._bce_eval_png = buf.getvalue()
    return cached


def encode_figures(figures: dict[str, Any]) -> dict[str, bytes]:
    """Each figure's PNG (:func:`png_bytes`: the bytes the report embeds), by artifact path."""
    return {name: png_bytes(fig) for name, fig in figures.items()}
