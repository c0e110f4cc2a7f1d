"""Fit what turns the network's score into an answer: Platt calibration and named operating points.

Both are chosen on the validation split of the sources that hold both classes (within-source:
``siim``), never on test, and stored in the model's sidecar, where the core
(``cxr.calibration.DecisionRule``) reads them for every caller. ``evaluate --calibrate``
runs this before it scores the test split.

* **Calibration**: Platt scaling, a logistic regression of the label on the logit of the raw
  P(Covid). Two parameters: the slope undoes over- or under-confidence (what temperature
  scaling does), the intercept the shift between the training balance (class weights make
  the network act as if both classes were equally common) and the films' real mix.
* **Operating points** on the calibrated validation probabilities: ``balanced`` maximises the
  smaller of sensitivity and specificity (the equal-error point), the default;
  ``high_sensitivity`` is the highest threshold whose validation sensitivity reaches
  ``HIGH_SENSITIVITY_TARGET``, for screening, where a missed Covid film costs more than a false
  alarm. Why not Youden's J (the maximum of sensitivity + specificity) for ``balanced``: J is flat
  near its maximum, so its argmax lands wherever noise puts it; on the shipped model's siim val it
  sat at sensitivity 0.76 / specificity 0.89, which is not balanced. Its threshold is still
  recorded in the sidecar (``youden_threshold``) for comparison.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_curve

from cxr.calibration import Calibration, expected_calibration_error, logit

# The issue asks for sensitivity >= 0.90 on val; choosing 0.92 there leaves about one standard
# error (379 Covid films in siim val: sqrt(0.9 * 0.1 / 379) = 0.015) so that new films of the
# same kind still reach 0.90.
HIGH_SENSITIVITY_TARGET = 0.92


def fit_platt(y_covid: np.ndarray, p_raw: np.ndarray) -> Calibration:
    """Platt scaling of raw P(Covid), fitted by (practically unregularised) logistic regression."""
    x = logit(p_raw).reshape(-1, 1)
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(x, np.asarray(y_covid, dtype=int))
    return Calibration("platt", float(fit.coef_[0, 0]), float(fit.intercept_[0]))


def balanced_threshold(y_covid: np.ndarray, p_covid: np.ndarray) -> float:
    """The threshold maximising min(sensitivity, specificity): the equal-error point."""
    fpr, tpr, cut = roc_curve(y_covid, p_covid)
    return float(cut[1:][np.argmax(np.minimum(tpr, 1 - fpr)[1:])])  # cut[0] is +inf


def youden_threshold(y_covid: np.ndarray, p_covid: np.ndarray) -> float:
    fpr, tpr, cut = roc_curve(y_covid, p_covid)
    return float(cut[1:][np.argmax((tpr - fpr)[1:])])  # cut[0] is +inf


def recall_threshold(y_covid: np.ndarray, p_covid: np.ndarray, target_recall: float) -> float:
    """The highest threshold whose Covid recall still reaches ``target_recall``."""
    if not 0 < target_recall <= 1:
        raise ValueError("the target recall must be in (0, 1]")
    positives = np.sort(p_covid[y_covid == 1])[::-1]
    k = math.ceil(target_recall * len(positives))
    return float(positives[k - 1])


def rates(y_covid: np.ndarray, p_covid: np.ndarray, threshold: float) -> dict:
    pred = p_covid >= threshold
    return {"sensitivity": float(pred[y_covid == 1].mean()), "specificity": float((~pred[y_covid == 0]).mean())}


def fit_decision(y_covid: np.ndarray, p_raw: np.ndarray, *, val_sources: list[str],
                 high_sensitivity: float = HIGH_SENSITIVITY_TARGET) -> dict:
    """The sidecar entries ``calibration``, ``operating_points``, ``default_operating_point`` and
    ``threshold`` (the default point's, for readers that know only one threshold)."""
    calibration = fit_platt(y_covid, p_raw)
    p_cal = calibration.apply(p_raw)
    youden = youden_threshold(y_covid, p_cal)
    where = f"the val split of {', '.join(val_sources)} ({len(y_covid)} films)"
    points = {
        "balanced": (balanced_threshold(y_covid, p_cal),
                     f"maximum of the smaller of sensitivity and specificity (equal error) on {where}"),
        "high_sensitivity": (recall_threshold(y_covid, p_cal, high_sensitivity),
                             f"highest threshold with sensitivity >= {high_sensitivity} on {where}: for "
                             "screening, where a missed Covid film costs more than a false alarm"),
    }
    return {
        "calibration": {
            "method": calibration.method, "slope": calibration.slope, "intercept": calibration.intercept,
            "fitted_on": where,
            "val_log_loss": {"raw": float(log_loss(y_covid, np.clip(p_raw, 1e-7, 1 - 1e-7))),
                             "calibrated": float(log_loss(y_covid, p_cal))},
            "val_ece_10_bins": {"raw": expected_calibration_error(y_covid, p_raw),
                                "calibrated": expected_calibration_error(y_covid, p_cal)},
        },
        "operating_points": {
            name: {"threshold": threshold, "description": rule,
                   **{f"val_{k}": v for k, v in rates(y_covid, p_cal, threshold).items()}}
            for name, (threshold, rule) in points.items()
        },
        "default_operating_point": "balanced",
        "youden_threshold": {"threshold": youden,
                             **{f"val_{k}": v for k, v in rates(y_covid, p_cal, youden).items()},
                             "note": "maximum of sensitivity + specificity on the same films; not an operating point"},
        "threshold": points["balanced"][0],
        "threshold_selection": {"method": "the `balanced` operating point (see operating_points)"},
    }
