"""Shared contracts, topology, settings and RabbitMQ plumbing for the CQRS order services."""

CONTRACT_VERSION = 1
