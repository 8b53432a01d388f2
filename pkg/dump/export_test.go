package dump

import "github.com/cr-tools/cr/pkg/image"

// SetTestHookCheckpoint sets a function that may change the checkpoint just
// before its metadata is written (nil: none).
func SetTestHookCheckpoint(f func(*image.Checkpoint)) { testHookCheckpoint = f }
