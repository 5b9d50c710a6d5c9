-- depends: 0001_initial
-- Every command received, accepted or rejected: who, when, what and the outcome.
CREATE TABLE command_audit (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    command_id   text,
    command_type text,
    user_id      text,
    roles        text[] NOT NULL DEFAULT '{}',
    aggregate_id text,
    status       text NOT NULL,
    error_code   text,
    request      jsonb,
    reply        jsonb NOT NULL
);
CREATE INDEX command_audit_command_id ON command_audit (command_id);
CREATE INDEX command_audit_user ON command_audit (user_id, received_at);
