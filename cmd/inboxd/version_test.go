package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"inboxd/internal/pgtest"
)

// TestVersion: `inboxd version` and `inboxd --version` name the build and the Go
// release; a version set at link time, as the Dockerfile sets it from its VERSION
// argument, is the one named; the start log line carries the same.
func TestVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, &out, &out); err != nil ||
			!strings.HasPrefix(out.String(), "inboxd ") || !strings.HasSuffix(out.String(), ", "+runtime.Version()+"\n") {
			t.Errorf("inboxd %v: %v %q, want inboxd, its version and %s", args, err, &out, runtime.Version())
		}
	}
	binary := filepath.Join(t.TempDir(), "inboxd")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=v9.9.9-test", "-o", binary, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "inboxd v9.9.9-test") {
		t.Errorf("a binary linked with -X main.version=v9.9.9-test says %q (%v), want that version", out, err)
	}

	_, dbURL := pgtest.NewPool(t)
	_, logs := startServe(t, map[string]string{"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret})
	if !strings.Contains(logs.String(), `"msg":"inboxd started","version":"`+buildVersion()+`"`) {
		t.Errorf("the start log line does not name the version %q:\n%s", buildVersion(), logs.String())
	}
}
