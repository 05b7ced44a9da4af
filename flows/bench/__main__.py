"""``python -m flows.bench``: the benchmark (``make bench``)."""

import sys

from flows.bench.run import main

sys.exit(main())
