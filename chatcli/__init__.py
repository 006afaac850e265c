"""chatcli: a terminal chat client that never loses a word."""

__version__ = "0.1.0"
