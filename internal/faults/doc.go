// Package faults is inboxd's fault suite (its tests only): the real binary runs as
// separate processes against a private PostgreSQL cluster that the tests crash, lock
// and restart, under steady signed load from senders that retry every answer but a
// 2xx the way providers do. After each scenario the suite checks that every
// acknowledged event is stored once and processed once (one message each) and that
// nothing is left pending, processing or dead. docs/reliability.md lists the
// scenarios, what each proves, and the counts of the last run.
//
// The binary is built from this module once per run; INBOXD_FAULT_BINARY runs the
// suite against another build instead (an older version, to see what it breaks).
// INBOXD_FAULT_REPORT names a file to which each scenario appends its counts as a
// JSON line. `go test -short ./...` leaves the suite out, for a quick local loop.
package faults
