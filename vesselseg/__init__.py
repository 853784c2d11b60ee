"""vesselseg: segment blood vessels in very large 3D CT volumes from sparse annotations."""

__version__ = "0.1.0"
