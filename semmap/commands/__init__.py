"""One module per CLI command; each defines ``ORDER`` and ``register(subparsers)``."""
