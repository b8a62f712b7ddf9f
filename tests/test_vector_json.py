"""``json_arrays``: the numbers ``semsearch embed`` prints, written by numpy, read back as json.dumps wrote them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index.model.vector_json import json_arrays


def reference(matrix: np.ndarray) -> list[list[float]]:
    return [json.loads(json.dumps(np.round(row.astype(np.float64), 7).tolist())) for row in matrix]


@pytest.mark.parametrize("seed", range(5))
def test_unit_vectors_read_back_as_the_rounded_numbers(seed):
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((int(rng.integers(1, 40)), int(rng.integers(1, 400)))).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix[0, 0] = rng.choice([0.0, -1e-9, 1.0, -1.0, 1.23e-5, -4.99999e-8, 5.1e-8, 0.99999996])
    got = [json.loads(line) for line in json_arrays(matrix)]
    assert got == reference(matrix)


def test_edges_round_half_and_magnitudes_up_to_ten():
    matrix = np.array([[0.0, -0.0, 1.0, -1.0, 0.12345675, -0.12345665, 9.9999999, -9.99999994, 3e-8, 1e-7]])
    assert [json.loads(line) for line in json_arrays(matrix)] == reference(matrix)
    assert json_arrays(matrix)[0].startswith("[ 0.0000000, 0.0000000, 1.0000000,-1.0000000,")


@pytest.mark.parametrize("value", [10.0, -123.456, float("nan"), float("inf")])
def test_large_or_non_finite_values_take_the_slow_path(value):
    matrix = np.array([[0.5, value], [0.25, -0.25]])
    lines = json_arrays(matrix)
    assert lines[1] == "[0.25, -0.25]" and lines[0] == json.dumps(np.round(matrix[0], 7).tolist())


def test_shapes():
    assert json_arrays(np.zeros((2, 0))) == ["[]", "[]"]
    assert json_arrays(np.zeros((0, 3))) == []
    with pytest.raises(ValueError, match="2-d"):
        json_arrays(np.zeros(3))
