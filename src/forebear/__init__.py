"""forebear: is this model original work, or derived from another?"""

__version__ = "0.1.0"
