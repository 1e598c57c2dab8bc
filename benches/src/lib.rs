//! Benchmarks of freezer-rs: see `benches/` (criterion) and `compare.py` (peers).
