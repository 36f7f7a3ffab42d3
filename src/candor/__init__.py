"""Candor: a customer data platform that customers can trust."""

__version__ = "0.1.0"
