-- Rotating a subscription's secret (internal/delivery, docs/consumers.md): the secret
-- it replaced signs every delivery too, beside the new one, until
-- previous_secret_until, so that an endpoint can move to the new secret without
-- refusing a delivery in between (Standard Webhooks sends one signature per key in
-- webhook-signature, and a verifier accepts any of them). A new column set without a
-- default is only a catalog change: no rewrite of the table.
SET LOCAL lock_timeout = '5s';

ALTER TABLE subscriptions
    ADD COLUMN previous_secret       text,
    ADD COLUMN previous_secret_until timestamptz,
    ADD CONSTRAINT previous_secret_until_set CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL));

---- create above / drop below ----

ALTER TABLE subscriptions
    DROP CONSTRAINT previous_secret_until_set,
    DROP COLUMN previous_secret_until,
    DROP COLUMN previous_secret;
