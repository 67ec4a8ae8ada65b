"""vprod — real-time generative video for live production."""

__version__ = "0.1.0"
