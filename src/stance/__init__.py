"""stance: label every sentence of a news article with a claim type and a stance."""

__version__ = "0.1.0"
