"""YAML text → frozen, validated ``Config``. No trio, no HTTP here.

``load_config(path)`` is the door; ``model.py`` is the schema; see ``load.py`` for the
pipeline and ``schema.py`` for the JSON schema derived from the same classes.
"""

from swapd.config.load import load_config, parse_config
from swapd.config.model import (
    DEFAULT_GROUP,
    Config,
    Endpoint,
    Filters,
    GroupConfig,
    ModelConfig,
    PeerConfig,
)
from swapd.errors import ConfigError

__all__ = [
    "DEFAULT_GROUP",
    "Config",
    "ConfigError",
    "Endpoint",
    "Filters",
    "GroupConfig",
    "ModelConfig",
    "PeerConfig",
    "load_config",
    "parse_config",
]
