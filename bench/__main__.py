"""``python -m bench``: the benchmark suite (see bench/suite.py and README's Performance);
``python -m bench listings``: search and radio listing times alone (bench/listings.py);
``python -m bench pacing``: a fast reader after an upstream stall or refresh (bench/pacing.py)."""

import sys

if sys.argv[1:2] == ["listings"]:
    from bench.listings import main as listings_main

    raise SystemExit(listings_main(sys.argv[2:]))
if sys.argv[1:2] == ["pacing"]:
    from bench.pacing import main as pacing_main

    raise SystemExit(pacing_main(sys.argv[2:]))

from bench.suite import main

raise SystemExit(main())
