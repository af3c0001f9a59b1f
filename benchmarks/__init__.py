"""Benchmarks: one module per measurement, `bench_NAME.py` with a `main(argv) -> int`.

Run one with `recsys bench NAME [args]` (or `python -m benchmarks.bench_NAME [args]`); each
writes its JSON record to benchmarks/results/ (docs/RESULTS.md indexes them,
`bench_results_doc`). Helpers only benchmarks use live here too: `retrieval_catalogs` (the
cached synthetic catalogs), `quick_train` (their hand-rolled training loop) and
`shared_data` (the real data sets beside the repository). Benchmarks may import every layer;
no layer imports them (tests/test_layers.py).
"""
