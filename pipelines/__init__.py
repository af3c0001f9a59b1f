"""pipelines: raw interaction logs -> dataset directories (Polars), synthetic logs, downloads.

A layer above `recsys` (it writes `recsys.dataset`'s format) and beside `serving`: it may
import `recsys` only (tests/test_layers.py).
"""
