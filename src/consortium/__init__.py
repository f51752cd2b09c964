"""consortium: organisations build AI together without pooling raw data."""

__version__ = "0.1.0"
