"""lienthong: Vietnam health-data interoperability platform."""

__version__ = "0.1.0"
