//go:build !linux

package rig

import "syscall"

// qemuProcAttr: only Linux can tie QEMU's life to its parent.
func qemuProcAttr() *syscall.SysProcAttr { return nil }
