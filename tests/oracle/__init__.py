"""Test oracle: a seeded random workload of every command type (`workload`), an independent
model that computes the expected answer of every query from the accepted commands alone
(`model`), the comparison of the query service's answers with it (`compare`) and ways to
force redeliveries (`faults`).

Nothing here imports the services' domain, application or adapter code: the model follows
the public contract (../shared/spec/contract.md) directly, so a shared misunderstanding
cannot make the services and their oracle agree by construction. Only the transport
helpers of `cqrs_shared` (the RPC client) and the drivers are used.
"""
