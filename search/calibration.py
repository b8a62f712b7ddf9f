"""Calibrated abstention for FAQ bots: when is the best match good enough to answer?

A fixed cosine threshold does not carry from one model, layer or FAQ to
another. ``choose`` takes labelled questions (each with the FAQ entry that
answers it, or none for an off-topic question), each observed as the scores
of its two best FAQ entries, and finds the score threshold and the top-1 /
top-2 margin that answer the most in-domain questions while the answers
given reach a target precision. Precision counts every answer given: a wrong
entry for an in-domain question and any answer to an off-topic question are
both mistakes.

A setting reaches the target when the lower end of its precision's Wilson
score interval at ``Z`` standard errors does, not its observed precision:
the setting that answers the most among the thousands tried sits where the
calibration questions happened to be kind, so new questions met it below
the target (StackFAQ, ten random halves: 94.5% precision on the held-out
halves for a target of 95%, half a standard error short). With the bound,
95.4% at 77.7% answered instead of 79.9% (docs/faq.md). The bound also asks
more of a calibration with few answers than of one with many.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)  # top-1 minus top-2 score, tried with every threshold
SETTING = "faq_calibration"  # where an index records its calibration
TOLERANCE = 1e-12  # a top-1/top-2 gap this close under a margin meets it (float rounding of the subtraction)
Z = 0.5  # standard errors of the Wilson bound a setting's precision must keep above the target


def precision_bound(right: int, given: int, z: float = Z) -> float:
    """The lower end of the Wilson score interval of ``right`` of ``given`` (0 when nothing was given)."""
    if given <= 0:
        return 0.0
    p, zz = right / given, z * z
    centre = p + zz / (2 * given)
    spread = z * np.sqrt(p * (1 - p) / given + zz / (4 * given * given))
    return float((centre - spread) / (1 + zz / given))


@dataclass(frozen=True)
class Observation:
    """One labelled question as the FAQ saw it: its two best entries' scores, and whether the best
    one is right (None for an off-topic question, which no entry answers)."""

    top: float
    second: float
    correct: bool | None


@dataclass(frozen=True)
class Rates:
    """What a threshold and margin do on a set of observations."""

    threshold: float
    margin: float
    answered: float  # share of in-domain questions answered
    precision: float  # share of all answers given that are right
    off_topic_answered: float | None  # share of off-topic questions answered (None: there were none)
    in_domain: int
    off_topic: int
    precision_low: float = 0.0  # the lower end of the precision's Wilson interval (``Z``)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Calibration:
    """A chosen threshold and margin, the rates they reached, and the configuration they hold for."""

    threshold: float
    margin: float
    target: float
    answered: float
    precision: float
    off_topic_answered: float | None
    in_domain: int
    off_topic: int
    layer: int
    pooling: str
    model_fingerprint: str
    calibrated_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # The lower end of the precision's Wilson interval (``Z``), which reached the target; None in a
    # calibration made before the bound (its observed precision reached it).
    precision_low: float | None = None
    # The weight of a question's closeness to an entry's answer in the score (search.faq_answers);
    # 0, as in every calibration made before it existed: the question alone.
    answer_weight: float = 0.0

    @classmethod
    def from_rates(cls, rates: Rates, target: float, config: dict[str, Any],
                   answer_weight: float = 0.0) -> "Calibration":
        return cls(threshold=rates.threshold, margin=rates.margin, target=target, answered=rates.answered,
                   precision=rates.precision, off_topic_answered=rates.off_topic_answered,
                   in_domain=rates.in_domain, off_topic=rates.off_topic, layer=int(config["layer"]),
                   pooling=str(config["pooling"]), model_fingerprint=str(config["model_fingerprint"]),
                   answer_weight=float(answer_weight), precision_low=rates.precision_low)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "Calibration":
        return cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def holds_for(self, config: dict[str, Any]) -> bool:
        """True while the index still encodes as it did when this was measured."""
        return (self.layer, self.pooling, self.model_fingerprint) == (
            int(config["layer"]), str(config["pooling"]), str(config["model_fingerprint"]))


def answers(observation: Observation, threshold: float, margin: float) -> bool:
    return observation.top >= threshold and observation.top - observation.second >= margin - TOLERANCE


def rates(observations: Sequence[Observation], threshold: float, margin: float, z: float = Z) -> Rates:
    in_domain = [o for o in observations if o.correct is not None]
    off_topic = [o for o in observations if o.correct is None]
    given = [o for o in observations if answers(o, threshold, margin)]
    right = sum(1 for o in given if o.correct)
    answered_in = sum(1 for o in in_domain if answers(o, threshold, margin))
    answered_off = sum(1 for o in off_topic if answers(o, threshold, margin))
    return Rates(threshold=float(threshold), margin=margin,
                 answered=answered_in / len(in_domain) if in_domain else 0.0,
                 precision=right / len(given) if given else 1.0,
                 off_topic_answered=answered_off / len(off_topic) if off_topic else None,
                 in_domain=len(in_domain), off_topic=len(off_topic),
                 precision_low=precision_bound(right, len(given), z))


def candidates(observations: Sequence[Observation], z: float = Z) -> list[Rates]:
    """Every useful (threshold, margin): each observed top score as a threshold, each margin of MARGINS
    (computed with cumulative counts over the scores sorted from high to low)."""
    top = np.array([o.top for o in observations], dtype=np.float64)
    gap = top - np.array([o.second for o in observations], dtype=np.float64)
    kind = np.array([-1 if o.correct is None else int(o.correct) for o in observations])  # 1 right, 0 wrong
    n_in, n_off = int((kind >= 0).sum()), int((kind < 0).sum())
    order = np.argsort(-top, kind="stable")
    top, gap, kind = top[order], gap[order], kind[order]
    # A threshold equal to top[i] answers every question scoring at least that: up to the last tie.
    last = np.r_[np.nonzero(np.diff(top))[0], len(top) - 1]
    out = []
    for margin in MARGINS:
        ok = gap >= margin - TOLERANCE
        given = np.cumsum(ok)[last]
        right = np.cumsum(ok & (kind == 1))[last]
        answered_in = np.cumsum(ok & (kind >= 0))[last]
        answered_off = np.cumsum(ok & (kind < 0))[last]
        for i, t in enumerate(top[last]):
            out.append(Rates(threshold=float(t), margin=margin,
                             answered=float(answered_in[i]) / n_in if n_in else 0.0,
                             precision=float(right[i]) / float(given[i]) if given[i] else 1.0,
                             off_topic_answered=float(answered_off[i]) / n_off if n_off else None,
                             in_domain=n_in, off_topic=n_off,
                             precision_low=precision_bound(int(right[i]), int(given[i]), z)))
    return out


def choose(observations: Sequence[Observation], target: float, z: float = Z) -> tuple[Rates | None, Rates]:
    """``(the setting that answers the most in-domain questions with its precision's Wilson bound
    at ``z`` standard errors at or above ``target``, or None; the most precise setting that still answers
    something)``. Ties go to fewer off-topic answers, then to the higher threshold (further from
    the edge)."""
    if not any(o.correct is not None for o in observations):
        raise ValueError("calibration needs in-domain questions (with the FAQ entry that answers them)")
    options = [r for r in candidates(observations, z) if r.answered > 0]
    # A target of 1 asks for no mistake at all, which no bound below 1 can show: the observed precision.
    reaching = [r for r in options if (r.precision >= 1.0 if target >= 1.0 else r.precision_low >= target)]
    best = max(reaching, key=lambda r: (r.answered, -(r.off_topic_answered or 0.0), r.threshold), default=None)
    top = max(options, key=lambda r: (r.precision, r.answered))
    return best, top
