"""repro: the library behind the reproducible textbook.

One module per idea, shared across chapters.  Nothing here touches a device
or the network at import time.
"""
__version__ = "0.1.0"
