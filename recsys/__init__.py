"""recsys: sequential recommendation with learned similarities (Mixture of Logits).

The bottom layer: importable without Ray, and importing none of the layers above it
(`pipelines/` data preparation, `serving/` with the HTTP service and the Ray Data batch job,
`app/` with the CLI; tests/test_layers.py enforces it).
"""

__version__ = "0.1.0"
