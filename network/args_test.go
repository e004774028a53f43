package network

import (
	"errors"
	"testing"
)

func TestParseQueues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		err  bool
	}{
		{nil, 1, false},
		{[]string{"ip=10.0.0.2/24", "-expect", "x"}, 1, false},
		{[]string{"queues=4"}, 4, false},
		{[]string{"queues=2", "queues=3"}, 3, false},
		{[]string{"queues=16"}, 16, false},
		{[]string{"queues=0"}, 0, true},
		{[]string{"queues=17"}, 0, true},
		{[]string{"queues=-1"}, 0, true},
		{[]string{"queues="}, 0, true},
		{[]string{"queues=two"}, 0, true},
		{[]string{"xqueues=9", "queues"}, 1, false},
	} {
		got, err := ParseQueues(tc.args)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseQueues(%q) = %d, %v; want %d, error %v", tc.args, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrQueues) {
			t.Errorf("ParseQueues(%q): %v does not wrap ErrQueues", tc.args, err)
		}
	}
}
