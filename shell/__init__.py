"""triobot's Trio program: runtime, state, providers, chat adapters, monitoring.

Built on :mod:`fastcore`; fastcore never imports from here.
"""

__version__ = "0.1.0"
