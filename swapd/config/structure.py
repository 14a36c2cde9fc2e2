"""The one cattrs converter: shaped, checked data → frozen ``Config``.

Dict keys are YAML spellings (``healthCheckTimeout``) for settings and Python names for
derived fields (``argv``); the per-class hooks are generated from ``model.py`` so the
mapping cannot drift. Extra keys are forbidden: by the time data gets here ``shape.py``
has rejected unknown keys with a better message, so a failure here is a bug and is
reported as such.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from swapd.config.model import Config, MacroValue

__all__ = ["structure_config"]


@functools.cache
def _converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    # Values were typed by shape.py; keep them exactly (a union of scalars needs no choice).
    converter.register_structure_hook(MacroValue, lambda value, _: value)
    converter.register_structure_hook(Any, lambda value, _: value)

    def hook_factory(cls: type) -> Any:
        renames: dict[str, Any] = {
            f.name: override(rename=f.metadata["key"])
            for f in attrs.fields(cls)
            if "key" in f.metadata
        }
        return make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True, **renames)

    converter.register_structure_hook_factory(attrs.has, hook_factory)
    return converter


def structure_config(data: dict[str, Any]) -> Config:
    """Build the frozen Config. Raises cattrs' errors only on a bug upstream of here."""
    return _converter().structure(data, Config)
