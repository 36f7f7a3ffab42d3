"""Consent: purposes, notices, ledger, resolver, TCF and GPP signals."""
