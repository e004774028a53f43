package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReplace(t *testing.T) {
	tests := []struct {
		name string
		mode os.FileMode
		old  string
		new  string
	}{
		{"executable", 0o755, "old image", "new image, longer"},
		{"read-only for others", 0o640, "a long old content", "short"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if err := os.WriteFile(path, []byte(tc.old), tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tc.mode)
			if err := Replace(path, []byte(tc.new)); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(path)
			fi, _ := os.Stat(path)
			if string(b) != tc.new || fi.Mode().Perm() != tc.mode {
				t.Fatalf("got %q mode %v; want %q mode %v", b, fi.Mode().Perm(), tc.new, tc.mode)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Fatalf("%d files left in the directory, want 1", len(ents))
			}
		})
	}
	if err := Replace(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Fatal("Replace of a missing file succeeded")
	}
}
