"""What calibration, late labels and decisions cost the pass: part of ``make bench``.

On the rows of the slices section (4,000,000 logits and labels in 4 partitions, in memory, batches of
65,536 rows), medians of interleaved repeats in this process:

- **with them**: the per-row pass as an evaluation runs it (:class:`tasks.metrics.lanes.Reducer`: the
  calibration sums and each score bin's Σ p, each batch looked at for labels that have not arrived), then the
  decision figures and the equal-mass ECE of every partition and overall from the merged histograms
  (:func:`tasks.metrics.decisions.decision_columns`);
- **without them**: the same pass with the calibration sums and the bins' Σ p off (``Reducer(figures=False)``,
  which only this bench uses), no look for late labels, no decision figures;

each from the files, as a run reads them (Polars decoding beside the pass: the ratio the target is about), and
with the rows already in memory (the pass alone: the figures' share of the pass itself, for context).

    python -m flows.bench.figures [--rows 4000000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from flows.bench.slices import ROWS, median_interleaved, write_sliced_dataset

TARGET = 1.10
BATCH = 65_536


def file_batches(root: Path) -> Iterator[tuple[np.ndarray, ...]]:
    """The same rows read from the files as the pass reads them (Polars' batches, decoded on its threads while the
    pass sums the previous ones; a null label read as not arrived), batch by batch."""
    import polars as pl

    from tasks.metrics.late_labels import batch_labels

    parts = sorted({p.parent.name for p in root.glob("part=*/*.parquet")})
    for path in sorted(root.glob("part=*/*.parquet")):
        query = pl.scan_parquet(path).select("z", pl.col("label").cast(pl.Float64))
        for batch in query.collect_batches():
            label = batch.get_column("label")
            nulls = label.null_count()  # as tasks.metrics.reduce knows a batch's labels not arrived: no pass
            lab = batch_labels(label, per_row=False)
            where = np.array([parts.index(path.parent.name)], np.int64)
            yield batch.get_column("z").to_numpy(), lab, np.array([batch.height], np.int64), where, nulls


def load_batches(root: Path) -> tuple[list[tuple[np.ndarray, ...]], int]:
    """Each file's logits and labels in batches of :data:`BATCH` rows, its partition its number; the partitions."""
    import polars as pl

    batches, parts = [], sorted({p.parent.name for p in root.glob("part=*/*.parquet")})
    for path in sorted(root.glob("part=*/*.parquet")):
        df = pl.read_parquet(path, columns=["z", "label"])
        z, y = df.get_column("z").to_numpy(), df.get_column("label").cast(pl.Float64).to_numpy()
        part = parts.index(path.parent.name)
        for lo in range(0, len(z), BATCH):
            s, lab = np.ascontiguousarray(z[lo : lo + BATCH]), np.ascontiguousarray(y[lo : lo + BATCH])
            batches.append((s, lab, np.array([len(s)], np.int64), np.array([part], np.int64), 0))
    return batches, len(parts)


def one_pass(batches: Iterable[tuple[np.ndarray, ...]], n_parts: int, figures: bool) -> tuple[np.ndarray, dict]:
    """The pass over ``batches`` (with or without the figures, see the module's docstring): its sums and the
    decision figures (empty without them)."""
    import polars as pl

    from tasks.metrics.decisions import DEFAULT_DECISIONS, decision_columns
    from tasks.metrics.lanes import Reducer

    reducer = Reducer(pl.thread_pool_size(), figures=figures)
    for s, y, ends, ids, nulls in batches:
        if figures and nulls:  # the batch's labels not arrived, summed apart
            s, y, ends = reducer.set_aside_unlabelled(s, y, ends, ids, True, n_parts)
        reducer.add(s, y, ends, ids, True, n_parts)
    stats, bins, _ = reducer.finish()
    if not figures:
        return stats, {}
    part, b, n, pos, sum_p = (bins[:, i] for i in range(5))
    part, b = part.astype(np.int64), b.astype(np.int64)
    decided = decision_columns(part, b, n, pos, n_parts, DEFAULT_DECISIONS, sum_p)
    whole = decision_columns(np.zeros_like(part), b, n, pos, 1, DEFAULT_DECISIONS, sum_p)
    return stats, {**decided, "overall": whole}


def measure_figures(root: Path, repeats: int = 5) -> dict[str, object]:
    """Both contenders' median times, their ratio, and the BCE each pass summed (which must agree to the bit)."""
    from tasks.metrics.kernels import STATS

    batches, n_parts = load_batches(root)
    fns = {}
    for name, f in (("with", True), ("without", False)):
        fns[name] = lambda f=f: one_pass(file_batches(root), n_parts, f)
        fns[f"{name} in memory"] = lambda f=f: one_pass(batches, n_parts, f)
    seconds, results = median_interleaved(fns, repeats)
    loss, n = STATS.index("sum_loss"), STATS.index("n_rows")
    bce = {k: float(r[0][:, loss].sum() / r[0][:, n].sum()) for k, r in results.items()}
    return {
        "rows": int(sum(len(b[0]) for b in batches)),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "ratio": round(seconds["with"] / seconds["without"], 3),
        "ratio_in_memory": round(seconds["with in memory"] / seconds["without in memory"], 3),
        "bce": bce,
        "precision": float(results["with"][1]["overall"]["precision"][0]),
    }


def target_rows(r: dict[str, object]) -> list[tuple[str, str, str, bool | None]]:
    """(measure, result, target, holds) of this section, as :func:`flows.bench.run.print_targets` prints them."""
    sec = r["seconds"]
    b = r["bce"]  # the same batches with and without them: the same bits (files and memory batch the rows apart)
    same = b["with"] == b["without"] and b["with in memory"] == b["without in memory"]
    return [
        (
            f"calibration, late labels and decisions / the pass without them, from the files, {r['rows']:,} rows "
            f"({sec['with']:.3f} s vs {sec['without']:.3f} s)",
            f"{r['ratio']:.2f}x",
            f"<= {TARGET:.2f}x",
            r["ratio"] <= TARGET,
        ),
        (
            f"  the same, the rows already in memory (no decoding: the pass alone; {sec['with in memory']:.3f} s vs "
            f"{sec['without in memory']:.3f} s)",
            f"{r['ratio_in_memory']:.2f}x",
            "—",
            None,
        ),
        (
            "  the same BCE with and without them, from the files and in memory (they add sums, change none)",
            "same bits" if same else "DIFFER",
            "same bits",
            same,
        ),
    ]


def run_section(root: Path, rows: int, repeats: int) -> dict[str, object]:
    """Write (or reuse) the slices section's dataset at ``root``, measure and print the figures as one JSON line."""
    print(f"timing calibration, late labels and decisions in process ({rows:,} rows), median of {repeats} ...")
    results = measure_figures(write_sliced_dataset(root, rows), repeats)
    print(f"  {json.dumps(results)}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    from flows.bench.slices import format_rows
    from tasks.home import CODE_ROOT

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=ROWS, help="rows of the generated dataset")
    # a contender takes about 0.1 s: more rounds than the slices section's, for a steadier median
    ap.add_argument("--repeats", type=int, default=15, help="timed calls of each contender (median), after a warm-up")
    ap.add_argument("--root", type=Path, default=None, help="where the dataset is (default: the slices section's)")
    args = ap.parse_args(argv)
    results = run_section(args.root or CODE_ROOT / "bench-data" / f"slices_rows{args.rows}", args.rows, args.repeats)
    print(format_rows(target_rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
