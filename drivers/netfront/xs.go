package netfront

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// Class is the device class of network devices.
const Class = "vif"

// DefaultMTU is the MTU when the device directory has no "mtu" key.
const DefaultMTU = 1500

// Driver is the device.Driver of class "vif": register it on a
// device.Bus; each connected device's Conn is a *NIC (see FromDevice).
type Driver struct {
	// Config is what every NIC is built on.
	Config Config
}

var _ device.Driver = Driver{}

// Class returns "vif".
func (Driver) Class() string { return Class }

// Connect connects the device f; the Conn is a *NIC.
func (d Driver) Connect(ctx context.Context, f *device.Frontend) (device.Conn, error) {
	n, err := connect(ctx, f, d.Config)
	if n == nil {
		return nil, err // a nil *NIC must not become a non-nil Conn
	}
	return n, err
}

// FromDevice returns the NIC of a device a device.Bus connected with
// Driver, or false.
func FromDevice(d device.Device) (*NIC, bool) {
	b, ok := d.(*device.Bound)
	if !ok {
		return nil, false
	}
	n, ok := b.Conn().(*NIC)
	return n, ok
}

// Connect connects the device f without a device.Bus: it runs the
// handshake (f must be opened, our state Initialising) and returns the
// NIC. On failure it runs the close handshake itself and releases
// everything. Close the NIC after f.Disconnect.
func Connect(ctx context.Context, f *device.Frontend, cfg Config) (*NIC, error) {
	n, err := connect(ctx, f, cfg)
	if err != nil && n != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), device.DefaultTimeout)
		derr := f.Disconnect(dctx, device.DefaultCloseTimeout)
		cancel()
		return nil, errors.Join(err, derr, n.Close())
	}
	return n, err
}

// connect reads the device's MAC and MTU and runs the handshake. It
// returns a NIC with the error if rings were published (release them
// after the close handshake).
func connect(ctx context.Context, f *device.Frontend, cfg Config) (*NIC, error) {
	if cfg.Events == nil || cfg.Grants == nil {
		return nil, fmt.Errorf("netfront %s: Config needs Events and Grants", f.Name())
	}
	n := &NIC{cfg: cfg, name: f.Name(), changed: make(chan struct{}), rxKick: make(chan struct{}, 1)}
	v, err := f.Read(ctx, "mac")
	if err != nil {
		return nil, fmt.Errorf("netfront %s: reading mac: %w", n.name, err)
	}
	if n.mac, err = parseMAC(v); err != nil {
		return nil, fmt.Errorf("netfront %s: %w", n.name, err)
	}
	n.mtu = DefaultMTU
	if v, err := f.Read(ctx, "mtu"); err == nil {
		if n.mtu, err = parseMTU(v); err != nil {
			return nil, fmt.Errorf("netfront %s: %w", n.name, err)
		}
	} else if !errors.Is(err, wire.ErrNotExist) {
		return nil, fmt.Errorf("netfront %s: reading mtu: %w", n.name, err)
	}
	qs, ft, err := n.handshake(ctx, f)
	if err != nil {
		if qs != nil {
			n.st = stClosed
			n.qs = qs
			return n, err
		}
		return nil, err
	}
	n.mu.Lock()
	n.qs, n.ft = qs, ft
	n.startWatchersLocked()
	n.mu.Unlock()
	return n, nil
}

func parseMAC(v string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(strings.TrimSpace(v))
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("%w: mac %q", ErrNegotiation, clip(v))
	}
	return mac, nil
}

func parseMTU(v string) (int, error) {
	mtu, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || mtu < 68 || mtu > MaxFrameSize-14 {
		return 0, fmt.Errorf("%w: mtu %q", ErrNegotiation, clip(v))
	}
	return mtu, nil
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// handshake waits for the backend's InitWait, reads its features, sets
// the queues up, publishes them with our state Connected (as Linux's
// netfront does) and waits for the backend to be Connected. It returns
// the queues with the error if they were published.
func (n *NIC) handshake(ctx context.Context, f *device.Frontend) ([]*queue, Features, error) {
	cfg := n.cfg
	var ft Features
	if _, err := f.WaitBackend(ctx, device.InitWait); err != nil {
		return nil, ft, fmt.Errorf("netfront %s: %w", f.Name(), err)
	}
	var ferr error
	flag := func(name string) bool {
		ok, err := f.Feature(ctx, name)
		if ferr == nil {
			ferr = err
		}
		return ok
	}
	rxCopy := flag("rx-copy")
	ft.SG = flag("sg")
	ft.GSOTCPv4 = flag("gso-tcpv4")
	ft.GSOTCPv6 = flag("gso-tcpv6")
	ft.SplitEventChannels = flag("split-event-channels")
	if ferr != nil {
		return nil, ft, fmt.Errorf("netfront %s: %w", f.Name(), ferr)
	}
	if !rxCopy {
		return nil, ft, fmt.Errorf("netfront %s: %w: the backend does not offer feature-rx-copy", f.Name(), ErrNegotiation)
	}
	if v, err := f.ReadBackend(ctx, "multi-queue-max-queues"); err == nil {
		mq, perr := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
		if perr != nil || mq == 0 {
			return nil, ft, fmt.Errorf("netfront %s: %w: multi-queue-max-queues %q", f.Name(), ErrNegotiation, clip(v))
		}
		ft.MaxQueues = int(mq)
	} else if !errors.Is(err, wire.ErrNotExist) {
		return nil, ft, fmt.Errorf("netfront %s: %w", f.Name(), err)
	}
	ft.Queues = max(1, min(ft.MaxQueues, cfg.MaxQueues))
	var qs []*queue
	release := func() {
		for _, q := range qs {
			q.release()
		}
	}
	for i := range ft.Queues {
		q, err := newQueue(cfg.Events, cfg.Grants, f.BackendID, ft.SplitEventChannels)
		if err != nil {
			release()
			return nil, ft, fmt.Errorf("netfront %s: queue %d: %w", f.Name(), i, err)
		}
		q.index, q.qc = i, n.counters(i)
		qs = append(qs, q)
		if _, err := q.fillRx(); err != nil {
			release()
			return nil, ft, fmt.Errorf("netfront %s: queue %d: %w", f.Name(), i, err)
		}
	}
	var kvs []device.KV
	queueKVs := func(dir string, q *queue) {
		kvs = append(kvs,
			device.Uint(dir+"tx-ring-ref", uint32(q.txShare.Refs[0])),
			device.Uint(dir+"rx-ring-ref", uint32(q.rxShare.Refs[0])))
		if ft.SplitEventChannels {
			kvs = append(kvs, device.Uint(dir+"event-channel-tx", uint32(q.txPort)), device.Uint(dir+"event-channel-rx", uint32(q.rxPort)))
		} else {
			kvs = append(kvs, device.Uint(dir+"event-channel", uint32(q.txPort)))
		}
	}
	n.mu.Lock()
	mqBefore := n.mq
	n.mu.Unlock()
	if ft.Queues == 1 {
		// The single-queue keys in the device directory, as Linux's
		// netfront writes them; multi-queue-num-queues when the backend
		// offers queues (or when queues were published before, so that
		// a backend does not read that stale count).
		queueKVs("", qs[0])
		if ft.MaxQueues > 0 || mqBefore {
			kvs = append(kvs, device.Uint("multi-queue-num-queues", uint(1)))
		}
	} else {
		kvs = append(kvs, device.Uint("multi-queue-num-queues", uint(ft.Queues)))
		for _, q := range qs {
			queueKVs("queue-"+strconv.Itoa(q.index)+"/", q)
		}
	}
	for _, k := range []string{"request-rx-copy", "feature-rx-notify", "feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6"} {
		kvs = append(kvs, device.KV{Key: k, Value: "1"})
	}
	// Like Linux's netfront, go straight to Connected with the rings:
	// Linux's netback connects when the frontend is Connected and ignores
	// Initialised (measured: a frontend waiting in Initialised for the
	// backend's Connected waited forever against dom0's netback).
	if err := f.Publish(ctx, kvs, device.Connected); err != nil {
		return qs, ft, fmt.Errorf("netfront %s: %w", f.Name(), err)
	}
	if ft.Queues > 1 {
		n.mu.Lock()
		n.mq = true
		n.mu.Unlock()
	}
	if _, err := f.WaitBackend(ctx, device.Connected); err != nil {
		return qs, ft, fmt.Errorf("netfront %s: %w", f.Name(), err)
	}
	// The receive requests were put before the backend listened.
	for _, q := range qs {
		if err := q.notify(q.rxPort); err != nil {
			return qs, ft, fmt.Errorf("netfront %s: queue %d: %w", f.Name(), q.index, err)
		}
	}
	return qs, ft, nil
}
