"""Benchmarks behind ``stream-kt bench``: each module measures one thing and returns plain dicts."""
