"""Prefect flows of bce-eval: wiring only; the computation lives in :mod:`tasks`."""
