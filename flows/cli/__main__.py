"""``python -m flows.cli``: the ``bce-eval`` console script."""

from flows.cli.main import run

run()
