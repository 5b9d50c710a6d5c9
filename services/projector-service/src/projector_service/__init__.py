"""Projector service: applies events from cqrs.events to the read views in MongoDB."""
