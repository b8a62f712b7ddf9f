"""Figures for the tutorial commands (``--plot FILE.png``): matplotlib, an optional extra.

``similarity_heatmap`` draws a ``SimilarityReport``'s word cosine matrix with
labelled rows and columns; ``layer_figure`` draws a ``LayerReport``: the
spread of token values per layer (the tutorial's histogram step, as box
plots) and the first text's similarity to the others layer by layer.
``pip install 'semsearch[plot]'`` installs matplotlib; without it the
commands say so in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SemsearchError

if TYPE_CHECKING:  # pragma: no cover
    from .contextual import LayerReport, SimilarityReport


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SemsearchError("--plot needs matplotlib: pip install 'semsearch[plot]'") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise SemsearchError(f"cannot write {path}: folder {path.parent} does not exist")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _label(item, width: int = 28) -> str:
    left = item.sentence[max(0, item.start - 12): item.start]
    right = item.sentence[item.end: item.end + 12]
    text = f"…{left}[{item.word}]{right}…"
    return text if len(text) <= width + 4 else text[: width + 3] + "…"


def similarity_heatmap(report: "SimilarityReport", path: str | Path) -> Path:
    plt = _pyplot()
    n = len(report.items)
    labels = [f"{i}: {_label(item)}" for i, item in enumerate(report.items, 1)]
    fig, ax = plt.subplots(figsize=(2.2 + 0.9 * n, 1.2 + 0.7 * n))
    image = ax.imshow(report.matrix, vmin=min(0.0, float(report.matrix.min())), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(n), [str(i) for i in range(1, n + 1)])
    ax.set_yticks(range(n), labels)
    for i in range(n):
        for j in range(n):
            value = float(report.matrix[i, j])
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="black" if value > 0.6 else "white")
    layers = " ".join(str(x) for x in report.layers)
    ax.set_title(f"word cosine ({report.combine} of layers {layers})")
    fig.colorbar(image, ax=ax, shrink=0.8)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def layer_figure(report: "LayerReport", path: str | Path) -> Path:
    plt = _pyplot()
    pairs = len(report.texts) - 1
    fig, axes = plt.subplots(1, 2 if pairs else 1, figsize=(11 if pairs else 6, 4), squeeze=False)
    box = axes[0][0]
    box.boxplot(report.values, positions=range(len(report.values)), whis=(1, 99), showfliers=False)
    box.set_xlabel("layer (0 = embeddings)")
    box.set_ylabel("token vector values (1st-99th percentile whiskers)")
    box.set_title("value spread per layer")
    box.axvline(report.sentence_layer, color="grey", linestyle=":", label="sentence-vector layer")
    box.legend(loc="upper left")
    if pairs:
        line = axes[0][1]
        for k in range(pairs):
            line.plot([s.layer for s in report.layers], [s.similarity[k] for s in report.layers], marker="o",
                      label=f"text 1 ~ text {k + 2}")
        line.axvline(report.sentence_layer, color="grey", linestyle=":")
        line.set_xlabel("layer (0 = embeddings)")
        line.set_ylabel("cosine of mean token vectors")
        line.set_title("similarity by layer")
        line.legend()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
