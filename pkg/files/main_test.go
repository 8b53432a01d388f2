package files_test

import (
	"testing"

	"github.com/cr-tools/cr/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }
