"""recsys: sequential recommendation with learned similarities (Mixture of Logits).

The library is importable without Ray; serving and batch jobs live in `serving/` and
`pipelines/`.
"""

__version__ = "0.1.0"
