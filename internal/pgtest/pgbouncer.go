package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"testing"
	"time"
)

// PgBouncer is a pgbouncer in transaction pooling mode in front of a cluster, for
// tests that run inboxd the way people deploy it behind a pooler. Its settings are
// PgBouncer's own defaults but for the pool mode: in particular it refuses startup
// parameters it does not know (no ignore_startup_parameters), and in transaction mode
// a session's state does not survive its transaction. It needs the pgbouncer binary
// (Debian's package; .ci/run installs it) and fails the test without it.
type PgBouncer struct {
	port int
}

// StartPgBouncer starts a pgbouncer in front of c; it stops when t ends.
func StartPgBouncer(t testing.TB, c *Cluster) *PgBouncer {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Fatal("pgtest: no pgbouncer binary (install Debian's pgbouncer package; .ci/run does)")
	}
	dir, err := os.MkdirTemp("", "inboxd-pgbouncer-")
	if err == nil {
		err = os.Chmod(dir, 0o777)
	}
	if err != nil {
		t.Fatal(err)
	}
	b := &PgBouncer{port: freePort(t)}
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = trust
auth_file = %s/users.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 40
max_db_connections = 80
server_reset_query =
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
`, c.port, b.port, dir, dir, dir, dir)
	// The superuser, and the least-privilege roles of deploy/postgres/roles.sql.
	users := `"postgres" ""` + "\n" + `"inboxd_owner" ""` + "\n" + `"inboxd_runtime" ""` + "\n" + `"inboxd_reader" ""` + "\n"
	for name, content := range map[string]string{"pgbouncer.ini": ini, "users.txt": users} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if u, err := user.Current(); err == nil && u.Uid == "0" { // pgbouncer refuses to run as root
		cmd = exec.Command("runuser", "-u", "postgres", "--", bin, filepath.Join(dir, "pgbouncer.ini"))
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("pgtest: start pgbouncer: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		// runuser's child may outlive runuser itself.
		if pid, err := os.ReadFile(filepath.Join(dir, "pgbouncer.pid")); err == nil {
			exec.Command("kill", "-9", string(trimNL(pid))).Run()
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Logf("pgbouncer log (last 3 KB):\n%s", log[max(0, len(log)-3072):])
		}
		os.RemoveAll(dir)
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.port)); err == nil {
			conn.Close()
			return b
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgtest: pgbouncer did not listen within 10s:\n%s", log)
		}
	}
}

// URL is the connection string of database name through the pooler.
func (b *PgBouncer) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", b.port, name)
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
