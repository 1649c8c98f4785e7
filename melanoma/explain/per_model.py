"""What an explanation builds once per model: traced functions, folded copies.

Kept beside the model object (weakly keyed), so a model freed by its owner frees its entries.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

_per_model: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {key: what _cached built}


def cached(model, key: tuple, build: Callable[[], Any]) -> Any:
    """One object per model and key (a traced function, a folded copy), built once.

    The entries refer to their model, so neither is freed before the process ends: right for
    the app's few cached models, a cost for a script that explains thousands of models.
    """
    entries = _per_model.setdefault(model, {})
    if key not in entries:
        entries[key] = build()
    return entries[key]
