"""tweetlm: learn to write like one person."""

__version__ = "0.1.0"
