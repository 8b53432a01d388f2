package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// PythonScript returns an executable copy of testdata/<script> whose "#!"
// line names the real python3 interpreter, so that it can be run with
// Start(t, path) (Start passes WORKDIR as the first argument, which rules
// out `python3 script WORKDIR`). Skips the test if python3 is missing.
func PythonScript(t testing.TB, script string) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	// Resolve wrappers (pyenv shims, venvs) to the interpreter binary.
	outb, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		t.Skipf("python3 does not run: %v", err)
	}
	if exe := strings.TrimSpace(string(outb)); filepath.IsAbs(exe) {
		py = exe
	}
	src, err := os.ReadFile(filepath.Join(TestdataDir(t), script))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(src, []byte("#!")) {
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			src = src[i+1:]
		}
	}
	path := filepath.Join(t.TempDir(), script)
	if err := os.WriteFile(path, append([]byte("#!"+py+"\n"), src...), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}
