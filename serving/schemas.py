"""HTTP request and response models of the recommendation API (pydantic 2, served by FastAPI).

Item and user ids in the API are the original keys (strings, e.g. MovieLens movie ids),
never the internal dense indices. Requests are strict: unknown fields, wrong JSON types
(`"k": "10"`, `"k": 2.5`, `"history": [1, 2]`) and out-of-range values are rejected with a
422 whose `detail` names the field; `"k": 745.0` is the integer 745, as in JSON Schema.

Caps (also in the OpenAPI docs): a history holds at most `MAX_HISTORY` items (the encoder
reads only the most recent `max_seq_len` of them; the rest only count as "seen"), `exclude`
and `include_only` at most `MAX_FILTER_ITEMS` keys each, and keys are at most `MAX_KEY_LENGTH`
characters.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from recsys.recommend import MAX_K, RecRequest, RecResult

MAX_HISTORY = 1000
MAX_FILTER_ITEMS = 10_000
MAX_KEY_LENGTH = 256

Key = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY_LENGTH)]


def _integral(value: object) -> object:
    """JSON Schema's "integer" includes numbers with a zero fraction (`745.0`), so the API
    accepts them as the integer they equal; any other float is left for the strict int
    check to reject (booleans are not numbers here)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer as JSON Schema defines it: 745 and 745.0 alike, never "745", 745.5 or true.
JsonInt = Annotated[int, BeforeValidator(_integral)]


class RecommendRequest(BaseModel):
    """Body of `POST /v1/recommend`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    user_id: Key | None = Field(
        default=None,
        description="Original user key. Known users without `history` are answered from "
        "their stored recent history; unknown users without history get the popularity "
        "fallback.",
    )
    history: list[Key] | None = Field(
        default=None,
        max_length=MAX_HISTORY,
        description=f"Item keys, oldest first (at most {MAX_HISTORY}). Replaces the stored "
        "history as the query; unknown items are ignored and listed in `unknown_items`; an "
        "empty or all-unknown history gets the popularity fallback.",
    )
    k: JsonInt = Field(
        default=10, ge=1, le=MAX_K, description=f"Number of items to return (1..{MAX_K})."
    )
    exclude_seen: bool = Field(
        default=True, description="Leave out the items of the query history and the stored history."
    )
    retriever: Literal["exact", "rails"] | None = Field(
        default=None, description="Top-k algorithm; the deployment's default when absent."
    )
    exclude: list[Key] | None = Field(
        default=None, max_length=MAX_FILTER_ITEMS, description="Item keys never to return."
    )
    include_only: list[Key] | None = Field(
        default=None,
        max_length=MAX_FILTER_ITEMS,
        description="Only these item keys may be returned (fewer than k items when the "
        "allowed set is smaller).",
    )

    def to_library(self) -> RecRequest:
        """The library request the Recommender answers."""
        return RecRequest(
            user_key=self.user_id,
            history=None if self.history is None else tuple(self.history),
            k=self.k,
            exclude_seen=self.exclude_seen,
            retriever=self.retriever,
            exclude=tuple(self.exclude or ()),
            include_only=None if self.include_only is None else tuple(self.include_only),
        )


class RecommendedItem(BaseModel):
    item_id: str = Field(description="Original item key.")
    score: float = Field(
        description="Similarity score (model), or interaction count (popularity fallback)."
    )
    title: str | None = None


class RecommendResponse(BaseModel):
    """Answer of `POST /v1/recommend`, best item first."""

    items: list[RecommendedItem]
    model_version: str
    retriever: str = Field(description='"exact", "rails", or "popularity" for the fallback.')
    fallback: Literal["popularity"] | None = Field(
        default=None, description='"popularity" when the user had no usable history (cold start).'
    )
    unknown_items: list[str] = Field(
        default_factory=list, description="History item keys not in the catalog (ignored)."
    )
    unknown_filter_items: list[str] = Field(
        default_factory=list,
        description="`exclude` / `include_only` keys not in the catalog (ignored).",
    )

    @classmethod
    def from_library(cls, result: RecResult) -> RecommendResponse:
        items = [
            RecommendedItem(item_id=key, score=score, title=title)
            for key, score, title in zip(
                result.item_keys, result.scores, result.titles, strict=True
            )
        ]
        return cls(
            items=items,
            model_version=result.model_version,
            retriever=result.retriever,
            fallback=result.fallback,  # type: ignore[arg-type]  # checked by pydantic
            unknown_items=list(result.unknown_items),
            unknown_filter_items=list(result.unknown_filter_items),
        )


class ModelInfo(BaseModel):
    """Answer of `GET /v1/model`: what is being served."""

    model_version: str
    num_items: int
    num_users: int
    created_at: str | None
    metrics: dict[str, object]
    retrievers: list[str]
    default_retriever: str
    last_reload_error: str | None = Field(
        default=None, description="Why the last hot swap was rejected (the old model kept serving)."
    )
    query_cache: dict[str, int] = Field(
        default_factory=dict,
        description="Per-user query cache of this replica: size, capacity, hits, misses.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Quality warnings recorded by training, e.g. that the model does not beat "
        "the popularity baseline on validation.",
    )


class Health(BaseModel):
    status: Literal["ok"]
    model_version: str
