-- Every subscription to a type that carries a contact's data is sent contact.erased
-- as well (internal/delivery, docs/consumers.md): whoever is sent a contact's messages
-- is told when they are erased. Subscriptions made before that rule get the type now;
-- changes already past their cursor are not sent again.
SET LOCAL lock_timeout = '5s';

UPDATE subscriptions
SET types = array(SELECT DISTINCT t FROM unnest(types || '{contact.erased}'::text[]) t ORDER BY t)
WHERE NOT 'contact.erased' = ANY (types);

---- create above / drop below ----

-- Nothing to undo: a subscription cannot tell the type it asked for from the one added.
