//go:build linux

package main

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// tunPath is the kernel's TUN/TAP clone device.
const tunPath = "/dev/net/tun"

// openTap creates (or attaches to) the TAP device name with IFF_TAP |
// IFF_NO_PI: each read returns one Ethernet frame, each write sends one.
// The descriptor is non-blocking in the runtime's poller, so Close
// interrupts a Read. It returns the device's name as the kernel set it.
func openTap(name string) (*os.File, string, error) {
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", fmt.Errorf("gozen-backend: opening %s: %w", tunPath, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("gozen-backend: TUNSETIFF %q (IFF_TAP|IFF_NO_PI): %w", name, err)
	}
	got := ifr.Name()
	return os.NewFile(uintptr(fd), tunPath+":"+got), got, nil
}

// ifreqCall runs an interface ioctl on a throw-away datagram socket.
func ifreqCall(req uint, ifr *unix.Ifreq) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	return unix.IoctlIfreq(s, req, ifr)
}

// linkUp sets the interface name up (SIOCSIFFLAGS with IFF_UP), as
// "ip link set dev NAME up" does: a TAP device that is down refuses
// writes.
func linkUp(name string) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("gozen-backend: %q: %w", name, err)
	}
	if err := ifreqCall(unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("gozen-backend: SIOCGIFFLAGS %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := ifreqCall(unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("gozen-backend: setting %s up: %w", name, err)
	}
	return nil
}

// joinBridge adds the interface name to bridge br (SIOCBRADDIF, as
// brctl addif does; "ip link set dev NAME master BR" is the netlink
// equivalent).
func joinBridge(name, br string) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("gozen-backend: %w", err)
	}
	ifr, err := unix.NewIfreq(br)
	if err != nil {
		return fmt.Errorf("gozen-backend: bridge %q: %w", br, err)
	}
	ifr.SetUint32(uint32(ifi.Index))
	if err := ifreqCall(unix.SIOCBRADDIF, ifr); err != nil {
		return fmt.Errorf("gozen-backend: adding %s to bridge %s (SIOCBRADDIF): %w", name, br, err)
	}
	return nil
}
