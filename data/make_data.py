"""Write the datasets shipped in data/ (deterministic: re-running reproduces the same files).

- ``seed_points.parquet``: the seed article's 10 points (x, y).
- ``demo/region=<name>/part-0.parquet``: a small hive-partitioned dataset of three features whose
  regions differ in difficulty (label noise from 2% to 30%), plus one small single-class region.

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


def main() -> None:
    make_seed_points().write_parquet(HERE / "seed_points.parquet")
    demo = HERE / "demo"
    shutil.rmtree(demo, ignore_errors=True)
    for region, df in make_demo().items():
        folder = demo / f"region={region}"
        folder.mkdir(parents=True)
        df.write_parquet(folder / "part-0.parquet")
    print(f"wrote {HERE / 'seed_points.parquet'} and {demo}")


if __name__ == "__main__":
    main()
