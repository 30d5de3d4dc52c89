"""Looking inside trained nets (lecture slides "ZFNet", "Initialization", "Learning Rates",
"Receptive Fields").

- :mod:`cnnkit.viz.maps`: first-layer filters and feature maps of one image (Zeiler &
  Fergus 2014, "Visualizing and understanding convolutional networks", the visualisation
  that produced ZFNet) and saliency maps (Simonyan, Vedaldi & Zisserman 2014, "Deep inside
  convolutional networks": the gradient of the class score with respect to the pixels);
- :mod:`cnnkit.viz.stats`: per-layer activation and gradient statistics and histograms,
  the lecture's initialisation slides (activations collapse with a small std, saturate
  with a large one);
- :mod:`cnnkit.viz.plots`: learning-rate schedules (:class:`cnnkit.train.schedule.Schedule`)
  and receptive-field growth (:func:`cnnkit.analysis.plot.plot_receptive_field`).

Every ``plot_*`` function returns a matplotlib ``Figure`` built with the object API (no
pyplot, no GUI backend) and saves it when given ``output``. Importing this package loads
neither matplotlib nor the model zoo.
"""

from __future__ import annotations

from cnnkit._lazy import lazy_getattr

# name -> submodule; loaded on first use (PEP 562) so that `cnnkit --help` does not import torch
_EXPORTS = {
    "feature_maps": "maps",
    "first_layer_filters": "maps",
    "plot_feature_maps": "maps",
    "plot_filters": "maps",
    "plot_saliency": "maps",
    "saliency": "maps",
    "plot_rf_growth": "plots",
    "plot_schedules": "plots",
    "LayerStats": "stats",
    "NetStats": "stats",
    "layer_stats": "stats",
    "plot_activation_histograms": "stats",
    "plot_layer_scales": "stats",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
