"""The repository's experiments beside ``stream-kt bench`` (whose code is ``stream_kt.tools.bench``); not installed,
run from the repository's root: ``python -m benchmarks.multiskill``.  ``results/`` holds the committed record."""
