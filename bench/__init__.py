"""streamlife's benchmarks: ``make bench`` runs them (``python -m bench.run``); see bench/run.py."""
