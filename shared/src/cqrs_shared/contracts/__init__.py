"""Pydantic v2 models of the public wire contract (../shared/spec/contract.md)."""
