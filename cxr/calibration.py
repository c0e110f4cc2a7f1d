"""From the network's raw softmax to the answer: calibrated P(Covid) and a named operating point.

The network's softmax is not a probability one can read as such (on siim test the shipped
model said 0.49 on average where 62% of films were Covid). ``model_training.evaluate
--calibrate`` fits a Platt scaling on the within-source validation split,

    P(Covid) = sigmoid(slope * logit(raw P(Covid)) + intercept),

and chooses named decision thresholds on the calibrated validation probabilities. Both go
into the model's sidecar, so every caller of the core (the app, the batch route, the predict
CLI, the evaluation) applies the same ones. A sidecar without them (models trained before
calibration existed, the tests' tiny models) means: no calibration, one operating point
``default`` at the sidecar's ``threshold``. Platt scaling is monotonic, so it never changes
the ranking (ROC AUC) of the images, only what the number means.

NumPy only: the serving image imports this without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metadata import DEFAULT_THRESHOLD

LEGACY_OPERATING_POINT = "default"
_EPS = 1e-7


class UnknownOperatingPoint(ValueError):
    """A caller asked for an operating point this model does not have."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(f"Unknown operating point {name!r}; this model has: {', '.join(known)}.")
        self.name = name
        self.known = known


@dataclass(frozen=True)
class Calibration:
    """Platt scaling on the logit of the raw Covid probability; identity when ``method == "none"``."""

    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0

    @classmethod
    def from_metadata(cls, entry: dict | None) -> Calibration:
        if not entry or entry.get("method", "none") == "none":
            return cls()
        return cls(entry["method"], float(entry["slope"]), float(entry["intercept"]))

    @property
    def active(self) -> bool:
        return self.method != "none"

    def apply(self, p_covid):
        """Calibrated P(Covid) for raw P(Covid) (a float or an array of them)."""
        if not self.active:
            return p_covid
        return sigmoid(self.slope * logit(p_covid) + self.intercept)


@dataclass(frozen=True)
class OperatingPoint:
    """A named threshold on calibrated P(Covid): Covid exactly when P(Covid) >= threshold."""

    name: str
    threshold: float
    description: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "threshold": round(self.threshold, 6)}


@dataclass(frozen=True)
class DecisionRule:
    """Calibration plus the model's operating points, read once from its sidecar."""

    calibration: Calibration
    operating_points: dict[str, OperatingPoint]
    default: str

    @classmethod
    def from_metadata(cls, metadata: dict) -> DecisionRule:
        calibration = Calibration.from_metadata(metadata.get("calibration"))
        points = {name: OperatingPoint(name, float(entry["threshold"]), entry.get("description", ""))
                  for name, entry in (metadata.get("operating_points") or {}).items()}
        if not points:
            threshold = float(metadata.get("threshold", DEFAULT_THRESHOLD))
            points = {LEGACY_OPERATING_POINT: OperatingPoint(LEGACY_OPERATING_POINT, threshold,
                                                             "the sidecar's single threshold")}
        default = metadata.get("default_operating_point") or next(iter(points))
        if default not in points:
            raise ValueError(f"default_operating_point {default!r} is not among {sorted(points)}")
        return cls(calibration, points, default)

    @property
    def names(self) -> list[str]:
        return list(self.operating_points)

    def operating_point(self, name: str | None = None) -> OperatingPoint:
        """The named operating point (the default for None); :class:`UnknownOperatingPoint` if absent."""
        if name is None or name == "":
            return self.operating_points[self.default]
        if name not in self.operating_points:
            raise UnknownOperatingPoint(name, self.names)
        return self.operating_points[name]


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def expected_calibration_error(y_covid, p_covid, bins: int = 10) -> float:
    """ECE with ``bins`` equal-width bins: the mean |share of Covid - mean P(Covid)|, weighted by bin size."""
    y, p = np.asarray(y_covid, dtype=float), np.asarray(p_covid, dtype=float)
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y))
