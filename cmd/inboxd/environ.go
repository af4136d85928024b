package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/agnivade/levenshtein"
)

// checkEnvironment looks at the names of the environment's INBOX_ variables. One that
// is not a setting but is near one (INBOX_RETENTON, INBOX_GENERIC_SECRET,
// INBOX_DATABASE_URL) is refused: the typo would be ignored and the setting meant
// left at its default, a retention of seven days where 0 was meant to keep
// everything. Another unknown INBOX_ variable is named on stderr and ignored. Values
// are never read, so a secret in a misspelt name is never echoed.
func checkEnvironment(environ []string, stderr io.Writer) error {
	known := settingNames()
	var names []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(strings.ToUpper(name), envPrefix) && !slices.Contains(known, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var errs []error
	for _, name := range names {
		if near := nearestSetting(name, known); near != "" {
			errs = append(errs, fmt.Errorf("%s is not a setting: did you mean %s?", name, near))
			continue
		}
		fmt.Fprintf(stderr, "inboxd: %s is not a setting of inboxd; it is ignored (`inboxd serve --help` lists the settings)\n", name)
	}
	if len(errs) > 0 {
		errs = append(errs, errors.New("`inboxd serve --help` lists the settings"))
		return usageError{errors.Join(errs...)}
	}
	return nil
}

// settingNames are the variables the service reads, each option's.
func settingNames() []string {
	var c config
	var names []string
	for _, o := range options(&c) {
		names = append(names, o.env)
	}
	return names
}

// nearestSetting returns the setting a name was probably meant for: the same in
// other letter case, a setting's name behind the prefix (INBOX_DATABASE_URL), or one
// at most two edits away; "" if none.
func nearestSetting(name string, known []string) string {
	best, bestDistance := "", 3
	for _, k := range known {
		if strings.EqualFold(name, k) || strings.EqualFold(name, envPrefix+k) {
			return k
		}
		if d := levenshtein.ComputeDistance(strings.ToUpper(name), k); d < bestDistance {
			best, bestDistance = k, d
		}
	}
	return best
}
