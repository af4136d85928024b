-- The inbound_events notification payload, byte for byte as docs/database.md shows it:
-- {"id":N,"provider":"…"}. json_build_object renders {"id" : N, "provider" : "…"};
-- equal as JSON, but DBAs and tools that compare strings see the difference. One
-- function builds it for the insert trigger and for replays (internal/api).
CREATE FUNCTION inbox_notification(id bigint, provider text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT format('{"id":%s,"provider":%s}', id, to_json(provider))
$$;

CREATE OR REPLACE FUNCTION inbound_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('inbound_events', inbox_notification(n.id, n.provider))
    FROM new_rows n;
    RETURN NULL;
END
$$;

---- create above / drop below ----

CREATE OR REPLACE FUNCTION inbound_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('inbound_events',
                      json_build_object('id', n.id, 'provider', n.provider)::text)
    FROM new_rows n;
    RETURN NULL;
END
$$;

DROP FUNCTION inbox_notification(bigint, text);
