package main

import (
	"os"
	"path/filepath"
	"testing"

	"inboxd/internal/pgtest"
)

// TestMain drops the package's template database after its tests (see pgtest.Main).
func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if binaryPath != "" { // built by inboxdBinary for the tests that run it
		os.RemoveAll(filepath.Dir(binaryPath))
	}
	os.Exit(code)
}
