package xlcfg

import (
	"errors"
	"testing"
)

// FuzzParse: any input parses or fails with ErrSyntax, and what parses
// prints (Value.String) as a config that parses to the same values.
func FuzzParse(f *testing.F) {
	f.Add([]byte("name = \"gozen-hello\"\ntype = \"pvh\"\nmemory = 48\n"))
	f.Add([]byte("vif = [ 'mac=00:16:3e:5a:00:10,bridge=xenbr0' ]; x=[1,[2]]"))
	f.Add([]byte("extra = \"a\\\"b\" # c\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := Parse(src)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error without ErrSyntax: %v", err)
			}
			return
		}
		var out []byte
		for _, s := range cfg.Settings {
			out = append(out, s.Key+" = "+s.Value.String()+"\n"...)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("printed config does not parse: %v\n%s", err, out)
		}
		if len(again.Settings) != len(cfg.Settings) {
			t.Fatalf("printed config has %d settings, want %d", len(again.Settings), len(cfg.Settings))
		}
		for i := range cfg.Settings {
			if !cfg.Settings[i].Value.Equal(again.Settings[i].Value) {
				t.Fatalf("setting %s changed: %v vs %v", cfg.Settings[i].Key, cfg.Settings[i].Value, again.Settings[i].Value)
			}
		}
	})
}

// FuzzSpecs: vif and disk specs parse or fail with ErrSpec; a parsed disk
// always has a target.
func FuzzSpecs(f *testing.F) {
	f.Add("format=raw, vdev=xvda, access=rw, target=/var/lib/gozen/kvlog.img")
	f.Add("/dev/loop0,raw,xvda,rw")
	f.Add("mac=00:16:3e:5a:00:10,bridge=xenbr0,script=vif-gozen")
	f.Fuzz(func(t *testing.T, spec string) {
		if _, err := ParseVif(spec); err != nil && !errors.Is(err, ErrSpec) {
			t.Fatalf("vif error without ErrSpec: %v", err)
		}
		m, err := ParseDisk(spec)
		if err != nil {
			if !errors.Is(err, ErrSpec) {
				t.Fatalf("disk error without ErrSpec: %v", err)
			}
			return
		}
		if m["target"] == "" {
			t.Fatalf("disk %q parsed without a target", spec)
		}
	})
}
