package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/feed"
	"inboxd/internal/store"
)

// checkCmd checks what `inboxd serve` would start with, and starts nothing: the
// settings, read as serve reads them; the providers and tokens they give; and the
// databases: reachable, the schema current or what serve would apply at start, the
// change feed's transaction ids this server's own. A deploy checks a configuration
// with it before rolling a process: exit 0 when serve would start and work, 2 for a
// setting serve refuses (every one named), 1 for a database it could not use.
func checkCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("check", args, getenv, stderr)
	if err != nil {
		return err
	}
	c := &checker{tw: tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)}
	c.say("settings", "valid")
	c.settings(cfg)
	c.databases(ctx, cfg)
	c.tw.Flush()
	if len(c.problems) > 0 {
		return fmt.Errorf("%d of the checks above failed: %s", len(c.problems), strings.Join(c.problems, "; "))
	}
	fmt.Fprintln(stdout, "inboxd serve would start with these settings")
	return nil
}

// checker prints one line per check and keeps the failed ones.
type checker struct {
	tw       *tabwriter.Writer
	problems []string
}

func (c *checker) say(what, format string, args ...any) {
	fmt.Fprintf(c.tw, "%s\t%s\n", what, fmt.Sprintf(format, args...))
}

// fail prints a failed check: serve would not start, or would not work.
func (c *checker) fail(what string, err error) {
	c.say(what, "FAILED: %v", err)
	c.problems = append(c.problems, what)
}

// settings says what the settings give: where serve listens, which providers take
// webhooks (and how to enable the others), and who may read.
func (c *checker) settings(cfg config) {
	addr := cfg.Addr
	if cfg.AdminAddr != "" {
		addr += fmt.Sprintf(" (readiness, metrics and admin on %s)", cfg.AdminAddr)
	}
	c.say("address", "%s, public URL %s", addr, cfg.PublicURL)
	var on, off, signURL []string
	for _, e := range cfg.Endpoints {
		if e.Webhook == nil {
			off = append(off, fmt.Sprintf("%s (%s)", e.Name, e.Hint))
			continue
		}
		on = append(on, e.Name)
		if e.SignsURL {
			signURL = append(signURL, e.Name)
		}
	}
	if u, err := url.Parse(cfg.PublicURL); err == nil && len(signURL) > 0 && loopback(u.Hostname()) {
		c.say("public URL", "WARNING: %s is a loopback address, and %s signs the URL it calls: its webhooks would answer 403 "+
			"unless they are signed for this URL (as `inboxd sign` does, to try it). Set %s to the URL %s is given, such as https://inbox.example.com",
			cfg.PublicURL, strings.Join(signURL, ", "), settingName("PUBLIC_URL"), strings.Join(signURL, ", "))
	}
	switch {
	case len(on) == 0:
		c.say("providers", "none: every webhook would answer 404; %s", strings.Join(off, ", "))
	case len(off) == 0:
		c.say("providers", "%s", strings.Join(on, ", "))
	default:
		c.say("providers", "%s; not configured: %s", strings.Join(on, ", "), strings.Join(off, ", "))
	}
	tokens := fmt.Sprintf("%d API, %d admin, %d console read-only", len(cfg.APITokens), len(cfg.AdminTokens), len(cfg.ConsoleReadTokens))
	if len(cfg.APITokens)+len(cfg.AdminTokens) == 0 {
		tokens += fmt.Sprintf(": the API and the console would refuse everyone (set %s or %s)", settingName("API_TOKENS"), settingName("ADMIN_TOKENS"))
	}
	c.say("tokens", "%s", tokens)
}

// databases connects to each database serve would use, without creating or
// migrating anything.
func (c *checker) databases(ctx context.Context, cfg config) {
	pool, err := store.Open(ctx, cfg.DatabaseURL, func(pc *pgxpool.Config) { pc.MaxConns = 2 })
	switch {
	case err == nil:
		defer pool.Close()
	case store.IsMissingDatabase(err) && cfg.Migrate:
		c.say("database", "%s does not exist yet: serve creates it at start and applies every migration (%s)", store.Redact(cfg.DatabaseURL), settingName("MIGRATE"))
		return
	case store.IsMissingDatabase(err):
		c.fail("database", fmt.Errorf("%s does not exist, and %s=false: create it and its tables with `inboxd migrate`", store.Redact(cfg.DatabaseURL), settingName("MIGRATE")))
		return
	default:
		c.fail("database", dbAdvice(err))
		return
	}
	var version string
	if err := pool.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		c.fail("database", err)
		return
	}
	c.say("database", "%s: reachable, PostgreSQL %s", store.Redact(cfg.DatabaseURL), version)
	if c.schema(ctx, cfg, pool) {
		if err := feed.CheckTransactionIDs(ctx, pool); err != nil {
			c.fail("change feed", err)
		} else {
			c.say("change feed", "its transaction ids are this server's")
		}
	}
	c.room(ctx, cfg, pool)
	c.reach(ctx, "listen, migrate", cfg.ListenURL, cfg.DatabaseURL)
	c.reach(ctx, "read replica", cfg.ReadURL, cfg.DatabaseURL)
}

// schema says where the schema stands and what serve would do about it; true when
// the tables are there to check further.
func (c *checker) schema(ctx context.Context, cfg config, pool *pgxpool.Pool) bool {
	s, err := store.ReadSchema(ctx, pool)
	switch {
	case err != nil:
		c.fail("schema", err)
		return false
	case s.Newer():
		c.say("schema", "at migration %d, newer than this binary: serve runs on it (a rollout in progress, or this binary rolled back)", s.Version)
	case len(s.Pending) == 0:
		c.say("schema", "current (%d migrations)", s.Version)
	case cfg.Migrate:
		c.say("schema", "%d migrations to apply, which serve applies at start: %s", len(s.Pending), span(s.Pending))
		return false
	default:
		c.fail("schema", fmt.Errorf("%d migrations not applied (%s), and %s=false: apply them with `inboxd migrate`",
			len(s.Pending), span(s.Pending), settingName("MIGRATE")))
		return false
	}
	return true
}

// room says whether the server has room for every connection serve may open, as
// serve's start does (checkRoom): a warning, since serve starts and fails later,
// under load. Behind a pooler the pooler's pool is what counts.
func (c *checker) room(ctx context.Context, cfg config, pool *pgxpool.Pool) {
	if cfg.ListenURL != cfg.DatabaseURL {
		return
	}
	r, err := store.ReadRoom(ctx, pool)
	if err != nil {
		c.fail("connections", err)
		return
	}
	want := connections(cfg)
	if short := r.Short(want, int(pool.Stat().TotalConns())); short != "" {
		c.say("connections", "WARNING: %s: serve would start, and claims and webhooks fail under load (too many clients); %s", short, roomAdvice)
		return
	}
	c.say("connections", "this process may open %d; the server accepts %d, %d open now", want, r.Limit, r.Open)
}

// loopback reports whether host names this machine itself, which no provider can
// call.
func loopback(host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// span names a few migrations, or the first and the last of many.
func span(names []string) string {
	if len(names) > 3 {
		return names[0] + " to " + names[len(names)-1]
	}
	return strings.Join(names, ", ")
}

// reach pings the database at url, which serve uses for what, when it is not the
// main one.
func (c *checker) reach(ctx context.Context, what, url, main string) {
	if url == main {
		return
	}
	pool, err := store.Open(ctx, url, func(pc *pgxpool.Config) { pc.MaxConns = 1 })
	if err != nil {
		c.fail(what, dbAdvice(err))
		return
	}
	pool.Close()
	c.say(what, "%s: reachable", store.Redact(url))
}
