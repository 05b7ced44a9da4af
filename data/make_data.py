"""Write the datasets shipped in data/ (deterministic: re-running reproduces the same files).

- ``seed_points.parquet``: the seed article's 10 points (x, y).
- ``demo/region=<name>/part-0.parquet``: a small hive-partitioned dataset of three features whose
  regions differ in difficulty (label noise from 2% to 30%), plus one small single-class region.
- ``scored/part-0.parquet``: predictions scored elsewhere: the demo's labels ``y`` beside another
  model's probability ``p_model`` (a logistic model with other weights), for ``--score-col``.
- ``events.parquet``: one file of click events whose partitions are columns inside it (``country``,
  ``day``), for ``--partition-by`` and ``--slice``: ``clicked`` from a logistic model of ``a`` and ``b``, and a
  ``weight`` for ``--weight-col`` (a non-click stands for four, as after subsampling negatives).
- ``late/day=<day>/part-0.parquet``: three days of click events as the third night sees them, for
  ``--late-labels``: the first day's clicks all known, half of the second day's, none of the third's (null).

Run: ``python data/make_data.py`` (from the repo root).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent

SEED_X = [-2.2, -1.4, -0.8, 0.2, 0.4, 0.8, 1.2, 2.2, 2.9, 4.6]
SEED_Y = [0, 0, 1, 0, 1, 1, 1, 1, 1, 1]

# region -> (rows, label-noise rate, feature shift)
REGIONS = {
    "north": (1500, 0.02, 0.0),
    "south": (1200, 0.08, 0.5),
    "east": (1000, 0.15, -0.5),
    "west": (800, 0.30, 0.0),
    "central": (2000, 0.05, 1.0),
    "island": (40, None, 0.0),  # all negatives: BCE is defined, ROC AUC is not
}
WEIGHTS = np.array([1.5, -2.0, 0.75])
BIAS = 0.25


def make_seed_points() -> pl.DataFrame:
    """The seed's 10 points."""
    return pl.DataFrame({"x": SEED_X, "y": SEED_Y}, schema={"x": pl.Float64, "y": pl.Int64})


def make_demo(seed: int = 7) -> dict[str, pl.DataFrame]:
    """One frame per region of the demo dataset."""
    rng = np.random.default_rng(seed)
    out = {}
    for region, (n, noise, shift) in REGIONS.items():
        X = rng.normal(loc=shift, scale=1.0, size=(n, 3))
        p = 1.0 / (1.0 + np.exp(-(X @ WEIGHTS + BIAS)))
        y = (rng.random(n) < p).astype(np.int64)
        if noise is None:
            y[:] = 0
        else:
            flip = rng.random(n) < noise
            y = np.where(flip, 1 - y, y)
        out[region] = pl.DataFrame({"f1": X[:, 0], "f2": X[:, 1], "f3": X[:, 2], "label": y})
    return out


#: the other model whose probabilities data/scored holds (weights a little off the demo's)
SCORED_WEIGHTS = np.array([1.2, -1.6, 0.5])
SCORED_BIAS = 0.1


def make_scored(demo: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The demo's labels with another model's probability of class 1 (``y``, ``p_model``)."""
    rows = pl.concat(list(demo.values()))
    X = rows.select("f1", "f2", "f3").to_numpy()
    p = 1.0 / (1.0 + np.exp(-(X @ SCORED_WEIGHTS + SCORED_BIAS)))
    return pl.DataFrame({"y": rows.get_column("label"), "p_model": p})


def make_events(n: int = 600, seed: int = 8) -> pl.DataFrame:
    """Click events, partitioned by columns inside the file (country, day)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    clicked = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * a - b)))).astype(np.int64)
    country = rng.choice(["de", "fr", "nl"], size=n)
    day = rng.choice(["2026-11-23", "2026-11-24"], size=n)
    # as if one in four non-clicks had been kept: each stands for four (--weight-col weight)
    weight = np.where(clicked == 1, 1.0, 4.0)
    return pl.DataFrame({"clicked": clicked, "a": a, "b": b, "country": country, "day": day, "weight": weight})


#: the days of data/late: each day's share of clicks known on the third night
LATE_DAYS = {"2026-11-23": 1.0, "2026-11-24": 0.5, "2026-11-25": 0.0}


def make_late(n: int = 300, seed: int = 9) -> dict[str, pl.DataFrame]:
    """Click events of three days, their labels as they stand on the third night (null: not known yet)."""
    rng = np.random.default_rng(seed)
    out = {}
    for day, known in LATE_DAYS.items():
        a, b = rng.normal(size=n), rng.normal(size=n)
        clicked = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * a - b)))).astype(np.int64)
        arrived = np.arange(n) < round(known * n)
        out[day] = pl.DataFrame({"clicked": np.where(arrived, clicked, 0), "a": a, "b": b}).with_columns(
            pl.when(pl.Series(arrived)).then(pl.col("clicked")).otherwise(None).alias("clicked")
        )
    return out


def main() -> None:
    make_seed_points().write_parquet(HERE / "seed_points.parquet")
    demo = HERE / "demo"
    shutil.rmtree(demo, ignore_errors=True)
    regions = make_demo()
    for region, df in regions.items():
        folder = demo / f"region={region}"
        folder.mkdir(parents=True)
        df.write_parquet(folder / "part-0.parquet")
    (HERE / "scored").mkdir(exist_ok=True)
    make_scored(regions).write_parquet(HERE / "scored" / "part-0.parquet")
    make_events().write_parquet(HERE / "events.parquet")
    late = HERE / "late"
    shutil.rmtree(late, ignore_errors=True)
    for day, df in make_late().items():
        (late / f"day={day}").mkdir(parents=True)
        df.write_parquet(late / f"day={day}" / "part-0.parquet")
    print(f"wrote {HERE / 'seed_points.parquet'}, {demo}, {HERE / 'scored'}, {HERE / 'events.parquet'} and {late}")


if __name__ == "__main__":
    main()
