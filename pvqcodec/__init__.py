"""pvqcodec: a versioned codec for the weights of large language models."""

__version__ = "0.1.0"
