"""Survey scores from counts of answers (docs/surveys.md#scores): pure and exact.

Every score is computed on fractions, then rounded once to 2 places, half away from
zero (Decimal's ROUND_HALF_UP on the exact value: 0.125 is 0.13, 2/3 is 0.67, −12.345
is −12.35); a score with no answers to make it from is None (JSON null).

- mean: of a question's answers (rating 1–5, nps 0–10).
- CSAT: the share of a rating question's answers that are 4 or 5, in %.
- CSI: 100 × Σ w·(mean − 1)/4 / Σ w over the rating questions that have answers
  (0 when every answer is 1, 100 when every answer is 5).
- NPS: % of answers 9–10 minus % of answers 0–6 (−100…100).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from mailer.config.survey import SCALES, Question

Counts = Mapping[int, int]  # answer -> how many gave it


def rounded(value: Fraction | None) -> float | None:
    """VALUE to 2 places, half away from zero, computed exactly; None stays None."""
    if value is None:
        return None
    # Integer arithmetic on the fraction: what Decimal's ROUND_HALF_UP does to the exact
    # value, with no division first (Decimal would round 1/3 to its precision first).
    hundredths = math.floor(abs(value) * 100 + Fraction(1, 2))
    return float(Decimal(hundredths if value >= 0 else -hundredths).scaleb(-2))


def _total(counts: Counts) -> int:
    return sum(counts.values())


def mean(counts: Counts) -> Fraction | None:
    """The mean answer; None without answers."""
    total = _total(counts)
    return Fraction(sum(value * n for value, n in counts.items()), total) if total else None


def csat(counts: Counts) -> Fraction | None:
    """The % of a rating question's answers that are 4 or 5."""
    total = _total(counts)
    return Fraction(100 * (counts.get(4, 0) + counts.get(5, 0)), total) if total else None


def nps(counts: Counts) -> Fraction | None:
    """% promoters (9–10) minus % detractors (0–6)."""
    total = _total(counts)
    if not total:
        return None
    promoters = sum(n for value, n in counts.items() if value >= 9)
    detractors = sum(n for value, n in counts.items() if value <= 6)
    return Fraction(100 * (promoters - detractors), total)


def csi(ratings: Iterable[tuple[Fraction, Counts]]) -> Fraction | None:
    """100 × Σ w·(mean − 1)/4 / Σ w over the (weight, counts) of the rating questions that
    have answers; None when none has."""
    weighted, weights = Fraction(0), Fraction(0)
    for weight, counts in ratings:
        average = mean(counts)
        if average is None:
            continue
        weighted += weight * (average - 1) / 4
        weights += weight
    return 100 * weighted / weights if weights else None


def in_scale(question: Question, counts: Counts) -> dict[int, int]:
    """The counts of the answers the question's scale has (an answer given to an earlier
    version where the question had another kind is left out), every scale value listed."""
    return {value: counts.get(value, 0) for value in SCALES[question.kind]}


@dataclass(frozen=True)
class QuestionScore:
    id: str
    kind: str
    count: int
    mean: Fraction | None
    csat: Fraction | None
    distribution: dict[str, int]  # answer (as JSON keys are: text) -> answers

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "count": self.count,
                "mean": rounded(self.mean), "csat": rounded(self.csat),
                "distribution": self.distribution}


def score_question(question: Question, *, numbers: Counts, texts: Mapping[str, int],
                   answered: int) -> QuestionScore:
    """One question's line: rating and nps from NUMBERS (the mean for both, CSAT for
    ratings), choice from TEXTS (the options in file order, then any answer an earlier
    version offered), text questions by ANSWERED alone."""
    if question.kind in SCALES:
        counts = in_scale(question, numbers)
        return QuestionScore(question.id, question.kind, _total(counts), mean(counts),
                             csat(counts) if question.kind == "rating" else None,
                             {str(value): n for value, n in counts.items()})
    if question.kind == "choice":
        options = list(question.options or ())
        distribution = {option: texts.get(option, 0) for option in options}
        distribution.update({text: n for text, n in sorted(texts.items()) if text not in options})
        return QuestionScore(question.id, question.kind, sum(distribution.values()), None, None,
                             distribution)
    return QuestionScore(question.id, question.kind, answered, None, None, {})


def survey_csi(questions: Sequence[Question], numbers: Mapping[str, Counts]) -> Fraction | None:
    """The CSI of the rating QUESTIONS from NUMBERS (question -> counts)."""
    return csi((q.exact_weight, in_scale(q, numbers.get(q.id, {})))
               for q in questions if q.kind == "rating")


def survey_nps(questions: Sequence[Question], numbers: Mapping[str, Counts]) -> Fraction | None:
    """The NPS of the survey's nps question (None without one or without answers)."""
    question = next((q for q in questions if q.kind == "nps"), None)
    return None if question is None else nps(in_scale(question, numbers.get(question.id, {})))
