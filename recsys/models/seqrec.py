"""The sequential recommender: item embedding + encoder + learned similarity.

Training is autoregressive (docs/SPEC.md section 2): position t is supervised by item t+1
with a sampled softmax over R negatives. With MoL (Ding & Zhai, WWW'25, arXiv 2407.15462)
the item half of the similarity is computed once per distinct item (positives and
negatives separately) and gathered, and the negatives are scored chunk by chunk
with a hand-written backward (`recsys.similarity.mol_fused`) so the (rows, R, hidden)
intermediates of the cross gate never exist all at once.

Negatives (`NegativesConfig.kind`):
- "shared": one set of R uniform negatives (with replacement, ids 1..N) for every position
  of the batch: one dense (rows, R) scoring pass, the cheap default.
- "per_position": R uniform negatives per position (item parts of the distinct ones only);
  with `dot_proposal` = a > 0, drawn instead from a mixture of uniform draws and the plain
  dot product's softmax over the catalog, each weighted by its importance weight
  (recsys.models.proposal): mostly the near-misses, for the same objective.
- "per_sequence": R uniform negatives per sequence of the batch, shared by its positions:
  each sequence is one dense (its rows, R) pass like "shared", while the batch as a whole
  draws B * R negatives, so the item side sees about as many distinct negatives per step
  as with "per_position" at close to the "shared" cost.
- "in_batch": R targets drawn uniformly from the batch's supervised positions, shared by
  every position, so negatives follow the data's item popularity.
- "mixed": R shared negatives, a fraction `in_batch_fraction` of them in-batch targets and
  the rest uniform (popular items as hard negatives, tail items still covered).
- "full": every catalog item 1..N is a negative of every position (`num` is ignored): the
  loss is the exact softmax cross-entropy over the catalog, as RecBole's SASRec trains. One
  dense (rows, N) pass, like "shared" with R = N: cheap for a dot product over a catalog of
  a few thousand items, N/R times the shared cost for MoL. With `rows` = K, the exact
  softmax is taken on K supervised positions per step, drawn uniformly without replacement
  (all of them when fewer): an unbiased estimate of the full-catalog loss at K * N scored
  pairs, so that MoL sees every near-miss of a few positions instead of R uniform, mostly
  easy, negatives of every position (about the shared cost when K * N ~ rows * R).
A negative equal to the row's positive is masked out in every case (for "full": the
positive is counted once).

Mined hard negatives (`NegativesConfig.hard` = K > 0, sampled kinds only): for each
position, the K catalog items the plain dot product (normalised, no gradient) scores
highest, leaving out the row's positive and every item of the row's own sequence (which
holds its future targets, likely false negatives; evaluation masks the history anyway).
They add a second loss, `hard_weight` times the softmax of the positive against those K
alone ("hard_negatives" in the logs), scored by the model's own similarity: the sampled
softmax on uniform negatives rarely shows MoL the near-misses that decide a top-10, these
are exactly those. No sampling correction applies (the draw is deterministic). Off by
default; ML-1M pilots (h1, h2): benchmarks/results/curves-ml-1m-negatives.json.

`correction` (the logQ correction of sampled softmax; Bengio & Senecal 2008, Yi et al.,
RecSys'19) adds -log(E[times item j is drawn]) to each negative's logit, so that the loss
estimates the softmax over the whole catalog: log(N/R) for R uniform draws,
-log(R_b c_j / n + R_u / N) when R_b of the draws pick one of the batch's n targets (c_j of
which are item j) and R_u are uniform. Without it, R uniform negatives on a long-tailed
catalog are mostly tail items, and ranking popular items above them already wins the loss
(on Amazon Beauty it did not stop MoL from collapsing onto a popularity ranking, though:
`benchmarks/bench_collapse.py`).

Shapes: B batch, T sequence length, D model dim, N catalog size (ids 1..N, 0 = padding),
n supervised positions, R negatives, P = P_Q * P_X.

Dot warm-up (`training_loss(..., dot_warmup=True)`): a residual MoL (`MoLConfig.residual`)
with its maps still at zero is the dot product with the same temperature; the warm-up trains
that dot product directly (the encoder and item table; MoL's own parameters get no
gradient), at the dot product's cost.

Auxiliary dot loss (`training_loss(..., dot_aux_weight=w)`, MoL only): adds w times the
full-catalog softmax cross-entropy of the plain dot product between the same rows and the
item table (normalised, MoL's temperature). The encoder and the item table then learn from
every item as a negative at the dot product's cost, while MoL trains on its R sampled
negatives; MoL's own parameters get no gradient from that term. Why: on ML-1M an 8-block
HSTU learns far more per epoch from the full softmax than from 128 sampled negatives
(uniform, in-batch or mixed; benchmarks/results/curves-ml-1m-negatives.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.models.hstu import HSTU, HSTUConfig
from recsys.models.proposal import proposal_draws
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.schema import Tagged, build_dataclass, to_plain
from recsys.similarity.dot import DotConfig, DotSimilarity
from recsys.similarity.mol import MoLConfig, MoLSimilarity
from recsys.similarity.parts import ItemParts, QueryParts

LN_EPS = 1e-6
ENCODER_TYPES: dict[str, type] = {"hstu": HSTUConfig, "sasrec": SASRecConfig}
SIMILARITY_TYPES: dict[str, type] = {"dot": DotConfig, "mol": MoLConfig}
NEGATIVE_KINDS = ("shared", "per_position", "per_sequence", "in_batch", "mixed", "full")


EncoderConfig = Annotated[HSTUConfig | SASRecConfig, Tagged(ENCODER_TYPES)]
SimilarityConfig = Annotated[DotConfig | MoLConfig, Tagged(SIMILARITY_TYPES)]


def _check_parts(owner: str, encoder: Any, similarity: Any) -> None:
    if not isinstance(encoder, HSTUConfig | SASRecConfig):
        raise ValueError(
            f"{owner}.encoder must be HSTUConfig or SASRecConfig, got {type(encoder).__name__}"
        )
    if not isinstance(similarity, DotConfig | MoLConfig):
        raise ValueError(
            f"{owner}.similarity must be DotConfig or MoLConfig, got {type(similarity).__name__}"
        )


@dataclass(frozen=True)
class ModelSpec:
    """The model as a run config states it: encoder + similarity, without the catalog size
    (which comes from the dataset). In YAML each part is a mapping with a `type` tag:
    `encoder: {type: hstu | sasrec, ...}`, `similarity: {type: dot | mol, ...}`."""

    encoder: EncoderConfig
    similarity: SimilarityConfig

    def __post_init__(self) -> None:
        _check_parts("ModelSpec", self.encoder, self.similarity)

    def with_items(self, num_items: int) -> ModelConfig:
        """The ModelConfig of this model over a catalog of `num_items` items (ids 1..N)."""
        return ModelConfig(num_items=num_items, encoder=self.encoder, similarity=self.similarity)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-safe dict; each part carries its "type" tag (hstu/sasrec, dot/mol)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> ModelSpec:
        """Inverse of `to_dict`; bad input raises ConfigError (a ValueError) naming the field
        under the dotted path `where`."""
        return build_dataclass(cls, d, where)


@dataclass(frozen=True)
class ModelConfig:
    """num_items N (ids 1..N), the encoder config and the similarity config: a ModelSpec
    over a known catalog (what SeqRecModel, run directories and bundles store)."""

    num_items: int
    encoder: EncoderConfig
    similarity: SimilarityConfig

    def __post_init__(self) -> None:
        n = self.num_items
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"ModelConfig.num_items must be an integer >= 1, got {n!r}")
        _check_parts("ModelConfig", self.encoder, self.similarity)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; each sub-config carries a "type" tag (hstu/sasrec, dot/mol)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> ModelConfig:
        """Inverse of `to_dict`; an unknown, missing or bad key raises ConfigError (a
        ValueError) naming it under the dotted path `where`."""
        return build_dataclass(cls, d, where)


@dataclass(frozen=True)
class NegativesConfig:
    """How the sampled softmax draws its R = `num` negatives (see the module docstring;
    "full" uses the whole catalog and ignores `num`)."""

    kind: Literal["shared", "per_position", "per_sequence", "in_batch", "mixed", "full"] = "shared"
    num: int = 128
    correction: bool = False
    in_batch_fraction: float = 0.5
    hard: int = 0
    hard_weight: float = 1.0
    rows: int | None = None
    dot_proposal: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in NEGATIVE_KINDS:
            raise ValueError(
                f"NegativesConfig.kind must be one of {NEGATIVE_KINDS}, got {self.kind!r}"
            )
        if isinstance(self.num, bool) or not isinstance(self.num, int) or self.num < 1:
            raise ValueError(f"NegativesConfig.num must be an integer >= 1, got {self.num!r}")
        if not isinstance(self.correction, bool):
            raise ValueError(
                f"NegativesConfig.correction must be a boolean, got {self.correction!r}"
            )
        if not 0.0 < self.in_batch_fraction < 1.0:
            raise ValueError(
                "NegativesConfig.in_batch_fraction must be in (0, 1), "
                f"got {self.in_batch_fraction!r}"
            )
        if self.kind == "full" and self.correction:
            raise ValueError("NegativesConfig.correction does not apply to kind 'full'")
        if isinstance(self.hard, bool) or not isinstance(self.hard, int) or self.hard < 0:
            raise ValueError(f"NegativesConfig.hard must be an integer >= 0, got {self.hard!r}")
        if not self.hard_weight > 0:
            raise ValueError(f"NegativesConfig.hard_weight must be > 0, got {self.hard_weight!r}")
        if self.rows is not None:
            if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 1:
                raise ValueError(
                    f"NegativesConfig.rows must be an integer >= 1 or null, got {self.rows!r}"
                )
            if self.kind != "full":
                raise ValueError(
                    f"NegativesConfig.rows applies to kind 'full' only, got kind {self.kind!r}"
                )
        if isinstance(self.dot_proposal, bool) or not 0.0 <= self.dot_proposal < 1.0:
            raise ValueError(
                f"NegativesConfig.dot_proposal must be in [0, 1), got {self.dot_proposal!r}"
            )
        if self.dot_proposal and self.kind != "per_position":
            raise ValueError(
                "NegativesConfig.dot_proposal applies to kind 'per_position' only, "
                f"got kind {self.kind!r}"
            )
        if self.kind == "full" and self.hard:
            raise ValueError(
                "NegativesConfig.hard does not apply to kind 'full' (every item is a negative)"
            )


def build_encoder(config: HSTUConfig | SASRecConfig) -> nn.Module:
    return HSTU(config) if isinstance(config, HSTUConfig) else SASRec(config)


def build_similarity(config: DotConfig | MoLConfig, dim: int) -> DotSimilarity | MoLSimilarity:
    if isinstance(config, MoLConfig):
        return MoLSimilarity(config, dim)
    return DotSimilarity(config, dim)


def index_draws(ids: Tensor, num_items: int) -> tuple[Tensor, Tensor]:
    """ids (n, R) items drawn from 1..num_items -> (items (U,), idx (n, R)), items[idx] == ids.

    The items whose parts a step computes once, and where each draw finds them. With fewer
    draws than the catalog has items: the distinct items drawn (torch.unique). With at
    least as many (the per-position negatives of a full batch draw every item many times
    over): the catalog itself and idx = ids - 1, which saves unique's sort of every draw.
    """
    if ids.numel() >= num_items:
        return torch.arange(1, num_items + 1, device=ids.device), ids - 1
    items, idx = torch.unique(ids, return_inverse=True)
    return items, idx.view(ids.shape)


class SeqRecModel(nn.Module):
    """Item embedding (N+1, D, padding 0) + encoder + final LayerNorm + similarity."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.encoder.dim
        self.num_items = config.num_items
        self.item_emb = nn.Embedding(config.num_items + 1, dim, padding_idx=0)
        nn.init.trunc_normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.encoder = build_encoder(config.encoder)
        self.similarity = build_similarity(config.similarity, dim)
        # The plain dot product of a MoL model (parameter-free, MoL's temperature): what a
        # residual MoL starts as (its dot warm-up) and the auxiliary full-catalog loss.
        self.dot_view: DotSimilarity | None = None
        if isinstance(config.similarity, MoLConfig):
            self.dot_view = DotSimilarity(DotConfig(tau=config.similarity.tau))
        self.warmup_similarity: DotSimilarity | None = None
        if isinstance(config.similarity, MoLConfig) and config.similarity.residual:
            self.warmup_similarity = self.dot_view

    # -- queries ---------------------------------------------------------------------

    def encode(self, item_ids: Tensor, timestamps: Tensor | None = None) -> Tensor:
        """item_ids (B, T) long right-padded with 0, timestamps (B, T) | None -> (B, T, D)."""
        mask = item_ids != 0
        out = self.encoder(self.item_emb(item_ids), mask, timestamps)
        return F.layer_norm(out, (out.shape[-1],), eps=LN_EPS)

    def query(self, item_ids: Tensor, timestamps: Tensor | None = None) -> Tensor:
        """(B, D): the encoder output at each row's last valid position (zeros if empty).

        Equal to `encode(...)` at those positions; the encoder's last layer computes only
        that one attention row per sequence (1/num_blocks of the encoder saved)."""
        mask = item_ids != 0
        last = (mask.sum(dim=1) - 1).clamp(min=0)
        out = self.encoder(self.item_emb(item_ids), mask, timestamps, last=last)
        return F.layer_norm(out, (out.shape[-1],), eps=LN_EPS)

    def query_parts(
        self, item_ids: Tensor, timestamps: Tensor | None = None, user_ids: Tensor | None = None
    ) -> QueryParts:
        """QueryParts of the last valid positions; user_ids (B,) long (< 0 = unknown) | None."""
        return self.similarity.query_parts(self.query(item_ids, timestamps), user_ids)

    def item_parts(self, item_ids: Tensor | None = None) -> ItemParts:
        """ItemParts of item_ids (X,) long, or of the whole catalog 0..N (row 0 = padding)."""
        e = self.item_emb.weight if item_ids is None else self.item_emb(item_ids)
        return self.similarity.item_parts(e)

    def score_all(
        self,
        item_ids: Tensor,
        timestamps: Tensor | None = None,
        user_ids: Tensor | None = None,
        item_chunk: int = 4096,
    ) -> Tensor:
        """(B, N+1) float32 scores against the whole catalog; column 0 (padding) is -inf.

        Items are scored `item_chunk` at a time. The caller chooses the grad mode. A
        residual MoL whose maps are still at zero (a dot warm-up) is scored as the dot
        product it equals.
        """
        sim: DotSimilarity | MoLSimilarity = self.similarity
        warm = self.warmup_similarity
        if warm is not None and isinstance(sim, MoLSimilarity) and sim.maps_at_zero():
            sim = warm  # what the residual MoL is: the same scores, P times cheaper
        qp = sim.query_parts(self.query(item_ids, timestamps), user_ids)
        n = self.num_items + 1
        out = torch.empty(qp.batch_size, n, dtype=torch.float32, device=item_ids.device)
        for start in range(0, n, item_chunk):
            ids = torch.arange(start, min(start + item_chunk, n), device=item_ids.device)
            out[:, start : start + ids.shape[0]] = sim.score_all(
                qp, sim.item_parts(self.item_emb(ids))
            ).float()
        out[:, 0] = float("-inf")
        return out

    # -- training --------------------------------------------------------------------

    def _negatives(
        self, rows: Tensor, targets: Tensor, negatives: NegativesConfig
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """rows (n, D), targets (n,) -> (negative item ids (R,), or the items idx points
        into (U,): see index_draws; idx (n, R) | None; valid (n, R) bool; logit offset
        (R,) or (n, R) | None). Sampled kinds only ("full" uses the catalog as it is); the
        offset is the logQ correction when asked for, plus the importance weight of
        negatives drawn from the dot proposal (recsys.models.proposal)."""
        n, r, device = targets.shape[0], negatives.num, targets.device
        num_items = self.num_items
        if negatives.kind == "per_position":
            offset = self._uniform_offset(negatives, device)
            if negatives.dot_proposal:
                ids, weight = proposal_draws(
                    rows,
                    self.item_emb.weight[1:],
                    self.config.similarity.tau,
                    negatives.dot_proposal,
                    r,
                )
                offset = weight if offset is None else weight + offset
            else:
                ids = torch.randint(1, num_items + 1, (n, r), device=device)
            items, idx = index_draws(ids, num_items)
            return items, idx, ids != targets.unsqueeze(1), offset
        r_batch = {"in_batch": r, "mixed": round(r * negatives.in_batch_fraction)}.get(
            negatives.kind, 0
        )
        r_uniform = r - r_batch
        ids = torch.cat(
            [
                targets[torch.randint(0, n, (r_batch,), device=device)],
                torch.randint(1, num_items + 1, (r_uniform,), device=device),
            ]
        )
        offset = None
        if negatives.correction:
            expected = torch.full((r,), r_uniform / num_items, device=device)
            if r_batch:
                counts = torch.bincount(targets, minlength=num_items + 1)
                expected = expected + r_batch * counts[ids].float() / n
            offset = -torch.log(expected)
        return ids, None, ids.unsqueeze(0) != targets.unsqueeze(1), offset

    @torch.no_grad()
    def _hard_negatives(
        self, rows: Tensor, targets: Tensor, context: Tensor, k: int
    ) -> tuple[Tensor, Tensor]:
        """rows (n, D), targets (n,), context (n, L) item ids of each row's sequence (0 =
        padding) -> (ids (n, k), valid (n, k) bool): per row, the k items 1..N of highest
        cosine with the row, leaving out its target and its context; `valid` is False where
        fewer than k items remain."""
        q = F.normalize(rows.detach().float(), dim=-1)
        e = F.normalize(self.item_emb.weight.detach().float(), dim=-1)
        scores = q @ e.transpose(0, 1)  # (n, N+1)
        scores[:, 0] = float("-inf")
        scores.scatter_(1, context, float("-inf"))
        scores.scatter_(1, targets.unsqueeze(1), float("-inf"))
        top, ids = scores.topk(min(k, self.num_items), dim=1)
        return ids, top > float("-inf")

    def _uniform_offset(self, negatives: NegativesConfig, device) -> Tensor | None:
        """The log-Q correction log(N / R) of R uniform draws per row, when asked for."""
        if not negatives.correction:
            return None
        return torch.full((1,), math.log(self.num_items / negatives.num), device=device)

    def _per_sequence_softmax(
        self,
        sim: DotSimilarity | MoLSimilarity,
        qp: QueryParts,
        pos: Tensor,
        targets: Tensor,
        row_of: Tensor,
        batch: int,
        negatives: NegativesConfig,
    ) -> Tensor:
        """Mean sampled softmax of the n rows (ordered by batch row, `row_of` (n,)) when
        each batch row draws its own R uniform negatives, shared by its positions."""
        r, device = negatives.num, targets.device
        ids = torch.randint(1, self.num_items + 1, (batch, r), device=device)
        parts = sim.item_parts(self.item_emb(ids.view(-1)))
        offset = self._uniform_offset(negatives, device)
        total, start = pos.new_zeros(()), 0
        for b, count in enumerate(torch.bincount(row_of, minlength=batch).tolist()):
            if count == 0:
                continue
            stop = start + count
            valid = ids[b].unsqueeze(0) != targets[start:stop].unsqueeze(1)
            loss = sim.sampled_softmax(
                qp.slice(start, stop),
                pos[start:stop],
                parts.slice(b * r, (b + 1) * r),
                None,
                valid,
                offset=offset,
            )
            total = total + loss * count
            start = stop
        return total / targets.shape[0]

    def _dot_full_softmax(self, rows: Tensor, targets: Tensor) -> Tensor:
        """Softmax cross-entropy of the dot product of rows (n, D) over the catalog."""
        dot = self.dot_view
        if dot is None:
            raise ValueError(
                "dot_aux_weight needs a MoL similarity, got "
                f"{type(self.config.similarity).__name__}"
            )
        catalog = dot.item_parts(self.item_emb.weight).slice(1, self.num_items + 1)
        qp = dot.query_parts(rows)
        return dot.full_softmax(qp, qp.f.new_zeros(rows.shape[0]), catalog, targets - 1)

    def training_loss(
        self,
        item_ids: Tensor,
        timestamps: Tensor | None = None,
        user_ids: Tensor | None = None,
        negatives: NegativesConfig | None = None,
        first_target: Tensor | None = None,
        dot_warmup: bool = False,
        dot_aux_weight: float = 0.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Autoregressive sampled-softmax loss over every supervised position.

        item_ids (B, T) right-padded, timestamps (B, T) | None, user_ids (B,) | None;
        first_target (B,) long | None: row b supervises only the targets at positions
        >= first_target[b] (earlier positions are context only). dot_warmup: train the
        dot product a residual MoL starts as (module docstring); ValueError otherwise.
        dot_aux_weight: a MoL model adds this weight times the full-catalog softmax loss of
        the dot product between the same rows and the item table, "dot_aux" in the logs
        (module docstring); ValueError for a dot model.
        Returns (loss, logs): loss = sampled softmax + weighted aux losses (training mode);
        logs hold detached "loss", "sampled_softmax", each aux loss and "num_positions".
        """
        negatives = negatives if negatives is not None else NegativesConfig()
        sim: DotSimilarity | MoLSimilarity = self.similarity
        if dot_warmup:
            if self.warmup_similarity is None:
                raise ValueError(
                    "a dot warm-up needs a residual MoL (similarity: {type: mol, residual: "
                    f"true}}), got {type(self.config.similarity).__name__}"
                )
            sim = self.warmup_similarity
        out = self.encode(item_ids, timestamps)
        targets_bt = item_ids[:, 1:]
        supervised = targets_bt != 0  # right padding: a valid next item has a valid current one
        if first_target is not None:
            positions = torch.arange(1, item_ids.shape[1], device=item_ids.device)
            supervised &= positions.unsqueeze(0) >= first_target.unsqueeze(1)
        rows = out[:, :-1][supervised]  # (n, D)
        targets = targets_bt[supervised]  # (n,)
        batch_rows = torch.arange(item_ids.shape[0], device=item_ids.device)
        row_of = batch_rows.unsqueeze(1).expand_as(targets_bt)[supervised]  # (n,) batch row
        row_users = None if user_ids is None else user_ids[row_of]
        n = targets.shape[0]
        if n == 0:
            zero = out.sum() * 0.0
            return zero, {"loss": zero.detach(), "num_positions": torch.tensor(0.0)}

        qp = sim.query_parts(rows, row_users)
        distinct, inv = torch.unique(targets, return_inverse=True)
        pos, gates = sim.score_gathered(
            qp, sim.item_parts(self.item_emb(distinct)), inv.unsqueeze(1), return_gates=True
        )
        if negatives.kind == "full":
            catalog = sim.item_parts(self.item_emb.weight).slice(1, self.num_items + 1)
            full_q, full_pos, full_targets = qp, pos[:, 0], targets
            if negatives.rows is not None and negatives.rows < n:
                pick = torch.randperm(n, device=targets.device)[: negatives.rows]
                full_q, full_pos, full_targets = qp.index_select(pick), pos[pick, 0], targets[pick]
            main = sim.full_softmax(full_q, full_pos, catalog, full_targets - 1)
        elif negatives.kind == "per_sequence":
            main = self._per_sequence_softmax(
                sim, qp, pos[:, 0], targets, row_of, item_ids.shape[0], negatives
            )
        else:
            neg_ids, idx, valid, offset = self._negatives(rows, targets, negatives)
            main = sim.sampled_softmax(
                qp, pos[:, 0], sim.item_parts(self.item_emb(neg_ids)), idx, valid, offset=offset
            )
        aux = sim.aux_losses(user_ids=row_users, gates=gates)
        if negatives.hard:
            hard_ids, hard_valid = self._hard_negatives(
                rows, targets, item_ids[row_of], negatives.hard
            )
            hard_distinct, hard_idx = torch.unique(hard_ids, return_inverse=True)
            hard = sim.sampled_softmax(
                qp, pos[:, 0], sim.item_parts(self.item_emb(hard_distinct)), hard_idx, hard_valid
            )
            aux["hard_negatives"] = negatives.hard_weight * hard
        if dot_aux_weight and not dot_warmup:
            aux["dot_aux"] = dot_aux_weight * self._dot_full_softmax(rows, targets)
        loss = main + sum(aux.values()) if aux else main
        logs = {"loss": loss.detach(), "sampled_softmax": main.detach()}
        logs.update({name: value.detach() for name, value in aux.items()})
        logs["num_positions"] = torch.tensor(float(n))
        return loss, logs
