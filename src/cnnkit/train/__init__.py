"""The trainer (the lecture's "key ingredients of training"): config, defaults, loop, recipes.

The package is also the function a user calls: ``cnnkit.train(model="resnet20", epochs=2)``
trains as ``cnnkit train --model resnet20 --epochs 2`` does (the default recipe, its values
fitted to the model and the data); ``cnnkit.train(cfg)`` trains a
:class:`~cnnkit.train.config.TrainConfig` as given. One name, one object: the name
``cnnkit.train`` is this package whether or not its submodules were imported first, and it
is callable.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnkit.train.config import TrainConfig


class _CallablePackage(types.ModuleType):
    def __call__(self, cfg: TrainConfig | None = None, /, **fields: Any) -> dict[str, Any]:
        """Train; returns ``final.json``'s contents. ``fields``: TrainConfig's fields, as flags."""
        import dataclasses

        from cnnkit.train.config import resolve_config
        from cnnkit.train.loop import train

        if cfg is not None:
            return train(dataclasses.replace(cfg, **fields))
        return train(*resolve_config(fields))


sys.modules[__name__].__class__ = _CallablePackage
