"""Run configuration: schema with defaults, YAML composition, dotted overrides."""

from .loader import VALID_KEYS, ConfigError, apply_overrides, config_from_dict, load_config, save_config
from .schema import DEFAULTS

__all__ = ["apply_overrides", "DEFAULTS", "VALID_KEYS", "ConfigError", "config_from_dict", "load_config", "save_config"]
