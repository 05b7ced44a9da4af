"""Slices and weights in process: part of ``make bench``.

What declaring slicings (``--slice``) and weights (``--weight-col``) cost, as ratios of wall times
measured in this process in one run (medians of interleaved repeats), on a generated dataset: a
logit column ``z``, a 0/1 ``label``, two key columns inside the files (``region``, 8 values, and
``country``, 25), a numeric ``age`` and a weight ``w`` > 0, in a hive tree of a few partitions of
several files each, rows in no particular order. Each contender is the whole pass to tables:
:func:`tasks.metrics.reduce.reduce_chunk` of every chunk and :func:`tasks.metrics.rollup.summarize_cells`.

1. four slicings (region, country, region×country and overall, always there) against one (region);
2. the same one slicing weighted by ``w`` against unweighted;
3. 1,000 slices (age in 40 bins × 25 countries) against 10 (age in 10 bins);

and, for context, the sliced pass against the plain one (no slices, no weights: the run-based kernel)
and rows per second. Every contender's overall BCE must agree (unweighted ones to 1e-12).

    python -m flows.bench.slices [--rows 4000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: rows of the generated dataset (8 files of 500,000 in 4 partitions)
ROWS = 4_000_000
REGIONS = [f"region{i}" for i in range(8)]
COUNTRIES = [f"c{i:02d}" for i in range(25)]
AGE_LOW, AGE_HIGH = 18.0, 98.0
#: age in 40 bins of 2 years (39 edges) and in 10 bins of 8 years (9 edges)
AGE_40 = "age:" + ",".join(str(e) for e in range(20, 98, 2))
AGE_10 = "age:" + ",".join(str(e) for e in range(26, 98, 8))
#: each contender: its slicings (overall is always reported) and its weight column
CONTENDERS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "plain": ((), None),
    "one": (("region",), None),
    "four": (("region", "country", "region*country"), None),
    "weighted": (("region",), "w"),
    "ten": ((AGE_10,), None),
    "thousand": ((f"{AGE_40}*country",), None),
}
#: (name, numerator, denominator, target)
RATIOS = (
    ("four slicings (region, country, region×country, overall) / one (region)", "four", "one", 1.15),
    ("weights / no weights (one slicing, region)", "weighted", "one", 1.10),
    ("1,000 slices (age in 40 bins × country) / 10 (age in 10 bins)", "thousand", "ten", 1.20),
)


def write_sliced_dataset(
    root: Path, rows: int, partitions: int = 4, files_per_partition: int = 2, seed: int = 0
) -> Path:
    """A hive tree ``part=<i>/f<j>.parquet`` of ``rows`` rows: label, z, region, country, age, w (reused when there)."""
    import polars as pl

    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    files = partitions * files_per_partition
    for k in range(files):
        n = rows // files + (1 if k < rows % files else 0)
        region, country = rng.integers(0, len(REGIONS), n), rng.integers(0, len(COUNTRIES), n)
        age = rng.uniform(AGE_LOW, AGE_HIGH, n)
        truth = 0.3 * (region - 3.5) / 3.5 + 0.02 * (age - 58.0) + rng.normal(0.0, 1.5, n)
        label = (rng.random(n) < 1.0 / (1.0 + np.exp(-truth))).astype(np.int8)
        folder = root / f"part={k // files_per_partition}"
        folder.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(
            {
                "label": label,
                "z": truth + rng.normal(0.0, 0.7, n),
                "region": np.array(REGIONS)[region],
                "country": np.array(COUNTRIES)[country],
                "age": age,
                "w": rng.uniform(0.25, 4.0, n),
            }
        ).write_parquet(folder / f"f{k % files_per_partition}.parquet", statistics=True)
    marker.touch()
    return root


def sliced_pass(dataset: object, slicings: tuple[str, ...], weight: str | None) -> tuple[object, dict, dict]:
    """The whole pass to tables, as the flow runs it: every chunk reduced, then rolled up.

    Returns ``(partition table, overall row, {slicing key: table})``; with neither slicings nor a weight,
    the plain pass (:func:`tasks.metrics.reduce.summarize_records`) and no slicing tables.
    """
    from tasks.data.dataset import group_files
    from tasks.data.slicing import finest_cross, parse_slicing
    from tasks.metrics.reduce import reduce_chunk, summarize_records
    from tasks.metrics.rollup import summarize_cells
    from tasks.models.scoring import stored_scorer

    parsed = [parse_slicing(s) for s in slicings]
    ds = dataclasses.replace(dataset, cells=finest_cross(parsed), weight=weight)
    scorer = stored_scorer("z", "logit")
    records, hists = zip(*(reduce_chunk(ds, scorer, chunk) for chunk in group_files(ds, 64_000_000)))
    if not ds.per_cell:
        table, overall = summarize_records(list(records), list(hists), list(ds.partition_by))
        return table, overall, {}
    return summarize_cells(list(records), list(hists), ds.partition_by, parsed)


def decode_pass(dataset: object, slicings: tuple[str, ...], weight: str | None) -> int:
    """The floor under :func:`sliced_pass`: Polars reading and decoding the columns it reads (text slice columns
    as the pass reads them, as categories), batch by batch, and nothing else. Returns the rows read."""
    import polars as pl

    from tasks.data.slicing import category_expression, parse_slicing, slice_source_columns

    columns = slice_source_columns([parse_slicing(s) for s in slicings])
    text = [c for c in columns if "string" in dataset.schema.get(c, "")]  # as the pass decides (reduce._scan_columns)
    exprs = [pl.col("z"), pl.col("label"), *(category_expression(c) if c in text else pl.col(c) for c in columns)]
    exprs += [pl.col(weight)] if weight else []
    query = pl.scan_parquet([f.path for f in dataset.files], hive_partitioning=False).select(exprs)
    return sum(b.height for b in query.collect_batches())


def median_interleaved(
    contenders: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, float], dict[str, object]]:
    """Each contender's median wall time of ``repeats`` calls after one warm-up call each, and its last result.

    The contenders run in turn, round after round, so drift in the machine's speed (other processes' load on
    shared cores) hits them alike; the median drops a round a neighbour spoiled.
    """
    results = {name: fn() for name, fn in contenders.items()}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, results


def _first_slice(tables: dict, key: str) -> dict[str, object]:
    """The first row of slicing ``key``'s table: its label and the figures a test checks independently."""
    row = tables[key].row(0, named=True)
    return {k: row[k] for k in ("slice", "n_rows", "sum_w", "bce", "roc_auc", "roc_auc_bound")}


def measure_slices(root: Path, repeats: int = 5) -> dict[str, object]:
    """Every contender's median time on ``root`` (:data:`CONTENDERS`), the ratios, and figures to check them by."""
    import polars as pl

    from tasks.data.dataset import discover_dataset

    dataset = discover_dataset(root, "label", [], extra_columns=["z"])
    fns = {name: (lambda s=s, w=w: sliced_pass(dataset, s, w)) for name, (s, w) in CONTENDERS.items()}
    fns |= {f"decode:{name}": (lambda s=s, w=w: decode_pass(dataset, s, w)) for name, (s, w) in CONTENDERS.items()}
    seconds, results = median_interleaved(fns, repeats)
    decode = {name: seconds.pop(f"decode:{name}") for name in CONTENDERS}
    rows = dataset.num_rows
    bce = {name: float(results[name][1]["bce"]) for name in CONTENDERS}
    unweighted = [bce[name] for name, (_, w) in CONTENDERS.items() if w is None]
    return {
        "rows": rows,
        "files": len(dataset.files),
        "threads": pl.thread_pool_size(),
        "repeats": repeats,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "rows_per_s": {k: round(rows / v) for k, v in seconds.items()},
        "ratios": {num: round(seconds[num] / seconds[den], 3) for _, num, den, _ in RATIOS},
        "decode_seconds": {k: round(v, 4) for k, v in decode.items()},
        # the floor: the denominator's pass plus decoding the columns only the numerator reads (a ratio below
        # it would need the pass beyond the decode to cost less with more slices or a weight)
        "floor_ratios": {
            num: round((seconds[den] + decode[num] - decode[den]) / seconds[den], 3) for _, num, den, _ in RATIOS
        },
        # the pass's own work: each wall time less its decode
        "beyond_decode_ratios": {
            num: round((seconds[num] - decode[num]) / (seconds[den] - decode[den]), 3) for _, num, den, _ in RATIOS
        },
        "sliced_over_plain": round(seconds["one"] / seconds["plain"], 3),
        "bce": bce,
        "max_rel_diff_unweighted": max(abs(b - bce["plain"]) / bce["plain"] for b in unweighted),
        "slices": {name: {k: t.height for k, t in results[name][2].items()} for name in CONTENDERS},
        "first_slice": {
            "weighted": _first_slice(results["weighted"][2], "region"),
            "thousand": _first_slice(results["thousand"][2], next(iter(results["thousand"][2]))),
        },
    }


def target_rows(r: dict[str, object]) -> list[tuple[str, str, str, bool | None]]:
    """(measure, result, target, holds) of this section, as :func:`flows.bench.run.print_targets` prints them."""
    sec = r["seconds"]
    rows: list[tuple[str, str, str, bool | None]] = []
    dec = r["decode_seconds"]
    for name, num, den, target in RATIOS:
        ratio = r["ratios"][num]
        rows.append(
            (f"{name} ({sec[num]:.3f} s vs {sec[den]:.3f} s)", f"{ratio:.2f}x", f"<= {target:.2f}x", ratio <= target)
        )
        rows.append(
            (
                f"    floor, with the decode of the columns only it reads ({dec[num]:.3f} s vs {dec[den]:.3f} s "
                "decoding alone); the pass beyond decoding",
                f"{r['floor_ratios'][num]:.2f}x / {r['beyond_decode_ratios'][num]:.2f}x",
                "—",
                None,
            )
        )
    rows.append(
        (
            f"  sliced pass (region) / plain pass, same rows ({sec['one']:.3f} s vs {sec['plain']:.3f} s)",
            f"{r['sliced_over_plain']:.2f}x",
            "—",
            None,
        )
    )
    rps = r["rows_per_s"]
    rows.append(
        (
            f"  rows/s, {r['rows']:,} rows in {r['files']} files, {r['threads']} threads: plain / one slicing / "
            "1,000 slices",
            " / ".join(f"{rps[k] / 1e6:.3g}M" for k in ("plain", "one", "thousand")),
            "—",
            None,
        )
    )
    diff = r["max_rel_diff_unweighted"]
    rows.append(
        (
            "  overall BCE agreement, sliced and plain passes (max relative difference)",
            f"{diff:.1e}",
            "<= 1e-12",
            diff <= 1e-12,
        )
    )
    return rows


def format_rows(rows: list[tuple[str, str, str, bool | None]]) -> str:
    """The rows as :func:`flows.bench.run.print_targets` lays them out."""
    width = max(len(m) for m, *_ in rows)
    marks = {None: "", True: "holds", False: "SHORT"}
    return "\n".join(f"  {m:<{width}}  {v:>24}  {t:>15}  {marks[h]}" for m, v, t, h in rows)


def run_section(root: Path, rows: int, repeats: int) -> dict[str, object]:
    """Write (or reuse) the dataset of ``rows`` rows at ``root``, measure it and print the figures as one JSON line."""
    print(f"timing slices and weights in process on {root.name} ({rows:,} rows), median of {repeats} ...", flush=True)
    results = measure_slices(write_sliced_dataset(root, rows), repeats)
    print(f"  {json.dumps(results)}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    from tasks.home import CODE_ROOT

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=ROWS, help="rows of the generated dataset")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of each contender (median), after a warm-up")
    ap.add_argument("--root", type=Path, default=None, help="where the dataset is written (default: bench-data/)")
    args = ap.parse_args(argv)
    results = run_section(args.root or CODE_ROOT / "bench-data" / f"slices_rows{args.rows}", args.rows, args.repeats)
    print(f"\nslices and weights: ratios within this run, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(format_rows(target_rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
