"""CLI commands, one module per concern; each exposes ``add_parsers(subparsers)``."""
