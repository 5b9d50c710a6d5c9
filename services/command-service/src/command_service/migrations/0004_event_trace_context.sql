-- depends: 0003_outbox_notify_trigger
-- The trace context (W3C traceparent/tracestate) of the command that appended each event:
-- the relay publishes later, in another task, and continues the command's trace from it.
ALTER TABLE events ADD COLUMN trace_context jsonb;
