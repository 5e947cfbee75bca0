package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// BuildServer builds bin/e1000e-vfu in repo and returns its path; with
// E1000E_VFU_SERVER set it uses that binary instead (to test a given build).
func BuildServer(ctx context.Context, repo string) (string, error) {
	if bin := os.Getenv("E1000E_VFU_SERVER"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("harness: E1000E_VFU_SERVER: %w", err)
		}
		return bin, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	bin := filepath.Join(repo, "bin", "e1000e-vfu")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/e1000e-vfu")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: building the server: %w\n%s", err, out)
	}
	return bin, nil
}
