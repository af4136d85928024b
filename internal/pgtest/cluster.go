package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// Cluster is a private, throwaway PostgreSQL server in a temp dir, for tests that
// crash and restart the database itself. It needs the server binaries
// (/usr/lib/postgresql/*/bin); it fails the test if they are missing.
type Cluster struct {
	bin, dir string
	port     int
	opts     []string // extra server settings, "name=value"
	t        testing.TB
}

// StartCluster initializes and starts a cluster; it is stopped and removed when t ends.
// settings ("name=value") are passed to the server, e.g. "synchronous_standby_names=*".
func StartCluster(t testing.TB, settings ...string) *Cluster {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Fatal("pgtest: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (install postgresql)")
	}
	sort.Strings(bins)
	// Not t.TempDir(): its parent is private to the test's user, and the server runs
	// as postgres.
	dir, err := os.MkdirTemp("", "inboxd-pgtest-")
	if err == nil {
		err = os.Chmod(dir, 0o777)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, filepath.Dir(bins[len(bins)-1]), dir, settings)
	c.run("initdb", "-D", c.dir+"/data", "-U", "postgres", "-A", "trust", "--no-sync")
	c.Start()
	return c
}

func newCluster(t testing.TB, bin, dir string, settings []string) *Cluster {
	c := &Cluster{bin: bin, dir: dir, port: freePort(t), opts: settings, t: t}
	t.Cleanup(func() {
		_ = exec.Command("runuser", "-u", "postgres", "--", filepath.Join(c.bin, "pg_ctl"), "-D", dir+"/data", "stop", "-m", "immediate").Run()
		_ = exec.Command(filepath.Join(c.bin, "pg_ctl"), "-D", dir+"/data", "stop", "-m", "immediate").Run()
		os.RemoveAll(dir)
	})
	return c
}

// StartStandby makes a streaming standby of c (pg_basebackup, which also writes its
// primary_conninfo) and starts it; settings are its own.
func (c *Cluster) StartStandby(settings ...string) *Cluster {
	c.t.Helper()
	dir, err := os.MkdirTemp("", "inboxd-pgtest-")
	if err == nil {
		err = os.Chmod(dir, 0o777)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	s := newCluster(c.t, c.bin, dir, settings)
	s.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-U", "postgres", "-D", dir+"/data",
		"-R", "-X", "stream", "--no-sync", "--checkpoint=fast")
	s.Start()
	return s
}

// Promote turns a standby into a primary and waits until it accepts writes.
func (c *Cluster) Promote() { c.pgctl("promote", "-w", "-t", "60") }

// Port is the port the cluster listens on (127.0.0.1).
func (c *Cluster) Port() int { return c.port }

// URL is the connection string of database name on the cluster.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, name)
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on", c.port, c.dir)
	for _, o := range c.opts {
		opts += " -c " + o
	}
	c.pgctl("start", "-w", "-t", "60", "-o", opts, "-l", c.dir+"/log")
}

// Crash stops the server the way a power cut would (immediate shutdown: no
// checkpoint, recovery from WAL at the next start).
func (c *Cluster) Crash() { c.pgctl("stop", "-m", "immediate") }

func (c *Cluster) pgctl(args ...string) {
	c.run("pg_ctl", append([]string{"-D", c.dir + "/data"}, args...)...)
}

// run runs a server binary, as the postgres user when the test runs as root (the
// server refuses to run as root).
func (c *Cluster) run(name string, args ...string) {
	c.t.Helper()
	path := filepath.Join(c.bin, name)
	cmd := exec.Command(path, args...)
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(c.dir + "/log")
		c.t.Fatalf("pgtest: %s %v: %v\n%s\n%s", name, args, err, out, log)
	}
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port, _ := strconv.Atoi(fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	return port
}
