"""What the circles run (:mod:`tasks.seed.circles`, the seed's second experiment) logs at its end."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl

from tasks.tracking.content import DatasetRef, RunContent, encode_figures


def circles_content(
    experiment: str,
    run_name: str,
    result: Any,
    figure: Any,
    train_path: str,
    test_path: str,
    train: pl.DataFrame,
    test: pl.DataFrame,
    random_state: int,
) -> RunContent:
    """What the circles run logs at its end (the per-epoch curves were streamed already)."""
    X_example = train.select("x1", "x2").head(20).to_pandas()
    refs = []
    for path, df, context in ((train_path, train, "training"), (test_path, test, "evaluation")):
        digest = hashlib.blake2b(df.write_ipc(None).getvalue(), digest_size=16).hexdigest()
        refs.append(DatasetRef(path, Path(path).stem, digest, df.head(5).to_pandas(), context))
    final = result.final
    return RunContent(
        experiment=experiment,
        run_name=run_name,
        params={
            **{f"mlp.{k}": v for k, v in result.model.get_params().items()},
            "epochs": len(result.history["train_loss"]),
            "random_state": random_state,
            "data": "make_circles(n_samples=1000, noise=0.1, random_state=1); rows 0-499 train, 500-999 test",
        },
        metrics={
            "final_train_loss": final["train_loss"],
            "final_val_loss": final["val_loss"],
            "final_train_accuracy": final["train_accuracy"],
            "final_val_accuracy": final["val_accuracy"],
            "training_seconds": result.seconds,
        },
        description=(
            f"Seed article's MLP on two circles, {len(result.history['train_loss'])} epochs: "
            f"**Train: {final['train_accuracy']:.3f}, Test: {final['val_accuracy']:.3f}** (accuracy); "
            f"final BCE train {final['train_loss']:.4f}, test {final['val_loss']:.4f}."
        ),
        figures=encode_figures({"plots/learning_curves.png": figure}),
        model=result.model,
        model_input_example=X_example,
        model_output_example=result.model.predict_proba(X_example.to_numpy()),
        datasets=refs,
    )
