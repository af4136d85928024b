// Command inboxd receives messaging webhooks, stores them durably in PostgreSQL and
// turns them into conversations and messages served over HTTP.
//
//	inboxd [serve]   run HTTP + processors (the default)
//	inboxd migrate   apply migrations and exit
//	inboxd sign      sign a payload like a Standard Webhooks sender (prints curl)
//	inboxd events    list events (e.g. --state dead)
//	inboxd stats     print the queue's state
//	inboxd bench     measure this machine (see docs/benchmarks.md)
//
// main only calls run; run takes the OS as arguments so that tests drive the real
// wiring.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return // the usage is printed
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "inboxd: %v\n", err)
		stop()
		os.Exit(1)
	}
}
