"""Top-k retrieval over a precomputed item index: brute force, RAILS (TopKPerEmbd, TopKAvg,
Combined), bounded-exact MoL, and the dot-product retriever, all behind
`search(queries, k, exclude) -> (scores (B, K), item_ids (B, K))` (conventions in
`recsys.retrieval.topk`; names in `recsys.retrieval.factory`). Importable without Ray.
"""
