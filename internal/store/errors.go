package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Transient reports whether err is the database's trouble rather than the statement's:
// no answer came back (the connection was lost or never made, a deadline passed), or
// the server refused for a reason that has nothing to do with the data (shutting down,
// out of resources, a lock or statement timeout, a deadlock, a standby that cannot
// write). The same work can succeed later, and cutting it into smaller pieces would
// not help.
//
// Anything else is a statement the server refused on its merits (a value it cannot
// store, a constraint, a bug): retrying it unchanged fails the same way, so callers
// isolate it (ingest commits the requests of a failed batch one by one; the processor
// applies the events of a failed batch one by one).
func Transient(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err != nil // no server verdict: the connection or a deadline
	}
	switch pgErr.Code[:2] {
	case "08", // connection exception
		"53", // insufficient resources (too many connections, disk full)
		"57", // operator intervention: statement_timeout (57014), shutdown (57P01…)
		"58": // system error (I/O)
		return true
	}
	switch pgErr.Code {
	case "55P03", // lock_not_available: lock_timeout
		"40001", // serialization_failure
		"40P01", // deadlock_detected
		"25006": // read_only_sql_transaction: the node is a standby (after a failover)
		return true
	}
	return false
}

// Conflicted reports whether the server rolled err's transaction back to settle a
// conflict with another: a deadlock (SQLSTATE 40P01) or a serialization failure
// (40001). The other transaction went on; running the same work again at once is the
// remedy, and it almost always succeeds.
func Conflicted(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// IsReadOnly reports whether err says the server cannot write: a standby, such as a
// former primary after a failover (SQLSTATE 25006). A pool that hits it must drop its
// connections, so that new ones find the new primary (with target_session_attrs=
// read-write in the connection string); Reset does it.
func IsReadOnly(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == readOnly
}

// readOnly is read_only_sql_transaction's SQLSTATE.
const readOnly = "25006"

// ResetOnReadOnly drops pool's connections when err says the server is read-only.
func ResetOnReadOnly(pool *pgxpool.Pool, err error) {
	if IsReadOnly(err) {
		pool.Reset()
	}
}

// Unstorable reports whether Postgres refused a value itself: a data exception (class
// 22, e.g. text it cannot encode) or a program limit (class 54, e.g. a key too long
// for its index). No retry of the same value can succeed.
func Unstorable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code[:2] == "22" || pgErr.Code[:2] == "54")
}

// Redact returns a connection string fit to print: a URL's password (in its user
// part or as ?password=) becomes "xxxxx"; a keyword/value string is shown as what it
// connects to, without its password. Usage texts and errors print connection strings
// only through it.
func Redact(conn string) string {
	if u, err := url.Parse(conn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	cfg, err := pgconn.ParseConfig(conn)
	if err != nil {
		return "(a connection string that does not parse)"
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s", cfg.Host, cfg.Port, cfg.User, cfg.Database)
}

// Dialer is how every inboxd connection dials: TCP keepalives notice a connection that
// died silently (a NAT, a failover, a pulled cable) in about half a minute instead of
// the kernel's two hours, so a pool or the LISTEN connection does not wait on it for
// ever.
func Dialer() *net.Dialer {
	return &net.Dialer{
		Timeout:         10 * time.Second,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3},
	}
}
