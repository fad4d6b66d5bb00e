"""``python -m bench``: the benchmark suite (see bench/suite.py and README's Performance)."""

from bench.suite import main

raise SystemExit(main())
