"""Plain, typed computation for bce-eval, each with a thin Prefect task beside it."""
