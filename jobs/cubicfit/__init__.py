"""Fit y = target(x) with a cubic a + b x + c x^2 + d x^3 by gradient descent."""

__version__ = "0.1.0"
