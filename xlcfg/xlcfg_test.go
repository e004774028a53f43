package xlcfg

import (
	"errors"
	"maps"
	"testing"
)

func str(s string) Value { return Value{Kind: String, Str: s} }
func num(s string) Value { return Value{Kind: Number, Str: s} }
func list(v ...Value) Value {
	if v == nil {
		v = []Value{}
	}
	return Value{Kind: List, List: v}
}

func TestParse(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want map[string]Value
	}{
		{"empty", "", map[string]Value{}},
		{"comments", "# a\n\n  # b\n", map[string]Value{}},
		{"string", `name = "gozen-hello"`, map[string]Value{"name": str("gozen-hello")}},
		{"single quotes", `name='a "b"'`, map[string]Value{"name": str(`a "b"`)}},
		{"escapes", `extra = "a\"b\\c\n"`, map[string]Value{"extra": str("a\"b\\c\n")}},
		{"numbers", "memory = 48\nmaxmem=0x40\nx=017\ny=0", map[string]Value{
			"memory": num("48"), "maxmem": num("0x40"), "x": num("017"), "y": num("0")}},
		{"semicolons", `name="h0"; type="hvm";`, map[string]Value{"name": str("h0"), "type": str("hvm")}},
		{"trailing comment", "memory = 64 # MiB\n", map[string]Value{"memory": num("64")}},
		{"list", "vif = [ 'bridge=xenbr0', \"mac=00:16:3e:00:00:01\", ]", map[string]Value{
			"vif": list(str("bridge=xenbr0"), str("mac=00:16:3e:00:00:01"))}},
		{"multiline list", "disk = [\n  'a', # first\n  'b'\n]\n", map[string]Value{"disk": list(str("a"), str("b"))}},
		{"empty list", "pci = []", map[string]Value{"pci": list()}},
		{"nested", "x = [1, [2, 'c']]", map[string]Value{"x": list(num("1"), list(num("2"), str("c")))}},
		{"dotted key", `vif.default.bridge = "br0"`, map[string]Value{"vif.default.bridge": str("br0")}},
		{"last wins", "memory = 48\nmemory = 64", map[string]Value{"memory": num("64")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.src))
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.Map()
			if !maps.EqualFunc(got, c.want, Value.Equal) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ name, src string }{
		{"no value", "memory ="},
		{"no equals", "memory 48"},
		{"bare word", "type = pvh"},
		{"unterminated string", `name = "abc`},
		{"newline in string", "name = \"a\nb\""},
		{"unknown escape", `name = "a\qb"`},
		{"bad number", "memory = 12ab"},
		{"bad octal", "memory = 09"},
		{"empty hex", "memory = 0x"},
		{"unterminated list", "vif = ['a'"},
		{"missing comma", "vif = ['a' 'b']"},
		{"two values", `name = "a" "b"`},
		{"key starts with digit", `1x = 2`},
		{"deep", "x = [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]"},
		{"plus equals", "x += 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.src))
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("got %v, want ErrSyntax", err)
			}
		})
	}
}

func TestValueStringRoundTrip(t *testing.T) {
	src := "a = \"x\\\"y\\\\z\\n\"\nb = [1, 'c', [0x2]]\n"
	cfg, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var out string
	for _, s := range cfg.Settings {
		out += s.Key + " = " + s.Value.String() + "\n"
	}
	again, err := Parse([]byte(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !maps.EqualFunc(cfg.Map(), again.Map(), Value.Equal) {
		t.Fatalf("round trip changed the values:\n%s", out)
	}
}

func TestParseVif(t *testing.T) {
	cases := []struct {
		spec string
		want map[string]string
		ok   bool
	}{
		{"bridge=xenbr0", map[string]string{"bridge": "xenbr0"}, true},
		{"mac=00:16:3e:5a:00:10, bridge=xenbr0,script=/etc/xen/scripts/vif-gozen",
			map[string]string{"mac": "00:16:3e:5a:00:10", "bridge": "xenbr0", "script": "/etc/xen/scripts/vif-gozen"}, true},
		{"", map[string]string{}, true},
		{"bridge", nil, false},
		{"=x", nil, false},
		{"bridge=a,bridge=b", nil, false},
	}
	for _, c := range cases {
		got, err := ParseVif(c.spec)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrSpec)) {
			t.Errorf("%q: err %v", c.spec, err)
			continue
		}
		if c.ok && !maps.Equal(got, c.want) {
			t.Errorf("%q: got %v, want %v", c.spec, got, c.want)
		}
	}
}

func TestParseDisk(t *testing.T) {
	want := map[string]string{"target": "/dev/vg/guest-volume", "format": "raw", "vdev": "hda", "access": "rw"}
	cases := []struct {
		spec string
		want map[string]string
		ok   bool
	}{
		// the equivalent forms xl-disk-configuration(5) lists
		{"/dev/vg/guest-volume,raw,hda,rw", want, true},
		{"format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume", want, true},
		{"format=raw, vdev=hda, access=rw, /dev/vg/guest-volume", want, true},
		{"format=raw,vdev=xvda,access=rw,script=/etc/xen/scripts/block-gozen,target=/dev/loop0",
			map[string]string{"format": "raw", "vdev": "xvda", "access": "rw", "script": "/etc/xen/scripts/block-gozen", "target": "/dev/loop0"}, true},
		{"vdev=xvda, target=/a,b c ", map[string]string{"vdev": "xvda", "target": "/a,b c"}, true},
		{"/root/image.iso,,hdc,cdrom", map[string]string{"target": "/root/image.iso", "format": "", "vdev": "hdc", "cdrom": "1"}, true},
		{"vdev=xvdb,cdrom,target=/x.iso", map[string]string{"vdev": "xvdb", "cdrom": "1", "target": "/x.iso"}, true},
		{",raw,xvda,rw,target=/x", map[string]string{"target": "/x", "format": "raw", "vdev": "xvda", "access": "rw"}, true},
		{"format=raw, vdev=xvda", nil, false},
		{"/a,raw,xvda,rw,extra", nil, false},
		{"/a,target=/b", nil, false},
		{"vdev=xvda,vdev=xvdb,target=/a", nil, false},
		{"=raw,target=/a", nil, false},
	}
	for _, c := range cases {
		got, err := ParseDisk(c.spec)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrSpec)) {
			t.Errorf("%q: err %v", c.spec, err)
			continue
		}
		if c.ok && !maps.Equal(got, c.want) {
			t.Errorf("%q: got %v, want %v", c.spec, got, c.want)
		}
	}
}
