// Command inboxd receives messaging webhooks, stores them durably in PostgreSQL and
// turns them into conversations and messages served over HTTP.
//
//	inboxd [serve]   run the webhook receiver, processors and API (the default)
//	inboxd migrate   create the database if missing and apply migrations
//	inboxd check     check what serve would start with, starting nothing
//	inboxd tail      print each event as it arrives
//	inboxd stats     show the queue (--watch to follow it)
//	inboxd conversations  list conversations (--contact finds a contact's); show ID prints one with its messages
//	inboxd events    list events; events show ID shows one; events replay requeues them
//	inboxd erase     erase everything held about a contact (--dry-run counts it)
//	inboxd export    print everything held about a contact as JSON
//	inboxd subscriptions  manage outbound webhooks (create, deliveries, replay, …)
//	inboxd redact    check the redaction policy on a payload, or apply it to stored ones
//	inboxd sign      print a signed curl command to try an endpoint
//	inboxd version   print the build: module version, VCS revision, Go release
//	inboxd help      list the commands
//
// main only checks the environment's variable names (which run's getenv cannot
// list) and calls run; run takes the OS as arguments so that tests drive the real
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
	err := checkEnvironment(os.Environ(), os.Stderr)
	if err == nil {
		err = run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // the usage is printed
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "inboxd: %v\n", err)
		stop()
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
