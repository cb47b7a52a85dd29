"""b24pipe: a queue-backed event pipeline for Bitrix24 applications."""

__version__ = "0.1.0"
