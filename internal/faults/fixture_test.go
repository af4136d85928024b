package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
)

// Secrets the processes are started with, and the public URL they all sign Twilio
// requests for (as behind one load balancer).
const (
	genericSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	twilioToken   = "fault-twilio-token"
	metaSecret    = "fault-meta-secret"
	publicURL     = "http://inboxd.test"
)

var binary string // the inboxd under test

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		// The quick local loop (`go test -short ./...`) leaves out the multi-process
		// suite, which takes minutes; a full `go test ./...` and .ci/run run it.
		fmt.Println("faults: not run with -short (the fault suite runs without it, and in .ci/run)")
		return 0
	}
	binary = os.Getenv("INBOXD_FAULT_BINARY")
	if binary == "" {
		dir, err := os.MkdirTemp("", "inboxd-faults-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "inboxd")
		build := exec.Command("go", "build", "-o", binary, "inboxd/cmd/inboxd")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build inboxd:", err)
			return 2
		}
	}
	return m.Run()
}

// fixture is one scenario's world: a private cluster (with a standby, for failover),
// its inboxd processes, and a pool for checking rows.
type fixture struct {
	t       *testing.T
	cluster *pgtest.Cluster
	standby *pgtest.Cluster // nil unless the setup asks for one
	dbURL   string          // what the checks connect to (follows a failover)
	pool    *pgxpool.Pool
	env     map[string]string // settings every process gets (a process may add more)
	mu      sync.Mutex
	procs   []*proc
}

// setup is how a scenario's world is deployed.
type setup struct {
	procs     int               // inboxd processes
	env       map[string]string // on top of the suite's defaults
	pgbouncer bool              // DATABASE_URL through PgBouncer in transaction mode
	standby   bool              // a streaming standby, and DATABASE_URL naming both nodes
	sync      bool              // with standby: synchronous replication
}

// deployments are the ways the scenarios that concern the database run: directly,
// and through PgBouncer in transaction mode (LISTEN and migrations direct).
var deployments = []struct {
	name      string
	pgbouncer bool
}{{"direct", false}, {"pgbouncer", true}}

// newFixture starts a cluster and the processes of s, with the suite's defaults
// (short sweep and lease, so that takeovers happen within a scenario).
//
// The processes run as they should in production: as the least-privilege runtime role
// of deploy/postgres/roles.sql (no CREATE, no DDL), the schema migrated beforehand by
// the owner role (runtime).
func newFixture(t *testing.T, s setup) *fixture {
	t.Helper()
	c := pgtest.StartCluster(t)
	runtime := migrateAsOwner(t, c)
	f := &fixture{t: t, cluster: c, dbURL: c.URL("inboxd"), env: map[string]string{
		"INBOX_GENERIC_SECRETS": genericSecret, "INBOX_TWILIO_AUTH_TOKEN": twilioToken,
		"INBOX_META_APP_SECRET": metaSecret, "INBOX_META_VERIFY_TOKEN": "verify", "INBOX_PUBLIC_URL": publicURL,
		"INBOX_DEV":            "true", // the generic secret is the reference vector's
		"INBOX_SWEEP_INTERVAL": "200ms", "INBOX_LEASE": "3s", "INBOX_LOG_LEVEL": "info",
		"DATABASE_URL": runtime(c.URL("inboxd")), "INBOX_MIGRATE": "false",
	}}
	switch {
	case s.pgbouncer:
		b := pgtest.StartPgBouncer(t, c)
		f.env["DATABASE_URL"] = runtime(b.URL("inboxd")) + "&default_query_exec_mode=exec"
		f.env["INBOX_LISTEN_DATABASE_URL"] = runtime(c.URL("inboxd"))
	case s.standby:
		f.standby = c.StartStandby()
		if s.sync {
			f.syncReplication()
		}
		both := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/inboxd?sslmode=disable&target_session_attrs=read-write",
			c.Port(), f.standby.Port())
		f.env["DATABASE_URL"], f.dbURL = runtime(both), both
	}
	for k, v := range s.env {
		f.env[k] = v
	}
	for range s.procs {
		f.start(nil)
	}
	pool, err := pgxpool.New(context.Background(), f.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f.pool = pool
	return f
}

// migrateAsOwner applies deploy/postgres/roles.sql to c, migrates database inboxd as
// its owner role, and returns what turns a connection string into the runtime role's.
func migrateAsOwner(t *testing.T, c *pgtest.Cluster) (runtime func(url string) string) {
	t.Helper()
	as := func(role string) func(string) string {
		return func(url string) string {
			return strings.Replace(url, "postgres://postgres@", "postgres://"+role+"@", 1)
		}
	}
	if out, err := exec.Command("psql", "-X", "-q", "-v", "db=inboxd", "-f", "../../deploy/postgres/roles.sql", c.URL("postgres")).CombinedOutput(); err != nil {
		t.Fatalf("roles.sql: %v\n%s", err, out)
	}
	migrate := exec.Command(binary, "migrate")
	migrate.Env = append(os.Environ(), "DATABASE_URL="+as("inboxd_owner")(c.URL("inboxd")))
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("inboxd migrate as inboxd_owner: %v\n%s", err, out)
	}
	return as("inboxd_runtime")
}

// syncReplication makes every commit on the primary wait for the standby. Set after
// the standby was copied, so that the standby does not wait for a standby of its own
// once promoted.
func (f *fixture) syncReplication() {
	f.t.Helper()
	conn, err := pgx.Connect(context.Background(), f.cluster.URL("postgres"))
	if err != nil {
		f.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{"ALTER SYSTEM SET synchronous_standby_names = '*'", "SELECT pg_reload_conf()"} {
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			f.t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var state string
		conn.QueryRow(context.Background(), "SELECT COALESCE(max(sync_state), '') FROM pg_stat_replication").Scan(&state)
		if state == "sync" {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("the standby never became synchronous (sync_state %q)", state)
		}
	}
}

// proc is one running inboxd.
type proc struct {
	name string
	cmd  *exec.Cmd
	base string // http://host:port
	log  string // its log file
	done chan struct{}
	mu   sync.Mutex
	dead bool // killed or stopped: the senders skip it
	exit error
}

// start runs another inboxd process (extra settings on top of the fixture's) and
// waits until it is ready.
func (f *fixture) start(extra map[string]string) *proc {
	t := f.t
	t.Helper()
	f.mu.Lock()
	name := fmt.Sprintf("inboxd-%d", len(f.procs)+1)
	f.mu.Unlock()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "INBOX_ADDR=127.0.0.1:0"}
	for k, v := range f.env {
		env = append(env, k+"="+v)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "serve")
	cmd.Env = env
	addr := make(chan string, 1)
	cmd.Stdout = &startWatcher{w: logFile, addr: addr}
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.dead, p.exit = true, err
		p.mu.Unlock()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s's log (last 4 KB):\n%s", name, b[max(0, len(b)-4096):])
		}
	})
	select {
	case a := <-addr:
		p.base = "http://" + a
	case <-p.done:
		b, _ := os.ReadFile(logPath)
		t.Fatalf("%s exited at start: %v\n%s", name, p.exit, b)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start within 30s", name)
	}
	f.waitReady(p, 30*time.Second)
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p
}

// waitReady waits until p's /readyz answers 200.
func (f *fixture) waitReady(p *proc, within time.Duration) {
	f.t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(50 * time.Millisecond) {
		if status, _ := p.readyz(); status == 200 {
			return
		}
		if time.Now().After(deadline) {
			status, body := p.readyz()
			f.t.Fatalf("%s not ready within %s: %d %s", p.name, within, status, body)
		}
	}
}

func (p *proc) readyz() (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(p.base + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *proc) alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.dead
}

func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.dead {
		p.cmd.Process.Signal(sig)
	}
}

// kill9 kills p the way an OOM killer or a power cut would.
func (p *proc) kill9() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and returns how long p took to exit, and how it exited.
func (p *proc) stop(within time.Duration) (time.Duration, error) {
	start := time.Now()
	p.mu.Lock()
	p.dead = true // no new requests from the senders
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.mu.Unlock()
	select {
	case <-p.done:
	case <-time.After(within):
		p.cmd.Process.Kill()
		<-p.done
		return time.Since(start), fmt.Errorf("still running %s after SIGTERM", within)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Since(start), p.exit
}

// live returns the processes still running.
func (f *fixture) live() []*proc {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*proc
	for _, p := range f.procs {
		if p.alive() {
			out = append(out, p)
		}
	}
	return out
}

// exec runs SQL on the cluster, failing the test on error.
func (f *fixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

// waitLog waits until p's log has at least n lines that contain s.
func (f *fixture) waitLog(p *proc, s string, n int, within time.Duration) {
	f.t.Helper()
	for deadline := time.Now().Add(within); p.logContains(s) < n; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			f.t.Fatalf("%s logged %q %d times within %s, want %d", p.name, s, p.logContains(s), within, n)
		}
	}
}

// logContains counts the lines of p's log that contain s.
func (p *proc) logContains(s string) int {
	b, _ := os.ReadFile(p.log)
	return strings.Count(string(b), s)
}

// startWatcher copies a process's log and sends the address from its "inboxd
// started" line.
type startWatcher struct {
	w     io.Writer
	addr  chan<- string
	line  []byte
	found bool
}

func (s *startWatcher) Write(b []byte) (int, error) {
	if !s.found {
		s.line = append(s.line, b...)
		for {
			i := bytes.IndexByte(s.line, '\n')
			if i < 0 {
				break
			}
			var l struct{ Msg, Addr string }
			if json.Unmarshal(s.line[:i], &l) == nil && l.Msg == "inboxd started" {
				s.addr <- l.Addr
				s.found, s.line = true, nil
				break
			}
			s.line = s.line[i+1:]
		}
	}
	return s.w.Write(b)
}

// lock takes ACCESS EXCLUSIVE on table, as a migration or a DBA's LOCK TABLE does,
// until unlock is called (or the test ends).
func (f *fixture) lock(table string) (unlock func()) {
	f.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.dbURL)
	if err != nil {
		f.t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err == nil {
		_, err = tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE")
	}
	if err != nil {
		f.t.Fatal(err)
	}
	var once sync.Once
	unlock = func() { once.Do(func() { tx.Rollback(ctx); conn.Close(ctx) }) }
	f.t.Cleanup(unlock)
	return unlock
}
