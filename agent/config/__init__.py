"""Node configuration: the frozen config dataclass, its TOML reader and writer, input-file helpers."""
