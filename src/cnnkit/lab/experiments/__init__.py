"""The catalogue of ``cnnkit lab`` experiments, one module per claim of the lecture, in the
lecture's order (convolutions, architectures, ingredients of training).

An experiment module declares its texts (``ABOUT``: the claim, its slide, the verdict rule),
what it trains (``ARMS``, ``BUDGETS``), the functions ``measure``, ``judge`` and ``tables``,
and what it plots (``FIGURES``, see :mod:`cnnkit.lab.figures`); its last line,
``EXPERIMENT = experiment(__name__)`` (:func:`cnnkit.lab.common.experiment`), makes them its
:class:`~cnnkit.lab.spec.Experiment`.
"""

from __future__ import annotations

import difflib

from cnnkit.lab.experiments import (
    activation,
    augment,
    bottleneck,
    cardinality,
    dense,
    dilation,
    ensemble,
    init,
    multiplier,
    norm,
    regularise,
    residual,
    schedule,
    se,
    separable,
    shuffle,
    stack,
    transposed,
    wide,
)
from cnnkit.lab.spec import Experiment

__all__ = ["EXPERIMENTS", "get_experiment"]

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        separable.EXPERIMENT,
        multiplier.EXPERIMENT,
        shuffle.EXPERIMENT,
        dilation.EXPERIMENT,
        transposed.EXPERIMENT,
        stack.EXPERIMENT,
        bottleneck.EXPERIMENT,
        residual.EXPERIMENT,
        wide.EXPERIMENT,
        cardinality.EXPERIMENT,
        ensemble.EXPERIMENT,
        dense.EXPERIMENT,
        se.EXPERIMENT,
        regularise.EXPERIMENT,
        norm.EXPERIMENT,
        init.EXPERIMENT,
        augment.EXPERIMENT,
        schedule.EXPERIMENT,
        activation.EXPERIMENT,
    )
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; unknown names raise with the closest ones."""
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, list(EXPERIMENTS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown experiment {name!r}{hint}; choose from {', '.join(EXPERIMENTS)} or all")
    return EXPERIMENTS[name]
