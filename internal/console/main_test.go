package console

import (
	"os"
	"testing"

	"inboxd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
