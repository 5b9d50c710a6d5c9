-- depends: 0004_event_trace_context
-- The open (placed or shipped) amount of each customer's orders, kept on the customer row by
-- a trigger on orders, whoever writes them (also a previous release during a rolling update).
-- PlaceOrder reads it with the customer's row lock (FOR UPDATE returns the newest committed
-- row version), so the credit check needs no second statement with a fresh snapshot.
LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE;  -- no order changes between backfill and trigger

ALTER TABLE customers ADD COLUMN open_cents bigint NOT NULL DEFAULT 0;

CREATE FUNCTION orders_open_amount() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_open bigint := 0;
    new_open bigint := 0;
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status IN ('placed', 'shipped') THEN
        old_open := OLD.total_cents;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status IN ('placed', 'shipped') THEN
        new_open := NEW.total_cents;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.customer_id IS DISTINCT FROM NEW.customer_id THEN
        UPDATE customers SET open_cents = open_cents - old_open WHERE id = OLD.customer_id AND old_open <> 0;
        old_open := 0;
    END IF;
    IF new_open <> old_open THEN
        UPDATE customers SET open_cents = open_cents + new_open - old_open
         WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.customer_id ELSE NEW.customer_id END;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER orders_open_amount AFTER INSERT OR DELETE OR UPDATE OF status, total_cents, customer_id ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_open_amount();

UPDATE customers c SET open_cents = o.open
  FROM (SELECT customer_id, sum(total_cents) AS open FROM orders
         WHERE status IN ('placed', 'shipped') GROUP BY customer_id) o
 WHERE o.customer_id = c.id;
