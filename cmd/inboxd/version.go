package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
)

// versionCmd prints which build this binary is, so that an operator rolling
// processes one at a time can tell the old from the new.
func versionCmd(_ context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	fs := cliFlags("version", "Prints this binary's version: the module version Go stamped, the VCS revision it was built from\n(\"modified\" when the tree had changes) and the Go release.", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, "inboxd "+buildVersion())
	return err
}

// version, when set at link time (-ldflags "-X main.version=…", as the Dockerfile
// does from its VERSION argument), names the build where Go could stamp no VCS
// details: an image is built without the repository's .git.
var version string

// buildVersion describes the build from what Go stamped into the binary: the main
// module's version ("(devel)" where no VCS details were stamped: under go run, with
// -buildvcs=false, or without .git), or the version set at link time; the revision and
// its time; and the Go release. The start log line carries it; /metrics has the
// module version as go_build_info.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown: built without module information)"
	}
	v := info.Main.Version
	if version != "" {
		v = version
	}
	var revision, at, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if revision != "" {
		v += fmt.Sprintf(" (revision %.12s of %s%s)", revision, at, modified)
	}
	return v + ", " + info.GoVersion
}
