"""headline-cluster: group near-duplicate news headlines into stories."""

__version__ = "0.1.0"
