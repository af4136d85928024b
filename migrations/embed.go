// Package migrations holds inboxd's schema as tern migrations (NNN_name.sql).
//
// The files are embedded into the binary, so `inboxd migrate` and the start-up of
// `inboxd serve` apply exactly these; tern.conf at the repository root lets the tern CLI
// apply the same files (`tern migrate -c tern.conf -m migrations`). The schema is the
// only contract between the packages: each file's header says which package owns what.
package migrations

import (
	"embed"
	"io/fs"
	"slices"
)

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS

// Names lists the migrations in the order tern applies them: by their number, which
// every file's name starts with, zero-padded.
func Names() []string {
	names, _ := fs.Glob(FS, "*.sql") // the pattern is valid: no error
	slices.Sort(names)
	return names
}
