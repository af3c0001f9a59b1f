"""Sequential encoders (HSTU, SASRec) and the recommender model that wires them."""

from recsys.models.hstu import HSTU, HSTUConfig
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.models.seqrec import ModelConfig, NegativesConfig, SeqRecModel

__all__ = [
    "HSTU",
    "HSTUConfig",
    "ModelConfig",
    "NegativesConfig",
    "SASRec",
    "SASRecConfig",
    "SeqRecModel",
]
