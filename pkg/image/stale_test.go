package image

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRemoveStale: RemoveStale removes the temporary directory of a writer
// that is gone (its pid no longer exists) and keeps a live writer's, a
// committed image and directories of other names.
func TestRemoveStale(t *testing.T) {
	parent := t.TempDir()
	live, err := Create(filepath.Join(parent, "img"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Abort()
	dead := filepath.Join(parent, ".old.tmp-999999999-abc")
	other := filepath.Join(parent, ".notours.tmp-x")
	for _, d := range []string{dead, other, filepath.Join(parent, "committed")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dead, "pages-1.img"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveStale(filepath.Join(parent, "img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != dead {
		t.Fatalf("removed %v, want only %s", removed, dead)
	}
	for _, d := range []string{live.TempDir(), other, filepath.Join(parent, "committed")} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
	// The owner file never reaches a committed image.
	if err := live.WriteMeta(&Checkpoint{}); err != nil {
		t.Fatal(err)
	}
	if err := live.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(parent, "img", ownerFile)); !os.IsNotExist(err) {
		t.Errorf("committed image holds %s (%v)", ownerFile, err)
	}
}

// A missing image directory, and a non-empty one to create, match
// os.ErrNotExist and os.ErrExist for callers of the Go API.
func TestImageDirErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Load of a missing directory: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckTarget(dir); !errors.Is(err, os.ErrExist) || strings.Contains(err.Error(), "file already exists") {
		t.Errorf("CheckTarget of a non-empty directory: %v", err)
	}
}
