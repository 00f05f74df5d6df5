// Package proctest builds the asyncgate binary for tests that run it as a
// child process (to kill it with SIGKILL, or to run several workers).
package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build compiles cmd/asyncgate into a temporary directory. It returns the
// binary's path and a func that removes it. Call it from TestMain.
func Build() (string, func(), error) {
	dir, err := os.MkdirTemp("", "asyncgate-bin-")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "asyncgate")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/asyncgate/asyncgate/cmd/asyncgate").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build asyncgate: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}
