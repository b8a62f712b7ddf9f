"""The torch backend without transformers (``index.model.direct``): BERT built from its weight file.

A folder is built this way only after transformers loaded it once and the
direct build gave the library's vectors; each direct load checks its probe
vectors against those recorded, and a changed file, layer or disagreement
sends the load through transformers again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from index.model import direct, model_cache
from index.model.encoder import Encoder

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["how do i reset my password", "the bank of the river", "배를 타고 바다로 갔다", "a b c " * 15]


@pytest.fixture
def own_model(tiny_model, tmp_path) -> str:
    """A copy of the tiny model that a test may change."""
    return str(shutil.copytree(tiny_model, tmp_path / "model"))


def fresh(model: str, **options) -> Encoder:
    Encoder.clear_cache()
    return Encoder.load(model, backend="torch", precision="fp32", **options)


def is_direct(encoder: Encoder) -> bool:
    return isinstance(encoder.runner.model, direct.DirectBert)


def test_the_second_load_builds_the_model_directly_with_the_same_vectors(own_model, isolated_cache):
    first = fresh(own_model)
    assert not is_direct(first)  # transformers loads it once and the direct build is verified
    second = fresh(own_model)
    assert is_direct(second) and second.lean
    assert second.fingerprint == first.fingerprint
    np.testing.assert_allclose(second.encode(TEXTS), first.encode(TEXTS), atol=1e-6)
    assert [len(t) for t in second.tokenizer.ids(TEXTS)] == [len(t) for t in first.tokenizer.ids(TEXTS)]


def test_a_bulk_job_on_the_direct_build_imports_no_transformers(own_model, isolated_cache):
    fresh(own_model)  # records the direct build
    code = (
        "import sys; from index.model.encoder import Encoder;"
        f"e = Encoder.load({own_model!r}, backend='torch', precision='fp32');"
        "v = e.encode(['reset my password'] * 40);"
        "print(v.shape, 'transformers' in sys.modules)"
    )
    env = {**os.environ, "SEMSEARCH_CACHE": str(isolated_cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["(40,", "32)", "False"]


def test_another_layer_is_verified_through_transformers_first(own_model, isolated_cache):
    fresh(own_model, layer=-2)
    assert is_direct(fresh(own_model, layer=-2))
    other = fresh(own_model, layer=-1)
    assert not is_direct(other)  # not verified at this layer yet
    direct_other = fresh(own_model, layer=-1)
    assert is_direct(direct_other)
    np.testing.assert_allclose(direct_other.encode(TEXTS), other.encode(TEXTS), atol=1e-6)
    assert sorted(model_cache.direct_record(own_model).checks) == ["l2-mean-t64", "l3-mean-t64"]


def test_a_changed_weight_file_goes_through_transformers_again(own_model, isolated_cache, tmp_path):
    from tiny_model import perturbed_copy

    before = fresh(own_model)
    assert is_direct(fresh(own_model))
    changed = perturbed_copy(Path(own_model), tmp_path / "changed")
    shutil.copyfile(changed / direct.WEIGHTS, Path(own_model) / direct.WEIGHTS)
    after = fresh(own_model)
    assert not is_direct(after) and after.fingerprint != before.fingerprint
    again = fresh(own_model)
    assert is_direct(again) and again.fingerprint == after.fingerprint
    np.testing.assert_allclose(again.encode(TEXTS), after.encode(TEXTS), atol=1e-6)


def test_a_direct_build_that_drifts_is_dropped(own_model, isolated_cache, monkeypatch):
    reference = fresh(own_model).encode(TEXTS)
    assert is_direct(fresh(own_model))
    original = direct.Embeddings.forward

    def drifting(self, **kw):
        out = original(self, **kw)
        out[..., 0] += 0.5  # one dimension off
        return out

    monkeypatch.setattr(direct.Embeddings, "forward", drifting)
    drifted = fresh(own_model)
    assert not is_direct(drifted)  # its probe vectors no longer match the recorded ones
    np.testing.assert_allclose(drifted.encode(TEXTS), reference, atol=1e-6)
    assert model_cache.direct_record(own_model) is None  # and transformers no longer vouches for it
    assert not is_direct(fresh(own_model))


def test_older_checkpoint_layouts_load_to_the_same_weights(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(Path(tiny_model) / direct.WEIGHTS))
    renamed = {"bert." + direct.legacy(name): t for name, t in tensors.items()}
    assert any(name.endswith("LayerNorm.gamma") for name in renamed)
    folder = tmp_path / "old-layout"
    folder.mkdir()
    shutil.copyfile(Path(tiny_model) / "config.json", folder / "config.json")
    save_file(renamed, str(folder / direct.WEIGHTS))
    a, b = direct.load(tiny_model), direct.load(str(folder))
    assert a is not None and b is not None
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_what_the_direct_build_does_not_handle(tiny_model, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    config = json.loads((Path(tiny_model) / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config))
    assert direct.read_config(str(folder)) is not None
    assert not direct.possible(str(folder)) and direct.load(str(folder)) is None  # no model.safetensors
    for change in ({"hidden_act": "silu"}, {"position_embedding_type": "relative_key"}, {"model_type": "roberta"},
                   {"is_decoder": True}):
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        assert direct.read_config(str(folder)) is None, change
    shutil.copyfile(Path(tiny_model) / "config.json", folder / "config.json")
    (folder / direct.WEIGHTS).write_bytes(b"not a safetensors file")
    assert direct.load(str(folder)) is None
