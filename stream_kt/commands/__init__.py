"""CLI commands, one module per concern; each exposes ``COMMANDS``, and ``stream_kt.cli.COMMANDS`` names
which module holds which."""
