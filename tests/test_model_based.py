"""The index against a model of it: random sequences of writes, checked after every step.

A Hypothesis ``RuleBasedStateMachine`` drives a real index: adds and upserts (same and changed
text, changed metadata), batches with repeated ids, deletes of present and absent ids, bulk writes
big enough to force a new base (the deltas outgrow the base: compaction), deletes of the bulk,
close and reopen, rebuilds that re-encode (layer and pooling switches), type switches between
flat, hnsw (tombstones after deletes), ivf and ivf-disk, ``index check``, and a split into
shards. After every step the stored documents, texts and metadata must equal the model's, and a
search (exact: the ANN types at full ``nprobe``/``ef``) must return the brute-force ranking over
the model's vectors; after a split the sharded searcher must return it too.

Two variants: on the tiny model (its encoder is the point: rebuilds re-encode, ``check``
re-encodes a sample), and on a deterministic fake encoder (a seeded vector per text, the engine
seam ``bench/build.py --storage`` uses) where storage is the point: there bulk writes are large
enough to train ivf and ivf-disk for real. Bounded (a handful of examples and steps) in the fast
suite; the ``slow`` variants run longer sequences.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from index import Index
from index.distributed.shards import shard_of
from index.distributed.split import split_index
from index.options import POOLINGS
from index.storage.generations import base_bytes
from search import Searcher
from search.sharded import ShardedSearcher
from fake_engine import FakeEngine, fake_vector

WORDS = "bank river money boat sea fox cat mat apple fruit password reset account invoice".split()
TEXTS = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
IDS = st.sampled_from([f"d{i}" for i in range(10)])
METADATA = st.fixed_dictionaries({"n": st.integers(0, 3)})
QUERIES = ("money in the bank", "a fox and a cat", "reset my account password")
TYPES = ("flat", "hnsw", "ivf", "ivf-disk")
EXACT_EF = 4096  # ef_search far above any index here: HNSW explores every reachable vector
IVF_TRAINED_FROM = 700  # the fake variant's first bulk write reaches this many documents (ivf trains at 624)


def machine_for(model_path: str, fake: bool, tally: Counter):
    class IndexMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.folder = Path(tempfile.mkdtemp(prefix="semsearch-model-based-"))
            self.path = self.folder / "idx"
            self.index: Index | None = None
            self.engine = FakeEngine() if fake else None
            self.model: dict[str, tuple[str, dict]] = {}
            self.bulk = 0  # bulk documents written so far (their ids are b<n>)
            self.cache: dict[str, np.ndarray] = {}  # text -> vector under the current configuration
            tally["examples"] += 1

        @initialize(kind=st.sampled_from(TYPES if fake else ("flat", "hnsw")), seed=st.integers(0, 2 ** 16))
        def start(self, kind, seed):
            """A new index of ``kind``; with the fake encoder, filled at once past what ivf needs to
            train, so that the ANN types (ivf-disk's mapped base and overlay included) are real."""
            self.index = Index.create(self.path, model=model_path, index_type=kind)
            if fake:
                self.bulk_write_forces_a_new_base(seed)
                assert self.index.vectors.kind == kind
                tally[f"started as {kind}"] += 1

        def add(self, documents):
            tally["steps"] += 1
            return self.index.add(documents, engine=self.engine)

        def vectors(self, texts) -> np.ndarray:
            missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
            if missing:
                dimension = int(self.index.config["dimension"])
                fresh = ([fake_vector(t, dimension) for t in missing] if fake
                         else self.index.encoder.encode(missing))
                self.cache.update(zip(missing, fresh))
            return np.stack([self.cache[t] for t in texts])

        # --- writes --------------------------------------------------------------------------
        @rule(doc_id=IDS, text=TEXTS, metadata=METADATA)
        def add_one(self, doc_id, text, metadata):
            self.add([{"id": doc_id, "text": text, "metadata": metadata}])
            self.model[doc_id] = (text, metadata)

        @rule(batch=st.lists(st.tuples(IDS, TEXTS, METADATA), min_size=1, max_size=8))
        def add_batch(self, batch):
            result = self.add([{"id": i, "text": t, "metadata": m} for i, t, m in batch])
            repeated = {i for i in (b[0] for b in batch) if [b[0] for b in batch].count(i) > 1}
            assert set(result.duplicates) == repeated
            for doc_id, text, metadata in batch:  # the last of a repeated id wins
                self.model[doc_id] = (text, metadata)

        @rule(doc_id=IDS, metadata=METADATA)
        def change_metadata_only(self, doc_id, metadata):
            if doc_id in self.model:
                text = self.model[doc_id][0]
                result = self.add([{"id": doc_id, "text": text, "metadata": metadata}])
                assert result.passages == 0  # same text: nothing encoded again
                self.model[doc_id] = (text, metadata)

        @precondition(lambda self: len(self.model) < 400)
        @rule(seed=st.integers(0, 2 ** 16))
        def bulk_write_forces_a_new_base(self, seed):
            """More new vectors than the deltas may hold over the current base (``delta_ratio`` of
            its bytes): the commit writes a new base instead of a delta (compaction)."""
            store = self.index.store
            base = base_bytes(self.path, int(store.get_info().get("vectors_base", store.generation())))
            per_vector = 4 * int(self.index.config["dimension"]) + 8  # what a delta holds for each added one
            m = int(type(self.index.vectors).delta_ratio * (base or 0) / per_vector) + 10
            if fake and self.bulk == 0:
                m = max(m, IVF_TRAINED_FROM - len(self.model))
            rng = np.random.default_rng(seed)
            docs = [{"id": f"b{self.bulk + j}", "text": " ".join(rng.choice(WORDS, size=int(rng.integers(1, 7)))),
                     "metadata": {"n": int(rng.integers(0, 4))}} for j in range(m)]
            self.bulk += m
            self.add(docs)
            for d in docs:
                self.model[d["id"]] = (d["text"], d["metadata"])
            assert int(store.get_info()["vectors_base"]) == store.generation(), "no new base after a bulk write"
            assert not list(self.path.glob("vectors-*.delta")), "deltas left beside the new base"
            tally["new bases"] += 1

        @rule(every=st.integers(1, 3))
        def delete_bulk(self, every):
            doomed = [i for i in self.model if i.startswith("b")][::every]
            if doomed:
                tally["steps"] += 1
                assert set(self.index.delete(doomed).deleted) == set(doomed)
                for doc_id in doomed:
                    del self.model[doc_id]

        @rule(doc_ids=st.lists(st.one_of(IDS, st.just("absent")), min_size=1, max_size=4, unique=True))
        def delete(self, doc_ids):
            tally["steps"] += 1
            result = self.index.delete(doc_ids)
            assert set(result.deleted) == {i for i in doc_ids if i in self.model}
            assert set(result.missing) == {i for i in doc_ids if i not in self.model}
            for doc_id in doc_ids:
                self.model.pop(doc_id, None)

        # --- the index's life -----------------------------------------------------------------
        @rule()
        def reopen(self):
            tally["steps"] += 1
            self.index.close()
            self.index = Index.open(self.path)

        @precondition(lambda self: not fake)  # re-encodes with the model
        @rule(layer=st.sampled_from([-1, -2]))
        def rebuild_with_layer(self, layer):
            tally["steps"] += 1
            self.index.rebuild(layer=layer)
            self.cache.clear()
            assert int(self.index.config["layer"]) == layer

        @precondition(lambda self: not fake)
        @rule(pooling=st.sampled_from(POOLINGS))
        def rebuild_with_pooling(self, pooling):
            tally["steps"] += 1
            self.index.rebuild(pooling=pooling)
            self.cache.clear()
            assert self.index.config["pooling"] == pooling

        @precondition(lambda self: len(self.model) > 0)
        @rule(kind=st.sampled_from(TYPES))
        def switch_type(self, kind):
            tally["steps"] += 1
            self.index.rebuild(index_type=kind)
            n = self.index.store.counts()[1]
            trained = n >= 624
            assert self.index.vectors.kind == (kind if kind in ("flat", "hnsw") or trained else "flat")
            tally[f"as {self.index.vectors.kind}"] += 1

        @rule()
        def check(self):
            tally["steps"] += 1
            report = self.index.check(sample=0 if fake else 5)  # a fake vector is no model's encoding
            assert report.ok, report.problems

        @precondition(lambda self: len(self.model) > 0)
        @rule(shards=st.integers(2, 3))
        def split_into_shards(self, shards):
            tally["steps"] += 1
            into = self.folder / f"split-{tally['splits']}"
            tally["splits"] += 1
            sharded, result = split_index(self.path, into, shards)
            try:
                assert result.documents == len(self.model)
                for n, shard in enumerate(sharded.indexes):
                    mine = {i: v for i, v in self.model.items() if shard_of(i, shards) == n}
                    assert shard.store.counts()[0] == len(mine)
                    assert shard.store.documents(list(mine)) == mine
                self.ranking_is_the_brute_force(ShardedSearcher(sharded, ef_search=EXACT_EF,
                                                                nprobe=self.full_nprobe(sharded.indexes)))
            finally:
                sharded.close()
                shutil.rmtree(into, ignore_errors=True)

        # --- what must hold after every step ----------------------------------------------------
        @invariant()
        def documents_are_the_models(self):
            assert self.index.store.counts()[0] == len(self.model)
            assert self.index.store.documents(list(self.model)) == self.model
            assert set(self.index.vectors.ids().tolist()) == set(self.index.store.passage_ids().tolist())

        @invariant()
        def search_is_the_brute_force_ranking(self):
            self.ranking_is_the_brute_force(Searcher(self.index, ef_search=EXACT_EF,
                                                     nprobe=self.full_nprobe([self.index])))

        @staticmethod
        def full_nprobe(indexes) -> int:
            """Every list of the IVF types (1 for the others, which ignore it)."""
            return max(int(getattr(i.vectors, "nlist", 1)) for i in indexes)

        def ranking_is_the_brute_force(self, searcher):
            if not self.model:
                return
            ids = sorted(self.model)
            vectors = self.vectors([self.model[i][0] for i in ids])
            k = min(4, len(ids))
            dimension = int(self.index.config["dimension"])
            queries = np.stack([fake_vector(q, dimension) for q in QUERIES]) if fake else self.vectors(list(QUERIES))
            found = searcher.search_vectors(queries, k=k) if fake else searcher.search_many(list(QUERIES), k=k)
            for query, vector, got in zip(QUERIES, queries, found):
                scores = vectors @ vector
                ranking = sorted(zip(ids, scores), key=lambda pair: -pair[1])
                want = ranking[:k]
                assert len(got) == k
                assert np.allclose([h.score for h in got], [s for _, s in want], atol=1e-4), (query, got, want)
                # A document of the top k must come back unless another document anywhere in the
                # model (inside the top k or just past it) ties with it: same text, same vector.
                distinct = [i for i, s in want
                            if all(abs(s - other) > 1e-4 for j, other in ranking if j != i)]
                assert {h.id for h in got} >= set(distinct)

        def teardown(self):
            if self.index is not None:
                self.index.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    return IndexMachine


@pytest.fixture
def reference_once_per_configuration(monkeypatch):
    """``index check`` compares the encoder's fast path with the slow fp32 reference on fixed probe
    texts: a property of the encoder configuration, not of the index's state. Computed once per
    configuration here (a sequence checks many times under a handful of configurations)."""
    import index.storage.check as check

    seen: dict = {}
    original = check.reference_min_cosine
    monkeypatch.setattr(check, "reference_min_cosine",
                        lambda encoder: seen.setdefault(encoder.config, None) or seen.__setitem__(
                            encoder.config, original(encoder)) or seen[encoder.config])


def run(model_path: str, examples: int, steps: int, fake: bool = False) -> Counter:
    tally: Counter = Counter()
    run_state_machine_as_test(machine_for(model_path, fake, tally), settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    print(f"model-based ({'fake encoder' if fake else 'tiny model'}): {dict(sorted(tally.items()))}")
    return tally


pytestmark = pytest.mark.usefixtures("reference_once_per_configuration")


def test_the_index_follows_its_model(tiny_model):
    run(tiny_model, examples=6, steps=10)


def test_the_index_follows_its_model_with_a_fake_encoder(tiny_model):
    tally = run(tiny_model, examples=5, steps=10, fake=True)
    assert tally["started as ivf-disk"] and tally["new bases"], tally  # the paths it is for ran


@pytest.mark.slow
def test_the_index_follows_its_model_over_long_sequences(tiny_model):
    run(tiny_model, examples=40, steps=30)


@pytest.mark.slow
def test_the_index_follows_its_model_with_a_fake_encoder_over_long_sequences(tiny_model):
    tally = run(tiny_model, examples=30, steps=40, fake=True)
    assert all(tally[f"started as {kind}"] for kind in TYPES) and tally["as ivf-disk"] and tally["splits"], tally
