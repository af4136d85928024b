package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// room reads the client connections the server accepts from roles without
// superuser (max_connections less the slots reserved for superusers and, from
// Postgres 16, for pg_use_reserved_connections) and those open now.
const room = `
SELECT current_setting('max_connections')::int
     - current_setting('superuser_reserved_connections')::int
     - COALESCE(NULLIF(current_setting('reserved_connections', true), '')::int, 0),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int`

// Room is what a server has room for: the client connections it accepts, and
// those open now.
type Room struct {
	Limit, Open int
}

// ReadRoom reads the server's Room through pool.
func ReadRoom(ctx context.Context, pool *pgxpool.Pool) (Room, error) {
	var r Room
	if err := pool.QueryRow(ctx, room).Scan(&r.Limit, &r.Open); err != nil {
		return Room{}, fmt.Errorf("read max_connections: %w", err)
	}
	return r, nil
}

// Short says, when a process that may open want connections, of which it has
// open now ours, would find the server full under load; "" when it fits. A
// pool's connections are opened as they are needed, so a process that does not fit
// starts well and then fails ("sorry, too many clients already") when a backlog
// or a burst makes it open the rest.
func (r Room) Short(want, ours int) string {
	others := r.Open - ours
	switch {
	case want > r.Limit:
		return fmt.Sprintf("this process may open %d connections, more than the %d the server accepts (max_connections less those reserved)", want, r.Limit)
	case want+others > r.Limit:
		return fmt.Sprintf("this process may open %d connections, and with the %d others open the server accepts only %d", want, others, r.Limit)
	}
	return ""
}
