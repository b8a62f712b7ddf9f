"""The index against a model of it: random sequences of writes, checked after every step.

A Hypothesis ``RuleBasedStateMachine`` drives a real index on the tiny model: adds and upserts
(same and changed text, changed metadata), batches with repeated ids, deletes of present and
absent ids, close and reopen, a layer switch (re-encoding) and a type switch between flat and
hnsw (tombstones after deletes), and ``index check``. After every step the stored documents,
texts and metadata must equal the model's, and a search must return the brute-force ranking
over the model's documents. Bounded (a handful of examples and steps) in the fast suite; the
``slow`` variant runs longer sequences.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from index import Index
from search import Searcher

WORDS = "bank river money boat sea fox cat mat apple fruit password reset account invoice".split()
TEXTS = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
IDS = st.sampled_from([f"d{i}" for i in range(10)])
METADATA = st.fixed_dictionaries({"n": st.integers(0, 3)})
QUERIES = ("money in the bank", "a fox and a cat", "reset my account password")


def machine_for(model_path: str):
    class IndexMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.folder = Path(tempfile.mkdtemp(prefix="semsearch-model-based-"))
            self.path = self.folder / "idx"
            self.index = Index.create(self.path, model=model_path)
            self.model: dict[str, tuple[str, dict]] = {}

        # --- writes --------------------------------------------------------------------------
        @rule(doc_id=IDS, text=TEXTS, metadata=METADATA)
        def add_one(self, doc_id, text, metadata):
            self.index.add([{"id": doc_id, "text": text, "metadata": metadata}])
            self.model[doc_id] = (text, metadata)

        @rule(batch=st.lists(st.tuples(IDS, TEXTS, METADATA), min_size=1, max_size=8))
        def add_batch(self, batch):
            result = self.index.add([{"id": i, "text": t, "metadata": m} for i, t, m in batch])
            repeated = {i for i in (b[0] for b in batch) if [b[0] for b in batch].count(i) > 1}
            assert set(result.duplicates) == repeated
            for doc_id, text, metadata in batch:  # the last of a repeated id wins
                self.model[doc_id] = (text, metadata)

        @rule(doc_id=IDS, metadata=METADATA)
        def change_metadata_only(self, doc_id, metadata):
            if doc_id in self.model:
                text = self.model[doc_id][0]
                result = self.index.add([{"id": doc_id, "text": text, "metadata": metadata}])
                assert result.passages == 0  # same text: nothing encoded again
                self.model[doc_id] = (text, metadata)

        @rule(doc_ids=st.lists(st.one_of(IDS, st.just("absent")), min_size=1, max_size=4, unique=True))
        def delete(self, doc_ids):
            result = self.index.delete(doc_ids)
            assert set(result.deleted) == {i for i in doc_ids if i in self.model}
            assert set(result.missing) == {i for i in doc_ids if i not in self.model}
            for doc_id in doc_ids:
                self.model.pop(doc_id, None)

        # --- the index's life -----------------------------------------------------------------
        @rule()
        def reopen(self):
            self.index.close()
            self.index = Index.open(self.path)

        @rule(layer=st.sampled_from([-1, -2]))
        def rebuild_with_layer(self, layer):
            self.index.rebuild(layer=layer)
            assert int(self.index.config["layer"]) == layer

        @precondition(lambda self: len(self.model) > 0)
        @rule(kind=st.sampled_from(["flat", "hnsw"]))
        def switch_type(self, kind):
            self.index.rebuild(index_type=kind)
            assert self.index.vectors.kind == kind

        @rule()
        def check(self):
            report = self.index.check(sample=5)
            assert report.ok, report.problems

        # --- what must hold after every step ----------------------------------------------------
        @invariant()
        def documents_are_the_models(self):
            assert self.index.store.counts()[0] == len(self.model)
            assert self.index.store.documents(list(self.model)) == self.model
            assert set(self.index.vectors.ids().tolist()) == set(self.index.store.passage_ids().tolist())

        @invariant()
        def search_is_the_brute_force_ranking(self):
            if not self.model:
                return
            encoder = self.index.encoder
            ids = sorted(self.model)
            vectors = encoder.encode([self.model[i][0] for i in ids])
            searcher = Searcher(self.index)
            k = min(4, len(ids))
            for query in QUERIES:
                scores = vectors @ encoder.encode([query])[0]
                ranking = sorted(zip(ids, scores), key=lambda pair: -pair[1])
                want = ranking[:k]
                got = searcher.search(query, k=k)
                assert len(got) == k
                assert np.allclose([h.score for h in got], [s for _, s in want], atol=1e-4), (query, got, want)
                # A document of the top k must come back unless another document anywhere in the
                # model (inside the top k or just past it) ties with it: same text, same vector.
                distinct = [i for i, s in want
                            if all(abs(s - other) > 1e-4 for j, other in ranking if j != i)]
                assert {h.id for h in got} >= set(distinct)

        def teardown(self):
            self.index.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    return IndexMachine


def run(model_path: str, examples: int, steps: int) -> None:
    run_state_machine_as_test(machine_for(model_path), settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))


def test_the_index_follows_its_model(tiny_model):
    run(tiny_model, examples=6, steps=10)


@pytest.mark.slow
def test_the_index_follows_its_model_over_long_sequences(tiny_model):
    run(tiny_model, examples=40, steps=30)
