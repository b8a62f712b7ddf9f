"""The JSON the HTTP service takes and gives, as pydantic models (they document ``/docs``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, Field

try:
    VERSION = version("semsearch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    VERSION = "0"


class Error(BaseModel):
    error: str = Field(description="What went wrong, in one line.")
    details: list[dict[str, Any]] | None = Field(None, description="For invalid requests: each problem and where.")


ERRORS = {400: {"model": Error, "description": "bad input"}, 413: {"model": Error, "description": "body too large"},
          422: {"model": Error, "description": "invalid request"},
          503: {"model": Error, "description": "loading, or the index could not be loaded"}}


class Health(BaseModel):
    status: str = Field(description="ready, loading or error.")
    error: str | None = Field(None, description="Why the index could not be loaded.")


class PassageModel(BaseModel):
    order: int = Field(description="Position of the passage among the document's passages (from 0).")
    start: int = Field(description="Character offset where the passage starts in the document text.")
    end: int = Field(description="Character offset where the passage ends in the document text.")
    text: str = Field(description="The passage's text.")


class HitModel(BaseModel):
    id: str = Field(description="Document id.")
    score: float = Field(description="Cosine similarity of the query and the document's best passage.")
    text: str = Field(description="The document text, cut to the server's --hit-text-chars unless full_text was asked.")
    text_truncated: bool | None = Field(None, description="True when text was cut (the passage is always whole).")
    metadata: dict[str, Any] = Field(description="The document's metadata.")
    passage: PassageModel = Field(description="The passage that matched.")


class SearchResult(BaseModel):
    query: str = Field(description="The query as given.")
    hits: list[HitModel] = Field(description="The best documents, best first.")


class SearchOutcomeModel(BaseModel):
    query: str = Field(description="The query as given.")
    hits: list[HitModel] | None = Field(None, description="The best documents, best first (absent on error).")
    error: str | None = Field(None, description="Why this query could not be run (absent on success).")


class SearchBody(BaseModel):
    queries: list[str] = Field(description="Queries to run, each answered in the same position.", max_length=10_000)
    k: int = Field(10, ge=1, le=1000, description="Number of documents per query.")
    where: dict[str, Any] | None = Field(
        None, description='Metadata filter (docs/filters.md): {"lang": "en"} (every key equals its value), '
                          'operators $eq $ne $gt $gte $lt $lte $in $nin $exists on a key '
                          '({"year": {"$gte": 2021}}, numbers or ISO dates), $and $or $not, and '
                          '{"$contains": "E1234"} on the document text.',
        examples=[{"lang": {"$in": ["en", "ko"]}, "year": {"$gte": 2021}, "$not": {"archived": True}}])
    wheres: list[dict[str, Any] | None] | None = Field(
        None, description="One filter per query, in the same positions as queries (null: none of its own), "
                          "each ANDed with where.", max_length=10_000,
        examples=[[{"lang": "en"}, None]])
    full_text: bool = Field(False, description="Send each hit's whole document text, not a snippet "
                                               "(bounded by the server's response size limit).")


class SearchResults(BaseModel):
    results: list[SearchOutcomeModel] = Field(description="One entry per query, in input order.")


class FAQQuestion(BaseModel):
    question: str = Field(description="The customer's question.", min_length=1)
    where: dict[str, Any] | None = Field(
        None, description='Only FAQ entries whose metadata match this filter (the language of /search\'s where), '
                          'e.g. {"product": "billing"}.')


class FAQMatchModel(BaseModel):
    id: str = Field(description="The FAQ entry.")
    question: str = Field(description="The entry's question that matched best.")
    answer: str | None = Field(description="The entry's answer.")
    score: float = Field(description="What the threshold is compared with: the cosine similarity of the two "
                                     "questions, plus the calibrated answer weight times answer_score.")
    question_score: float | None = Field(None, description="Cosine similarity of the two questions, where "
                                                           "the calibration weighs answers.")
    answer_score: float | None = Field(None, description="Cosine similarity of the question and the entry's "
                                                         "answer, where the calibration weighs answers.")


class FAQReply(BaseModel):
    question: str = Field(description="The question as given.")
    confident: bool = Field(description="True when the best entry passes the calibrated threshold and margin.")
    match: FAQMatchModel | None = Field(description="The answering entry, or null when not confident.")
    runners_up: list[FAQMatchModel] = Field(description="The next closest entries (the closest ones when not confident).")
    calibrated: bool = Field(description="False when the index has no calibration for its model and layer.")
    threshold: float = Field(description="The score threshold in force.")
    margin: float = Field(description="The top-1 minus top-2 score margin in force.")
    answer_weight: float = Field(0.0, description="The weight of answer_score in score (0: questions alone).")


class EmbedBody(BaseModel):
    texts: list[str] = Field(description="Texts to embed.", min_length=1, max_length=10_000)


class Embeddings(BaseModel):
    model: str = Field(description="The index's model.")
    layer: int = Field(description="The pooled hidden layer.")
    pooling: str = Field(description="mean, max or cls.")
    precision: str = Field(description="The arithmetic in use.")
    dimension: int = Field(description="Length of each vector.")
    vectors: list[list[float]] = Field(description="One L2-normalised vector per text, in input order.")


class DocumentModel(BaseModel):
    id: str = Field(description="Document id; an existing id is replaced.", min_length=1)
    text: str = Field(description="The text to index.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Any JSON object, searchable with where.")


class DocumentsBody(BaseModel):
    documents: list[DocumentModel] = Field(description="Documents to add or replace.", min_length=1)


class AddReply(BaseModel):
    added: int = Field(description="New documents.")
    updated: int = Field(description="Documents whose text changed.")
    unchanged: int = Field(description="Documents already stored with the same text (not encoded again).")
    metadata_updated: int = Field(description="Documents whose metadata alone changed.")
    skipped_empty: list[str] = Field(description="Ids of documents without text (not stored).")
    duplicates: list[str] = Field(description="Ids given more than once (the last one was kept).")
    passages: int = Field(description="Passages encoded.")


class DeleteReply(BaseModel):
    deleted: str = Field(description="The id that was deleted.")


class IndexInfoModel(BaseModel):
    path: str
    model: str = Field(description="The model name or folder.")
    model_fingerprint: str = Field(description="A hash of the model's weights and vocabulary.")
    layer: int
    pooling: str
    dimension: int
    max_length: int
    passage_tokens: int
    passage_overlap: int
    precision: str
    backend: str
    keep_hangul: bool = Field(description="Hangul syllables kept whole where the tokenizer would cut them into jamo.")
    target_recall: float = Field(description="The recall@10 approximate indexes tune their search settings to.")
    search_tuning: dict | None = Field(None, description="The tuned search settings and the recall they measured.")
    index_type: str = Field(description="As asked: flat, hnsw, ivf, ivfpq or auto.")
    vector_index: str = Field(description="What the FAISS index is now.")
    schema_version: int
    generation: int = Field(description="Bumped by every committed write.")
    documents: int
    passages: int
    vectors: int
    complete: bool
    created_at: str
    updated_at: str
    hybrid: bool = Field(False, description="Keeps a BM25 index of its passages; searches fuse it with the vectors by default.")
