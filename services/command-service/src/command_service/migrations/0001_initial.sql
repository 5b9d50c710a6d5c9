-- Write model, event store/outbox, idempotency and the global position counter.

CREATE TABLE customers (
    id                 text PRIMARY KEY,
    name               text NOT NULL,
    email              text NOT NULL,
    credit_limit_cents bigint NOT NULL CHECK (credit_limit_cents >= 0),
    version            integer NOT NULL,
    created_at         timestamptz NOT NULL
);

CREATE TABLE products (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents > 0),
    stock       integer NOT NULL CHECK (stock >= 0),
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE orders (
    id               text PRIMARY KEY,
    customer_id      text NOT NULL REFERENCES customers(id),
    status           text NOT NULL,
    total_cents      bigint NOT NULL,
    shipping_address jsonb NOT NULL,
    tracking_number  text,
    version          integer NOT NULL,
    placed_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX orders_open_by_customer ON orders (customer_id) WHERE status IN ('placed', 'shipped');

CREATE TABLE order_items (
    order_id         text NOT NULL REFERENCES orders(id),
    product_id       text NOT NULL REFERENCES products(id),
    name             text NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- The event store doubles as the outbox: published_at is NULL until the relay has a
-- publisher confirm for the event.
CREATE TABLE events (
    position       bigint PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    version        integer NOT NULL,
    event_type     text NOT NULL,
    envelope       jsonb NOT NULL,
    created_at     timestamptz NOT NULL,
    published_at   timestamptz,
    UNIQUE (aggregate_type, aggregate_id, version)
);
CREATE INDEX events_unpublished ON events (position) WHERE published_at IS NULL;

-- One row; UPDATE ... RETURNING takes a row lock held until commit, so positions are
-- handed out in commit order and without gaps (a rollback gives its numbers back).
CREATE TABLE position_counter (
    id    integer PRIMARY KEY CHECK (id = 1),
    value bigint NOT NULL
);
INSERT INTO position_counter VALUES (1, 0);

-- First reply to each commandId (idempotency).
CREATE TABLE command_replies (
    command_id   text PRIMARY KEY,
    command_type text,
    reply        jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
