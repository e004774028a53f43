package cpuid

import "testing"

func TestVendor(t *testing.T) {
	max, b, c, d := Query(0, 0)
	if max == 0 {
		t.Fatal("CPUID leaf 0 reports no leaves")
	}
	var v [12]byte
	for i := 0; i < 4; i++ {
		v[i], v[4+i], v[8+i] = byte(b>>(8*i)), byte(d>>(8*i)), byte(c>>(8*i))
	}
	switch string(v[:]) {
	case "GenuineIntel", "AuthenticAMD", "HygonGenuine":
	default:
		t.Logf("unusual vendor %q", v)
	}
}
