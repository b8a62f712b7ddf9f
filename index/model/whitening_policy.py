"""Whether ``--whitening auto`` whitens a model's layer: decided from measurements, recorded with the fit.

``MEASURED`` lists the configurations measured by ``bench/whitening.py`` (the
figures are in ``docs/quality.md``); ``auto`` whitens where whitening helped on
every set measured, and leaves the method's raw vectors everywhere else: a
model or layer nobody measured (a plain pre-trained BERT, the tests' tiny
model) stays raw under ``auto`` and is whitened only on request (``on``).
Layer −1 of a sentence-embedding model (the layer it was fine-tuned on) is
not whitened unless shown to help.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import options

MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Decision:
    """Whether to whiten, and why (recorded in the index, shown by ``index info``)."""

    whiten: bool
    reason: str


# (model name as recorded, layer) -> (whiten, what was measured)
MEASURED: dict[tuple[str, int], tuple[bool, str]] = {
    (options.EMBEDDED_MODEL, -2): (
        True, "measured by bench/whitening.py: better than raw on STSb, KorSTS, StackFAQ (questions and answers) "
              "and SciFact"),
    (options.EMBEDDED_MODEL, -1): (
        False, "the layer this sentence-embedding model was fine-tuned on; whitening it made STSb, StackFAQ "
               "and SciFact worse (docs/quality.md)"),
}


def decide(mode: str, model: str, layer: int) -> Decision:
    """Whether an index of ``model`` at ``layer`` is whitened under ``mode`` (auto, on or off)."""
    if mode == "off":
        return Decision(False, "off: the method's raw vectors (bert-as-service's exact vectors)")
    if mode == "on":
        return Decision(True, "on: asked for")
    if mode != "auto":
        raise ValueError(f"whitening must be one of {', '.join(MODES)} (got {mode!r})")
    measured = MEASURED.get((model, int(layer)))
    if measured is None:
        return Decision(False, "auto: not measured for this model and layer, so the raw vectors are kept "
                               "(--whitening on to whiten)")
    whiten, why = measured
    return Decision(whiten, f"auto: {why}")
