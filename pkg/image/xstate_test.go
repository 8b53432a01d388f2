package image_test

import (
	"encoding/binary"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cr-tools/cr/pkg/image"
	"github.com/stretchr/testify/require"
)

// TestXStateRecord: a thread's per-component XSAVE state survives a round
// trip; a format 1.0 thread (raw xsave area) still loads; malformed
// xstate records are refused by Load, naming the core file.
func TestXStateRecord(t *testing.T) {
	dir, want, _ := newImage(t)
	got, err := loadAll(dir)
	require.NoError(t, err)
	require.Equal(t, want.Processes[0].Threads[0].XState, got.Processes[0].Threads[0].XState)
	require.Equal(t, want.Inventory.CPU, got.Inventory.CPU)

	old := make([]byte, 832)
	binary.LittleEndian.PutUint64(old[464:], 7)
	r := rand.New(rand.NewChaCha8([32]byte{7}))
	x := func() *image.XState { return testXState(r) }
	for name, c := range map[string]struct {
		th func(*image.Thread)
		ok bool
	}{
		"format 1.0 xsave area":    {func(th *image.Thread) { th.XState, th.XSave = nil, old }, true},
		"neither":                  {func(th *image.Thread) { th.XState = nil }, false},
		"both":                     {func(th *image.Thread) { th.XSave = old }, false},
		"short legacy region":      {func(th *image.Thread) { th.XState.Legacy = th.XState.Legacy[:100] }, false},
		"legacy component":         {func(th *image.Thread) { th.XState.Components[0].Bit = 1 }, false},
		"component not in use":     {func(th *image.Thread) { th.XState.XStateBV = 3 }, false},
		"in use without bytes":     {func(th *image.Thread) { th.XState.XStateBV |= 1 << 5 }, false},
		"empty component":          {func(th *image.Thread) { th.XState.Components[0].Data = nil }, false},
		"component twice":          {func(th *image.Thread) { th.XState.Components = append(th.XState.Components, th.XState.Components[0]) }, false},
		"x87 only, nothing else":   {func(th *image.Thread) { th.XState.XStateBV, th.XState.Components = 1, nil }, true},
		"oversized component bits": {func(th *image.Thread) { th.XState.Components[0].Bit = 64 }, false},
	} {
		t.Run(name, func(t *testing.T) {
			ck := testCheckpoint()
			for i := range ck.Processes[0].Threads {
				ck.Processes[0].Threads[i].XState = x()
			}
			c.th(&ck.Processes[0].Threads[1])
			d := filepath.Join(t.TempDir(), "img")
			writeImage(t, d, ck)
			_, err := loadAll(d)
			if c.ok {
				require.NoError(t, err)
				return
			}
			requireFormatError(t, err, image.CoreFile(testPid))
		})
	}
}
