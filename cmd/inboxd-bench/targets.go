package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is a system under test, run as a server subprocess that takes signed generic
// webhooks on /webhooks/generic and answers /readyz: inboxd as it ships, inboxd
// processing one event per transaction (the value of batching, shown apart), or the
// River baseline (bench/river) in one of its variants. River's native variant keeps
// its events in river_job only (jobs): the bench reads processing from there.
type target struct {
	name    string   // the results' label
	river   string   // River's variant, "" for inboxd
	env     []string // inboxd: settings on top of the defaults
	workers int      // River's MaxWorkers
}

// targetNames are the systems --targets accepts, in the order they are reported.
var targetNames = []string{"inboxd", "inboxd-batch1", "river-per-event", "river-batched", "river-batched-copy", "river-native"}

// parseTargets reads --targets: names from targetNames, comma-separated.
func parseTargets(list string) ([]target, error) {
	var out []target
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "inboxd":
			out = append(out, target{name: name})
		case name == "inboxd-batch1":
			out = append(out, target{name: name, env: []string{"INBOX_BATCH_SIZE=1"}})
		case strings.HasPrefix(name, "river-") && slices.Contains(targetNames, name):
			out = append(out, target{name: name, river: strings.TrimPrefix(name, "river-")})
		default:
			return nil, fmt.Errorf("--targets: unknown system %q; want some of %s", name, strings.Join(targetNames, ","))
		}
	}
	return out, nil
}

// parseInts reads a comma-separated list of positive integers.
func parseInts(flag, list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--%s: %q is not a list of positive numbers", flag, list)
		}
		out = append(out, n)
	}
	return out, nil
}

// server is a running target.
type server struct {
	base    string // http://host:port
	pid     int
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited, with waitErr set
	waitErr error
}

// jobs says whether t's events are River jobs, not inbound_events rows.
func (t target) jobs() bool { return t.river == "native" }

// stop sends SIGTERM and waits for the exit.
func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.exited
}

// start runs t against dbURL on a free port and waits until it answers /readyz.
func (o benchOptions) start(ctx context.Context, t target, dbURL string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	var cmd *exec.Cmd
	if t.river == "" {
		bin, err := lookPath("--inboxd", o.binary, "go build -o inboxd ./cmd/inboxd")
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(bin, "serve")
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "INBOX_DEBUG_ADDR="+os.Getenv("INBOXD_BENCH_DEBUG_ADDR"), "INBOX_ADDR="+addr,
			"INBOX_GENERIC_SECRETS="+benchSecret, "INBOX_DEV=true", "INBOX_LOG_LEVEL=warn", fmt.Sprintf("INBOX_WORKERS=%d", o.workers), fmt.Sprintf("INBOX_BATCH_SIZE=%d", o.batch),
			"INBOX_COMMIT_WAIT="+o.commitWait.String())
		cmd.Env = append(cmd.Env, t.env...)
	} else {
		bin, err := lookPath("--river", o.river, "cd bench/river && go build -o ../../river-bench .")
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(bin, "serve", "--database-url", dbURL, "--addr", addr, "--variant", t.river,
			"--max-workers", strconv.Itoa(t.workers), "--secret", benchSecret,
			"--fetch-cooldown", o.riverCooldown.String(), "--fetch-poll-interval", o.riverPoll.String(),
			"--commit-wait", o.riverCommitWait.String())
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", t.name, err)
	}
	s := &server{base: "http://" + addr, pid: cmd.Process.Pid, cmd: cmd, exited: make(chan struct{})}
	go func() { s.waitErr = cmd.Wait(); close(s.exited) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-s.exited: // a server that refused its settings: no point waiting out the deadline
			return nil, fmt.Errorf("%s exited before it was ready (%v); its log is above", t.name, s.waitErr)
		default:
		}
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("%s did not become ready within 30s", t.name)
		}
	}
}

// enqueueBacklog gives River jobs for the events a drain stored (inboxd's queue is
// the table itself).
func (o benchOptions) enqueueBacklog(ctx context.Context, t target, dbURL string) error {
	if t.river == "" {
		return nil
	}
	bin, err := lookPath("--river", o.river, "cd bench/river && go build -o ../../river-bench .")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "enqueue", "--database-url", dbURL, "--variant", t.river)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("river-bench enqueue: %w", err)
	}
	return nil
}

func lookPath(flag, bin, build string) (string, error) {
	if bin == "" {
		return "", fmt.Errorf("%s is not set: build the binary (%s) and pass its path", flag, build)
	}
	path, err := exec.LookPath(bin)
	if errors.Is(err, exec.ErrDot) {
		path, err = bin, nil
	}
	if err != nil {
		return "", fmt.Errorf("%s %s: %w (build it: %s)", flag, bin, err, build)
	}
	return path, nil
}
