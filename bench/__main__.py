"""`python -m bench`: run the benchmarks (see bench/__init__.py and `python -m bench --help`)."""

from bench.cli import main

raise SystemExit(main())
