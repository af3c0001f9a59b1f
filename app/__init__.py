"""The top layer: the `recsys` console script (`app.cli`) and the demo (`app.demo`).

Each module turns one group of subcommands' arguments into typed configs and calls the
layers below: `app.data` (`recsys data`: `pipelines`), `app.train` (`recsys train`,
`recsys evaluate`: `recsys.training`), `app.export` (`recsys export`: `recsys.bundle`),
`app.serve` (`recsys serve`, `recsys recommend`: `serving`) and `app.demo` (`recsys demo`:
all of them). Nothing below imports `app` (tests/test_layers.py).
"""
