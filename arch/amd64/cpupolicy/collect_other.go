//go:build !amd64

package cpupolicy

// Collect is not supported without amd64's CPUID; it returns
// [ErrUnsupported].
func Collect() (*Policy, error) { return nil, ErrUnsupported }
