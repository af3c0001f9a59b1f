"""serving: a bundle behind Ray Serve (HTTP) and the Ray Data batch job (`serving.batch`).

A layer above `recsys` (`recsys.recommend.Recommender` does the work) and beside
`pipelines`: it may import `recsys` only (tests/test_layers.py).
"""
