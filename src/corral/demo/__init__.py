"""The demo: a sample order workflow that is interrupted by `kill -9`, resumed and inspected.

`make demo` (or `python -m corral.demo`) runs it on the embedded SQLite store. No API key and no
network are needed: the "payment provider" and "courier" are local stand-ins.
"""
