package processor

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
	"go.uber.org/zap"

	"inboxd/internal/store"
)

// Channel is the NOTIFY channel the inbound_events trigger sends on.
const Channel = "inbound_events"

// listener keeps one LISTEN connection and turns every notification, and every
// (re)connection, into a wake-up. It never reads the notification's payload: the
// table is the truth, the notification only says "look".
type listener struct {
	url       string
	notified  func() // a notification: an event arrived
	wake      func() // (re)connected: anything may have arrived
	log       *zap.Logger
	metrics   *metrics
	also      map[string]func() // other channels (Config.Also)
	connected atomic.Bool
	failures  int // consecutive failed connects, for backoff; used by Connect only
}

func newListener(url string, notified, wake func(), log *zap.Logger, m *metrics) *listener {
	return &listener{url: url, notified: notified, wake: wake, log: log.Named("listener"), metrics: m}
}

func (l *listener) run(ctx context.Context) error {
	pl := &pgxlisten.Listener{
		Connect: l.connect,
		LogError: func(ctx context.Context, err error) {
			l.setConnected(false)
			if ctx.Err() == nil {
				l.log.Warn("LISTEN connection lost; the sweep covers the gap until it is back", zap.Error(err))
			}
		},
		// pgxlisten waits a minute by default; a second plus connect's own backoff
		// brings the listener back quickly after a blip without hammering a down server.
		ReconnectDelay: time.Second,
	}
	pl.Handle(Channel, l)
	for channel, f := range l.also {
		pl.Handle(channel, alsoHandler(f))
	}
	err := pl.Listen(ctx)
	l.setConnected(false)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// connect dials the LISTEN connection with TCP keepalives (store.Dialer), so that a
// connection that silently died is noticed in about half a minute. After repeated failures it waits longer each time,
// up to half a minute, on top of ReconnectDelay.
func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	if l.failures > 0 {
		sleep(ctx, min(time.Duration(1<<min(l.failures, 5))*time.Second, 30*time.Second))
	}
	cfg, err := pgx.ParseConfig(l.url)
	if err != nil {
		return nil, err
	}
	cfg.DialFunc = store.Dialer().DialContext
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		l.failures++
		return nil, err
	}
	l.failures = 0
	return conn, nil
}

// HandleNotification wakes the workers.
func (l *listener) HandleNotification(context.Context, *pgconn.Notification, *pgx.Conn) error {
	l.notified()
	return nil
}

// HandleBacklog runs right after LISTEN succeeded on a new connection: anything that
// was committed while we were not listening is found by a claim pass.
func (l *listener) HandleBacklog(context.Context, string, *pgx.Conn) error {
	l.setConnected(true)
	l.log.Info("listening", zap.String("channel", Channel))
	l.wake()
	return nil
}

// alsoHandler calls f on each notification, and on each new connection.
type alsoHandler func()

func (f alsoHandler) HandleNotification(context.Context, *pgconn.Notification, *pgx.Conn) error {
	f()
	return nil
}

func (f alsoHandler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	f()
	return nil
}

func (l *listener) setConnected(up bool) {
	l.connected.Store(up)
	if up {
		l.metrics.listener.Set(1)
	} else {
		l.metrics.listener.Set(0)
	}
}
