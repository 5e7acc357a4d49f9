"""callroom: real-time session server for video meetings."""

__version__ = "0.1.0"
