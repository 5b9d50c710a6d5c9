-- depends: 0002_command_audit
-- Wake the outbox relay at commit of any transaction that appended events (one round trip
-- less per command than an explicit pg_notify).
CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER events_notify_outbox AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
