"""tidings: real-time push for Python web applications."""

from tidings.client.publisher import Publisher

__all__ = ["Publisher", "__version__"]

__version__ = "0.1.0"
