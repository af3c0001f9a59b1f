"""Learned similarities: dot product (cosine / tau) and Mixture of Logits."""

from recsys.similarity.dot import DotConfig, DotSimilarity
from recsys.similarity.mol import MoLConfig, MoLSimilarity
from recsys.similarity.parts import ItemParts, QueryParts

__all__ = ["DotConfig", "DotSimilarity", "ItemParts", "MoLConfig", "MoLSimilarity", "QueryParts"]
