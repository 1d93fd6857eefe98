"""pilog: a durable sensor ingestor for small Linux boxes."""

__version__ = "0.1.0"
