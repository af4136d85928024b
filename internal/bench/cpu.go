package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"
)

// CPU is the processor time a measurement cost, from /proc: the server under test
// (every thread of its process), the whole Postgres server (postmaster, backends,
// WAL writer, checkpointer, autovacuum: every process of that server), and the load
// generator, this process. Unlike latency, it hardly depends on what else the
// machine is doing, so it compares systems measured at different times.
type CPU struct {
	TargetMs    float64 `json:"target_ms"`
	PostgresMs  float64 `json:"postgres_ms"`
	GeneratorMs float64 `json:"generator_ms"`
	// PerThousand is (target + Postgres) per 1,000 events processed: what the events
	// cost the machine, the generator left out.
	PerThousand float64 `json:"per_1000_events_ms"`
	// WALPerEvent is the WAL the server wrote in the measurement (the difference of
	// pg_current_wal_lsn() at its start and end), per event: what each event cost in
	// writes, without the machine's noise (it counts the whole server's WAL, so
	// nothing else may write meanwhile).
	WALPerEvent float64 `json:"wal_bytes_per_event,omitempty"`
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux
// architecture Go supports (the kernel converts to it for user space whatever its
// own tick rate).
const clockTicks = 100

// CPUMeter reads the CPU time of the target, Postgres and this process.
type CPUMeter struct {
	targets    []int // the target's processes: their times are added
	postmaster int
	start      [3]float64
	pool       *pgxpool.Pool // to read the WAL position
	startLSN   string
}

// NewCPUMeter finds the Postgres server behind pool (the parent of a backend) and
// returns a meter for it and the target's processes (0: none yet, see Follow). It
// fails when the server runs elsewhere (its backends are not in this machine's
// /proc): cost cannot be measured from outside.
func NewCPUMeter(ctx context.Context, pool *pgxpool.Pool, targets ...int) (*CPUMeter, error) {
	var backend int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return nil, fmt.Errorf("find the Postgres server's process: %w", err)
	}
	st, err := readStat(backend)
	if err != nil {
		return nil, fmt.Errorf("the Postgres backend %d is not a process on this machine (%w): CPU cost is measured only against a local server", backend, err)
	}
	m := &CPUMeter{postmaster: st.ppid, pool: pool}
	for _, pid := range targets {
		m.Follow(pid)
	}
	return m, nil
}

// Follow adds pid, a process that may have started after Start, to the target: all
// of its CPU time counts, from its start.
func (m *CPUMeter) Follow(pid int) {
	if pid != 0 {
		m.targets = append(m.targets, pid)
	}
}

// Start begins a measurement.
func (m *CPUMeter) Start() error {
	if err := m.pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&m.startLSN); err != nil {
		return fmt.Errorf("read the WAL position: %w", err)
	}
	var err error
	m.start, err = m.read()
	return err
}

// Stop ends it and reports the time used since Start, per 1,000 of events.
func (m *CPUMeter) Stop(events int) (CPU, error) {
	end, err := m.read()
	if err != nil {
		return CPU{}, err
	}
	c := CPU{TargetMs: end[0] - m.start[0], PostgresMs: end[1] - m.start[1], GeneratorMs: end[2] - m.start[2]}
	var wal float64
	if err := m.pool.QueryRow(context.Background(), "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8", m.startLSN).Scan(&wal); err != nil {
		return CPU{}, fmt.Errorf("read the WAL position: %w", err)
	}
	if events > 0 {
		c.PerThousand = (c.TargetMs + c.PostgresMs) * 1000 / float64(events) // multiplied first: whole milliseconds stay whole
		c.WALPerEvent = wal / float64(events)
	}
	return c, nil
}

// read returns the target's, Postgres' and this process's CPU milliseconds so far.
// Postgres' is the postmaster's own time, plus the time of its children that have
// exited (it waits for them: cutime, cstime), plus that of the children alive now:
// a backend that exits between two reads moves from the third sum to the second
// with its whole total, so nothing is lost or counted twice.
func (m *CPUMeter) read() ([3]float64, error) {
	var out [3]float64
	var target int64 // ticks; none yet: 0
	for _, pid := range m.targets {
		st, err := readStat(pid)
		if err != nil {
			return out, fmt.Errorf("server under test (pid %d): %w", pid, err)
		}
		target += st.own
	}
	pm, err := readStat(m.postmaster)
	if err != nil {
		return out, fmt.Errorf("postmaster (pid %d): %w", m.postmaster, err)
	}
	self, err := readStat(os.Getpid())
	if err != nil {
		return out, err
	}
	pg := pm.own + pm.children
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return out, err
	}
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		if st, err := readStat(pid); err == nil && st.ppid == m.postmaster {
			pg += st.own
		}
	}
	toMs := func(ticks int64) float64 { return float64(ticks) * 1000 / clockTicks }
	return [3]float64{toMs(target), toMs(pg), toMs(self.own)}, nil
}

type procStat struct {
	ppid     int
	own      int64 // utime + stime, in clock ticks
	children int64 // cutime + cstime: children it has waited for
}

// readStat parses /proc/<pid>/stat (proc(5)). The command name, field 2, is in
// parentheses and may itself contain spaces and parentheses: the fields are counted
// from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("malformed /proc stat line")
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("malformed /proc stat line: %d fields after the name", len(f))
	}
	num := func(k int) int64 { n, _ := strconv.ParseInt(string(f[k-3]), 10, 64); return n }
	return procStat{ppid: int(num(4)), own: num(14) + num(15), children: num(16) + num(17)}, nil
}
