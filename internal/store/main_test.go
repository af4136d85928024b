package store_test

import (
	"os"
	"testing"

	"inboxd/internal/pgtest"
)

// TestMain drops the package's template database after its tests (see pgtest.Main).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
